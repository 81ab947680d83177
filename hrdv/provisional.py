"""The window still open: provisional KPI marts, a few seconds behind the CRM.

Two halves, neither of which waits for the other:
- `Loader` runs inside the ingestor, the one process holding the embedded chDB. Every
  HRDV_PROVISIONAL_LOAD_S seconds (default 5) it reads, in its own session and between two
  batches, each fact entity's changes buffered since its previous read (the latest version per key,
  by the staging window query), and a writer thread upserts them into provisional.<entity> with
  staging's LSN-guarded upsert, then drops what staging has since caught up with. Ingestion pauses
  only for the read: a few thousand rows, tens of milliseconds.
- `refresh` computes the catalog's window marts of every window not yet published (the open one,
  and the one just closed until its final run publishes it) with the final marts' own SQL, from
  staging overlaid with provisional.<entity>, into mart.kpi_<family>_window_provisional. The
  Dagster sensor `provisional_kpi_sensor` calls it; the final publication (hrdv.marts.publish)
  deletes a window's provisional rows in its own transaction, under the same advisory lock, so a
  reader of mart.kpi_<family>_window_live sees each window once: final, or provisional and flagged.

Reference data (customers, employees, queues, ...) is read from staging as the final marts read it:
a provisional value uses the references as of the last staged window.

`stages` measures how fresh each stage of the pipeline is, for `hrdv status`, the pipeline-health
asset and the freshness checks.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from psycopg import sql

from hrdv import catalog_sql as cs
from hrdv import entity_sql
from hrdv.catalog import Catalog
from hrdv.entities import HEARTBEAT_TABLE, Entity
from hrdv.settings import Settings

log = logging.getLogger("hrdv.provisional")

ADVISORY_LOCK = 0x48524456_0001  # 'HRDV' 1: a provisional refresh vs. the final publication
REREAD_S = 2.0  # commit times of concurrent transactions may be out of commit order by a little
ORIGIN = datetime(2000, 1, 1, tzinfo=timezone.utc)


def _seconds_env(name: str, default: float) -> float:
    raw = os.environ.get(name, str(default))
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{name} must be 0 (off) or more seconds, got {raw!r}")
    return value


def load_interval_s() -> float:
    """Seconds between two copies of the buffer into provisional (HRDV_PROVISIONAL_LOAD_S, 0: off)."""
    return _seconds_env("HRDV_PROVISIONAL_LOAD_S", 5.0)


def utc(moment: datetime) -> datetime:
    """A buffer time (UTC without a zone) or any aware time, as aware UTC."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def window_start(moment: datetime, window: timedelta) -> datetime:
    return ORIGIN + ((moment - ORIGIN) // window) * window


# --- the loader (in the ingestor) ------------------------------------------------------------------
@dataclass
class Read:
    """One entity's changes since its watermark, as the window query returns them."""
    entity: Entity
    columns: tuple[str, ...]
    rows: list[tuple]
    newest: datetime | None


@dataclass
class LoadStats:
    loads: int = 0
    rows: int = 0
    failures: int = 0
    read_s: list[float] = field(default_factory=list)


class Loader:
    """Copies the buffer's newest changes of the fact entities into provisional.<entity>."""

    def __init__(self, settings: Settings, entities: Sequence[Entity], unavailable: str,
                 interval_s: float | None = None) -> None:
        self.dsn = settings.hrdv_dsn
        self.window = timedelta(minutes=settings.window_minutes)
        self.entities = list(entities)
        self.unavailable = unavailable
        self.interval = load_interval_s() if interval_s is None else interval_s
        self.stats = LoadStats()
        self._watermarks: dict[str, datetime] = {}
        self._lock = threading.Lock()
        self._work: queue.Queue = queue.Queue(maxsize=1)
        self._ready = threading.Event()  # the watermarks are known
        self._last = 0.0
        self._reported = time.monotonic()
        self._dead_counted = 0.0
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.interval > 0 and bool(self.entities)

    def start(self) -> None:
        if not self.enabled:
            log.info("provisional copy off (HRDV_PROVISIONAL_LOAD_S=0)")
            return
        self._thread = threading.Thread(target=self._write_loop, name="provisional-writer", daemon=True)
        self._thread.start()
        log.info("copying the buffer's newest changes of %s into provisional every %.0f s",
                 ", ".join(e.name for e in self.entities), self.interval)

    def stop(self) -> None:
        if self._thread is not None:
            self._work.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def maybe_load(self, client: Any) -> bool:
        """Read what the buffer gained since the last copy (in the caller's chDB session) and hand
        it to the writer; nothing when not due or the writer is still busy with the last one."""
        if (self._thread is None or not self._ready.is_set() or self._work.full()
                or time.monotonic() - self._last < self.interval):
            return False
        self._last = time.monotonic()
        began = time.perf_counter()
        with self._lock:
            marks = dict(self._watermarks)
        try:
            reads = [self._read(client, entity, marks[entity.name]) for entity in self.entities]
            heartbeat = client.query("SELECT max(committed_ms) FROM hrdv.source_heartbeats").result_rows[0][0]
            dead = self._count_dead_letters(client)
        except Exception as error:  # noqa: BLE001 - the copy is best effort: ingestion goes on
            self.stats.failures += 1
            log.warning("reading the buffer for the provisional copy failed: %s", error)
            return False
        self.stats.read_s.append(time.perf_counter() - began)
        self._report()
        newest_heartbeat = datetime.fromtimestamp(heartbeat / 1000, tz=timezone.utc) if heartbeat else None
        self._work.put((reads, newest_heartbeat, dead))
        return True

    def _count_dead_letters(self, client: Any, every_s: float = 60.0) -> list[tuple] | None:
        """Dead letters per topic and reason, once a minute (None between): for the engineers'
        dashboard, which reads PostgreSQL only (mart.dead_letter_counts)."""
        if time.monotonic() - self._dead_counted < every_s:
            return None
        self._dead_counted = time.monotonic()
        return client.query("SELECT topic, reason, count() AS messages, max(received_at) AS newest "
                            "FROM hrdv.dead_letters FINAL GROUP BY topic, reason").result_rows

    def _report(self, every_s: float = 60.0) -> None:
        """A line a minute: what the copy did and how long ingestion paused for its reads."""
        if time.monotonic() - self._reported < every_s:
            return
        reads = sorted(self.stats.read_s)
        if reads:
            log.info("provisional copy: %d loads, %d rows, %d failures; buffer reads p50 %.0f ms, max %.0f ms "
                     "(n=%d)", self.stats.loads, self.stats.rows, self.stats.failures,
                     1000 * reads[len(reads) // 2], 1000 * reads[-1], len(reads))
        self.stats.read_s.clear()
        self._reported = time.monotonic()

    def _read(self, client: Any, entity: Entity, since: datetime) -> Read:
        start = (since - timedelta(seconds=REREAD_S)).strftime("%Y-%m-%d %H:%M:%S.%f")
        result = client.query(entity_sql.window_query(entity), parameters={
            "window_start": start, "window_end": "2200-01-01 00:00:00", "unavailable": self.unavailable})
        columns = tuple(result.column_names) or entity_sql.staged_columns(entity)
        rows = result.result_rows
        at = columns.index("committed_at")
        newest = max((utc(row[at]) for row in rows), default=None)
        return Read(entity, columns, rows, newest)

    def _initial_watermarks(self) -> dict[str, datetime]:
        """Where each entity's copy starts: the newest change an earlier ingestor copied
        (provisional.loads), but no earlier than the window before the open one (older changes are
        the final runs' business)."""
        floor = window_start(datetime.now(timezone.utc), self.window) - self.window
        marks = {}
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for entity in self.entities:
                newest = conn.execute(sql.SQL("SELECT max(newest_commit) FROM provisional.loads WHERE entity = %s"),
                                      [entity.name]).fetchone()[0]
                marks[entity.name] = max(floor, newest) if newest else floor
        return marks

    def _start_watermarks(self) -> bool:
        """Read the watermarks, retrying while the warehouse is unreachable; False if stopped."""
        warned = False
        while True:
            try:
                self._watermarks = self._initial_watermarks()
                self._ready.set()
                return True
            except psycopg.Error as error:
                if not warned:
                    log.warning("provisional copy waits for the warehouse: %s", error)
                    warned = True
            try:
                if self._work.get(timeout=max(self.interval, 1.0)) is None:
                    return False
            except queue.Empty:
                pass

    def _write_loop(self) -> None:
        if not self._start_watermarks():
            return
        while True:
            work = self._work.get()
            if work is None:
                return
            reads, heartbeat, dead = work
            try:
                write(self.dsn, reads, heartbeat, self.unavailable, dead)
            except Exception as error:  # noqa: BLE001 - retried with the next read (the watermark stays)
                self.stats.failures += 1
                log.warning("writing the provisional copy failed: %s", error)
                continue
            self.stats.loads += 1
            self.stats.rows += sum(len(read.rows) for read in reads)
            with self._lock:
                for read in reads:
                    if read.newest is not None:
                        self._watermarks[read.entity.name] = max(self._watermarks[read.entity.name], read.newest)


def write(dsn: str, reads: Sequence[Read], heartbeat: datetime | None, unavailable: str,
          dead_letters: list[tuple] | None = None) -> None:
    """Upsert each read into provisional.<entity> (LSN-guarded), drop the rows staging has caught up
    with, and record how far the buffer was copied (and the dead letters, when counted); one
    transaction."""
    # Client-side binding: the upsert is two statements with parameters.
    with psycopg.connect(dsn, application_name="hrdv-ingest-provisional",
                         cursor_factory=psycopg.ClientCursor) as conn, conn.cursor() as cur:
        cur.execute("SET LOCAL TIME ZONE 'UTC'")  # the buffer's times are UTC without a zone
        for read in reads:
            entity = read.entity
            if read.rows:
                temp = sql.Identifier(entity_sql.temp_table(entity))
                cur.execute(sql.SQL("CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP").format(
                    temp, sql.Identifier("provisional", entity.name)))
                copy = sql.SQL("COPY {} ({}) FROM STDIN").format(
                    temp, sql.SQL(", ").join(map(sql.Identifier, read.columns)))
                with cur.copy(copy) as writer:
                    for row in read.rows:
                        writer.write_row(row)
                cur.execute(entity_sql.upsert_sql(entity, "provisional"), {"unavailable": unavailable})
                cur.execute(sql.SQL("DROP TABLE {}").format(temp))
            cur.execute(sql.SQL("DELETE FROM provisional.{t} AS p USING staging.{t} AS s "
                                "WHERE s.{k} = p.{k} AND s.lsn >= p.lsn").format(
                t=sql.Identifier(entity.name), k=sql.Identifier(entity.key)))
            _record(cur, entity.name, read.newest, len(read.rows))
        _record(cur, HEARTBEAT_TABLE, heartbeat, 0)
        if dead_letters is not None:
            cur.execute("DELETE FROM mart.dead_letter_counts")
            cur.executemany("INSERT INTO mart.dead_letter_counts (topic, reason, messages, newest, counted_at) "
                            "VALUES (%s, %s, %s, %s, now())", [(t, r, n, utc(at)) for t, r, n, at in dead_letters])


def _record(cur: psycopg.Cursor, name: str, newest: datetime | None, rows: int) -> None:
    cur.execute("INSERT INTO provisional.loads AS l (entity, newest_commit, rows, loaded_at) "
                "VALUES (%s, %s, %s, now()) ON CONFLICT (entity) DO UPDATE SET "
                "newest_commit = greatest(l.newest_commit, EXCLUDED.newest_commit), "
                "rows = l.rows + EXCLUDED.rows, loaded_at = now()", [name, newest, rows])


# --- the refresh (the Dagster sensor) ---------------------------------------------------------------
@dataclass(frozen=True)
class Refresh:
    """One provisional refresh: its windows, rows per window, and the newest CRM commit it reflects."""
    windows: list[datetime]
    rows: dict[datetime, int]
    reflects: datetime | None
    seconds: float
    refreshed_at: datetime

    def staleness_s(self, now: datetime | None = None) -> float | None:
        """Age of the newest CRM commit the refresh reflects (the open window's promise: <= 30 s)."""
        if self.reflects is None:
            return None
        return ((now or datetime.now(timezone.utc)) - self.reflects).total_seconds()


def refresh(conn: psycopg.Connection, catalog: Catalog, window: timedelta, now: datetime | None = None,
            first: datetime | None = None) -> Refresh | None:
    """Recompute every family's window marts of the windows not yet published (the open one, and
    the one before until its final run publishes it; none before `first`) into the provisional
    tables, and commit. None if a final publication holds the lock (it replaces these rows)."""
    from hrdv.marts import SESSION  # marts imports this module for the lock

    now = now or datetime.now(timezone.utc)
    began = time.perf_counter()
    open_start = window_start(now, window)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SET LOCAL TIME ZONE 'UTC'")
        for setting, value in SESSION.items():
            cur.execute(f"SET LOCAL {setting} = {value}")
        if not cur.execute("SELECT pg_try_advisory_xact_lock(%s)", [ADVISORY_LOCK]).fetchone()[0]:
            return None
        candidates = [s for s in (open_start - window, open_start) if first is None or s >= first]
        published = {utc(row[0]) for row in cur.execute(
            "SELECT window_start FROM mart.kpi_publications WHERE window_start = ANY (%s)", [candidates])}
        starts = [s for s in candidates if s not in published]
        params = {"starts": starts, "ends": [s + window for s in starts]}
        row = cur.execute("SELECT newest_commit FROM provisional.loads WHERE entity = %s",
                          [HEARTBEAT_TABLE]).fetchone()
        reflects = utc(row[0]) if row and row[0] else None
        rows: dict[datetime, int] = {s: 0 for s in starts}
        relations = cs.provisional_relations(catalog)
        for family in catalog.families.values():
            target = cs.provisional_table(family)
            for statement in cs.statements(cs.compute_sql(catalog, family, "window", target=target,
                                                          relations=relations)):
                cur.execute(statement, params)
            for start, count in cur.execute(f"SELECT period_start, count(*) FROM {target} "
                                            "WHERE period_start = ANY (%(starts)s) GROUP BY 1", params):
                rows[utc(start)] += count
            # Windows no final run will replace (before the partitions, or long abandoned).
            cur.execute(f"DELETE FROM {target} WHERE period_start < %s", [open_start - timedelta(days=1)])
        seconds = time.perf_counter() - began
        refreshed_at = cur.execute("SELECT clock_timestamp()").fetchone()[0]
        for start in starts:
            cur.execute(
                "INSERT INTO mart.kpi_provisional_refreshes AS r (window_start, window_end, refreshed_at, "
                "reflects, rows, seconds) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (window_start) DO UPDATE "
                "SET refreshed_at = EXCLUDED.refreshed_at, reflects = EXCLUDED.reflects, rows = EXCLUDED.rows, "
                "seconds = EXCLUDED.seconds", [start, start + window, refreshed_at, reflects, rows[start], seconds])
        cur.execute("DELETE FROM mart.kpi_provisional_refreshes WHERE window_start < %s",
                    [open_start - timedelta(days=1)])
    return Refresh(starts, rows, reflects, round(seconds, 3), utc(refreshed_at))


def replace_with_final(cur: psycopg.Cursor, catalog: Catalog, starts: Sequence[datetime]) -> None:
    """In the final publication's transaction: drop the provisional rows of the windows it
    publishes, after any refresh in flight (the lock), so no reader ever sees both."""
    cur.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK])
    for family in catalog.families.values():
        cur.execute(f"DELETE FROM {cs.provisional_table(family)} WHERE period_start = ANY (%s::timestamptz[])",
                    [list(starts)])
    cur.execute("DELETE FROM mart.kpi_provisional_refreshes WHERE window_start = ANY (%s::timestamptz[])",
                [list(starts)])


# --- freshness per stage ------------------------------------------------------------------------------
STAGES = {  # in pipeline order; the first stage past its promise is the one to look at
    "capture": "CRM -> Debezium (newest heartbeat Debezium wrote into the CRM)",
    "kafka": "Kafka (newest Debezium heartbeat in its topic)",
    "buffer": "ClickHouse buffer (newest heartbeat buffered, as of the ingestor's last copy)",
    "staging": "staging (end of the newest window staged)",
    "final": "final marts (end of the newest window published)",
    "provisional": "provisional marts (newest CRM commit the last refresh reflects)",
}


@dataclass(frozen=True)
class Stage:
    name: str
    newest: datetime | None  # the newest CRM commit (or window end) the stage holds
    at: datetime | None  # when the stage last moved (published, refreshed, copied), if it says
    now: datetime

    @property
    def age_s(self) -> float | None:
        return None if self.newest is None else round((self.now - self.newest).total_seconds(), 1)

    def describe(self) -> str:
        if self.newest is None:
            return f"{self.name}: nothing yet"
        when = f", at {self.at:%H:%M:%S} UTC" if self.at else ""
        return f"{self.name}: {self.newest:%H:%M:%S} UTC, {self.age_s:.0f} s ago{when}"


def stages(hrdv: psycopg.Connection, crm_heartbeat: datetime | None, kafka_heartbeat: datetime | None,
           now: datetime | None = None) -> dict[str, Stage]:
    """How fresh each stage is: the newest CRM commit (or window end) it holds, in pipeline order."""
    now = now or datetime.now(timezone.utc)

    def one(query: str, *params: object) -> tuple:
        row = hrdv.execute(query, params).fetchone()
        return tuple(utc(v) if isinstance(v, datetime) else v for v in row) if row else (None, None)

    buffer = one("SELECT newest_commit, loaded_at FROM provisional.loads WHERE entity = %s", HEARTBEAT_TABLE)
    staging = one("SELECT window_end, staged_at FROM staging.staged_windows ORDER BY window_end DESC LIMIT 1")
    final = one("SELECT window_end, published_at FROM mart.kpi_publications ORDER BY window_start DESC LIMIT 1")
    provisional = one("SELECT reflects, refreshed_at FROM mart.kpi_provisional_refreshes "
                      "ORDER BY refreshed_at DESC LIMIT 1")
    values = {"capture": (crm_heartbeat, None), "kafka": (kafka_heartbeat, None), "buffer": buffer,
              "staging": staging, "final": final, "provisional": provisional}
    return {name: Stage(name, utc(newest) if newest else None, at, now) for name, (newest, at) in values.items()}


def record(hrdv: psycopg.Connection, found: dict[str, Stage], now: datetime, keep: timedelta = timedelta(days=2)) -> None:
    """Append each stage's freshness to mart.pipeline_freshness (the engineers' dashboard), keeping `keep`."""
    with hrdv.transaction():
        hrdv.cursor().executemany(
            "INSERT INTO mart.pipeline_freshness (observed_at, stage, newest, age_s) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING", [(now, s.name, s.newest, s.age_s) for s in found.values()])
        hrdv.execute("DELETE FROM mart.pipeline_freshness WHERE observed_at < %s", [now - keep])


def first_behind(found: dict[str, Stage], limit_s: float, names: Sequence[str]) -> Stage | None:
    """The first of `names` (in pipeline order) whose newest is older than limit_s, or unknown."""
    for name in names:
        stage = found[name]
        if stage.age_s is None or stage.age_s > limit_s:
            return stage
    return None

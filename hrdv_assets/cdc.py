"""The part every CDC entity shares: Kafka topic -> ClickHouse buffer -> PostgreSQL staging.

Each entity of hrdv/entities.py gets two upstream specs (the topic Debezium writes and the buffer
ClickHouse fills), a partitioned staging asset and, for reference entities with history, a
validity-history asset. All staging assets are one multi-asset, `stage_crm`: a run of a window
(or a range of windows) stages every selected entity with one ClickHouse session and one
PostgreSQL transaction, because chDB is one process at a time and the cost of a window must not
grow with the number of entities. Each entity and each window still gets its own figures and
check results.
"""

import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property

from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetObservation,
    AssetSpec,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
    multi_asset,
)
import psycopg
from psycopg import sql

from hrdv import catalog as kpi_catalog
from hrdv import catalog_sql, drift, entity_sql
from hrdv.clickhouse import render_sql
from hrdv.entities import ENTITIES, Entity
from hrdv.settings import load
from hrdv.sql import sql_exists, sql_text
from hrdv.stack.connect import unavailable_placeholder
from hrdv_assets.windows import PASSING_FAILURES, requested_keys, require_complete, window_text
from partitions import WINDOW, WINDOW_MINUTES, WINDOW_ORIGIN, key_of, reporting_windows, window_of
from resources.clickhouse import ClickHouseResource
from resources.kafka import KafkaResource
from resources.postgres import PostgresResource

OWNERS = ["team:hrdv-data-engineering"]
UNAVAILABLE = unavailable_placeholder()  # Debezium's stand-in for an unchanged TOASTed value
MAX_LISTED_WINDOWS = 2000  # a week of 15-minute windows, and then some
# Pools (dagster.yaml: every pool has one slot). Whatever launched the run, one step at a time
# opens the embedded ClickHouse (chDB: one process per data path) ...
CLICKHOUSE_POOL = "hrdv_clickhouse"
STAGING_ASSET = "stage_crm"
BOOKKEEPING = (
    TableColumn("is_deleted", "boolean", "deleted in the CRM; the row keeps its last values"),
    TableColumn("lsn", "numeric", "source LSN of the staged version: only a higher one replaces it"),
    TableColumn("committed_at", "timestamptz", "CRM commit time of the staged version"),
)


@dataclass(frozen=True)
class StagedEntity:
    """An entity as Dagster sees it: its asset keys, schema and queries (from its description)."""

    entity: Entity
    # Status values the marts and reports know (default: the description's); others warn.
    known: tuple[str, ...] | None = None

    @property
    def name(self) -> str:
        return self.entity.name

    @property
    def known_statuses(self) -> tuple[str, ...]:
        return self.entity.statuses if self.known is None else self.known

    @property
    def changed_at(self) -> str | None:
        return self.entity.changed_at

    @property
    def columns(self) -> tuple[TableColumn, ...]:
        own = tuple(TableColumn(c.name, c.staging_type, c.description) for c in self.entity.staged)
        return (*own, *BOOKKEEPING)

    @property
    def column_names(self) -> tuple[str, ...]:
        return entity_sql.staged_columns(self.entity)

    @property
    def description(self) -> str:
        history = (f" Its validity history is staging.{self.name}_history ({', '.join(self.entity.history)})."
                   if self.entity.keeps_history else "")
        return (f"{self.entity.title}. Operational store staging.{self.name}: the latest state of every "
                f"row of CRM table {self.entity.table}, by {self.entity.key}. A partition upserts the rows "
                f"whose changes were committed in the CRM during its window (latest version per key by "
                f"LSN; deletes flagged).{history}")

    @property
    def topic(self) -> str:
        return load().topic(self.name)

    @property
    def topic_key(self) -> AssetKey:
        return AssetKey(["kafka", f"crm_{self.name}_topic"])

    @property
    def buffer_key(self) -> AssetKey:
        return AssetKey(["clickhouse", f"{self.name}_buffer"])

    @property
    def buffer_table(self) -> str:
        return f"hrdv.{self.name}_buffer"

    @property
    def staging_key(self) -> AssetKey:
        return AssetKey(["staging", f"stg_{self.name}"])

    @property
    def history_key(self) -> AssetKey | None:
        return AssetKey(["staging", f"stg_{self.name}_history"]) if self.entity.keeps_history else None

    @property
    def temp_table(self) -> str:
        return entity_sql.temp_table(self.entity)

    @cached_property
    def late_windows(self) -> str | None:
        """The earlier windows a batch of changes alters: the entity's own rule where it has one
        (sql/postgres/staging_<name>_late_windows.sql), else the generated one."""
        own = f"postgres/staging_{self.name}_late_windows.sql"
        return sql_text(own) if sql_exists(own) else entity_sql.late_windows_sql(self.entity)

    @cached_property
    def kpi_late_windows(self) -> str | None:
        """The earlier windows a batch of changes alters in the KPI catalog's marts (None when no
        catalog family reads this entity's rows)."""
        return catalog_sql.late_windows_sql(kpi_catalog.default(), self.entity)


STAGED: dict[str, StagedEntity] = {entity.name: StagedEntity(entity) for entity in ENTITIES}


def utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc)


def ch_time(moment: datetime) -> str:
    """A ClickHouse DateTime64 literal in UTC (the buffer's time zone)."""
    return utc(moment).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _topic_spec(staged: StagedEntity) -> AssetSpec:
    return AssetSpec(
        key=staged.topic_key,
        description=(f"Debezium change events of CRM table {staged.entity.table} (topic "
                     f"{staged.topic}). Observed by the lag sensor: end offsets and the newest "
                     "Debezium heartbeat."),
        group_name=staged.name,
        owners=OWNERS,
        kinds={"kafka"},
        metadata={"topic": staged.topic},
    )


def _buffer_spec(staged: StagedEntity) -> AssetSpec:
    return AssetSpec(
        key=staged.buffer_key,
        deps=[staged.topic_key],
        description=(
            f"ClickHouse ReplacingMergeTree {staged.buffer_table}: the parsed change events, "
            "one row per change, versioned by source LSN, deletes kept as flagged rows. Filled "
            "continuously by the Kafka engine (production) or the embedded ingestor (chDB). "
            "Observed by the lag sensor (consumer lag, how far it is complete) and by each "
            "staging run (rows, newest commit)."
        ),
        group_name=staged.name,
        owners=OWNERS,
        kinds={"clickhouse"},
        metadata={"dagster/table_name": staged.buffer_table},
    )


def _postgres_spec(staged: StagedEntity, key: AssetKey, table: str, description: str,
                   columns: list[TableColumn]) -> AssetSpec:
    """A windowed staging table of `staged` in PostgreSQL, fed by its buffer."""
    return AssetSpec(
        key=key,
        deps=[staged.buffer_key],
        partitions_def=reporting_windows,
        group_name=staged.name,
        owners=OWNERS,
        kinds={"postgres"},
        description=description,
        metadata={"dagster/table_name": f"hrdv.staging.{table}",
                  "dagster/column_schema": TableSchema(columns=columns)},
    )


def _staging_spec(staged: StagedEntity) -> AssetSpec:
    return _postgres_spec(staged, staged.staging_key, staged.name, staged.description, list(staged.columns))


def _history_spec(staged: StagedEntity) -> AssetSpec:
    validity = (TableColumn("valid_from", "timestamptz", "CRM commit time of this version"),
                TableColumn("valid_to", "timestamptz", "commit time of the next version; NULL while current"),
                TableColumn("valid_to_lsn", "numeric", "LSN of the next version"),
                TableColumn("is_current", "boolean", "the row's current version"))
    columns = [c for c in staged.columns if c.name != "committed_at"] + list(validity)
    description = (f"Validity history staging.{staged.name}_history of {staged.entity.title}: every "
                   f"version of every row, valid from its CRM commit to the next one's, so a report "
                   f"takes {', '.join(staged.entity.history)} as they were at an event's time. "
                   "Written with staging, order-free (redeliveries and late windows fit in by LSN).")
    return _postgres_spec(staged, staged.history_key, f"{staged.name}_history", description, columns)


# --- reading a run's changes ---------------------------------------------------------------------
@dataclass(frozen=True)
class WindowFigures:
    """What one window of a staging run holds for one entity: what a run of it alone reports."""

    changed: int = 0
    deletes: int = 0
    statuses: dict[str, int] | None = None
    dead_letters: dict[str, int] | None = None
    unresolved_toast: int = 0


@dataclass(frozen=True)
class ChangesRead:
    staged: StagedEntity
    columns: tuple[str, ...]
    rows: list[tuple]
    by_window: dict[str, WindowFigures]
    buffer_rows: int
    newest_commit: datetime | None
    versions: list[tuple] = field(default_factory=list)  # every version, for the history


def _window_parameters(start: datetime, end: datetime) -> dict:
    return {"window_start": ch_time(start), "window_end": ch_time(end), "window_minutes": WINDOW_MINUTES}


def read_changes(clickhouse: ClickHouseResource, entities: Iterable[StagedEntity], start: datetime,
                 end: datetime) -> dict[str, ChangesRead]:
    """Every entity's changes of [start, end) (latest version per key, and every version for the
    histories), each window's figures and each buffer's size, in one ClickHouse session."""
    window = _window_parameters(start, end)
    entities = list(entities)
    with clickhouse.session() as client:
        dead = client.query(sql_text("clickhouse/queries/dead_letters_by_window.sql"),
                            parameters={**window, "topics": [s.topic for s in entities]}).result_rows
        sizes = {name: (rows, newest) for name, rows, newest in client.query(
            " UNION ALL ".join(f"SELECT '{s.name}', count(), max(committed_at) FROM {s.buffer_table}"
                               for s in entities)).result_rows}
        reads = {s.name: _read_entity(client, s, window) for s in entities}
    letters: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    for topic, moment, reason, messages in dead:
        letters[topic][_key(moment)][reason] = messages
    return {name: _finish(read, letters[read.staged.topic], *sizes[name]) for name, read in reads.items()}


def _read_entity(client, staged: StagedEntity, window: dict) -> ChangesRead:
    result = client.query(entity_sql.window_query(staged.entity), parameters={**window, "unavailable": UNAVAILABLE})
    status = staged.entity.status_column if staged.entity.has_status else "CAST(NULL AS Nullable(String))"
    summary = client.query(render_sql("queries/changes_by_window.sql", {
        "entity": staged.name, "key": staged.entity.key, "status": status}), parameters=window).result_rows
    versions = (client.query(entity_sql.versions_query(staged.entity), parameters=window).result_rows
                if staged.entity.keeps_history else [])
    # An empty result has no column names (chDB): the entity's columns are the query's, in order.
    columns = tuple(result.column_names) or staged.column_names
    rows = result.result_rows
    at = columns.index("committed_at")
    toast = Counter(_key(row[at]) for row in rows if UNAVAILABLE in row)
    by_window = {_key(moment): WindowFigures(changed, deletes, dict(statuses), {}, toast[_key(moment)])
                 for moment, changed, deletes, statuses in summary}
    return ChangesRead(staged, columns, rows, by_window, 0, None, versions)


def _finish(read: ChangesRead, letters: dict[str, dict[str, int]], buffer_rows: int, newest) -> ChangesRead:
    by_window = dict(read.by_window)
    for key, reasons in letters.items():  # a window with dead letters, with or without good changes
        figures = by_window.get(key, WindowFigures())
        by_window[key] = WindowFigures(figures.changed, figures.deletes, figures.statuses, reasons,
                                       figures.unresolved_toast)
    return ChangesRead(read.staged, read.columns, read.rows, by_window, int(buffer_rows),
                       newest if buffer_rows else None, read.versions)


def _key(moment: datetime) -> str:
    """Partition key of a ClickHouse time (UTC, naive or aware)."""
    return key_of(moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc))


# --- writing them ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Late:
    """Windows before a run's range that its changes made stale (ISO starts): of the interaction
    mart's figures (the entity's late-window rule) and of the KPI catalog's marts."""
    windows: list[str]
    kpi: list[str]


def write_changes(db: PostgresResource, reads: Iterable[ChangesRead], range_start: datetime,
                  range_end: datetime) -> dict[str, Late]:
    """Upserts every entity's changes (and history versions) in one transaction, recording the
    range as staged; returns per entity the windows before range_start they make stale."""
    reads = list(reads)
    with db.connect() as conn, conn.cursor() as cur:
        # The buffer's times are UTC without a zone attached.
        cur.execute("SET LOCAL TIME ZONE 'UTC'")
        late = {read.staged.name: _write_entity(cur, read, range_start) for read in reads}
        cur.execute("INSERT INTO staging.staged_windows (window_end, window_start, changes) VALUES (%s, %s, %s) "
                    "ON CONFLICT (window_end) DO UPDATE SET window_start = least(staging.staged_windows.window_start, "
                    "EXCLUDED.window_start), changes = EXCLUDED.changes, staged_at = now()",
                    [range_end, range_start, sum(len(read.rows) for read in reads)])
        return late


def _copy_into_temp(cur: psycopg.Cursor, staged: StagedEntity, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """COPY `rows` into the entity's temporary table (the upsert's and the history's input)."""
    copy = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(staged.temp_table), sql.SQL(", ").join(map(sql.Identifier, columns)))
    with cur.copy(copy) as writer:
        for row in rows:
            writer.write_row(row)


def _write_entity(cur: psycopg.Cursor, read: ChangesRead, range_start: datetime) -> Late:
    staged = read.staged
    if not read.rows:
        return Late([], [])
    cur.execute(sql.SQL("CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP").format(
        sql.Identifier(staged.temp_table), sql.Identifier("staging", staged.name)))
    _copy_into_temp(cur, staged, read.columns, read.rows)
    params = {"range_start": range_start, "window": WINDOW, "origin": WINDOW_ORIGIN}
    late = cur.execute(staged.late_windows, params).fetchall() if staged.late_windows else []
    kpi_late = cur.execute(staged.kpi_late_windows, params).fetchall() if staged.kpi_late_windows else []
    cur.execute(entity_sql.upsert_sql(staged.entity), {"unavailable": UNAVAILABLE})
    if staged.entity.keeps_history:
        cur.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(staged.temp_table)))
        _copy_into_temp(cur, staged, read.columns, read.versions)
        cur.execute(entity_sql.history_sql(staged.entity), {"unavailable": UNAVAILABLE})
    cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(staged.temp_table)))
    # Windows before the first partition (a snapshot's history) cannot be recomputed anyway.
    return Late(*([utc(start).isoformat() for (start,) in rows if start >= reporting_windows.start]
                  for rows in (late, kpi_late)))


# --- checks -----------------------------------------------------------------------------------------
def dead_letter_threshold() -> int:
    """Dead letters a window may have before its check fails (HRDV_DEAD_LETTER_THRESHOLD)."""
    raw = os.environ.get("HRDV_DEAD_LETTER_THRESHOLD", "0")
    if not raw.isdigit():
        raise ValueError(f"HRDV_DEAD_LETTER_THRESHOLD must be a whole number >= 0, got {raw!r}")
    return int(raw)


def _dead_letter_check(staged: StagedEntity, key: str, dead: dict[str, int]) -> AssetCheckEvaluation:
    threshold = dead_letter_threshold()
    total = sum(dead.values())
    return AssetCheckEvaluation(
        asset_key=staged.staging_key,
        check_name="dead_letters_within_threshold",
        partition=key,
        passed=total <= threshold,
        metadata={"dead_letters": total, "threshold": threshold, "by_reason": MetadataValue.json(dead)},
        description=f"{total} message(s) of {staged.topic} went to hrdv.dead_letters in this window",
    )


def unknown_statuses(staged: StagedEntity, statuses: dict[str, int]) -> dict[str, int]:
    """{status: changes} of a window's live changes whose status is not in known_statuses."""
    return {status: n for status, n in sorted(statuses.items()) if status not in staged.known_statuses}


def _status_check(staged: StagedEntity, key: str, unknown: dict[str, int]) -> AssetCheckEvaluation:
    # WARN, not an error: the changes are staged all the same; someone must tell the marts what
    # the new value means (and add it to the entity's statuses).
    return AssetCheckEvaluation(
        asset_key=staged.staging_key,
        check_name="statuses_known",
        partition=key,
        passed=not unknown,
        severity=AssetCheckSeverity.WARN,
        metadata={"unknown": MetadataValue.json(unknown), "unknown_changes": sum(unknown.values()),
                  "known": MetadataValue.json(list(staged.known_statuses))},
        description=(f"{sum(unknown.values())} change(s) with a status outside the known set: "
                     f"{unknown}" if unknown else "every status is known"),
    )


def _check_specs(staged: StagedEntity) -> list[AssetCheckSpec]:
    specs = [
        AssetCheckSpec(
            "dead_letters_within_threshold", asset=staged.staging_key, partitions_def=reporting_windows,
            description=(
                "Messages of the topic that went to hrdv.dead_letters during the window stay "
                "within HRDV_DEAD_LETTER_THRESHOLD (default 0). Not blocking: the good "
                "changes are staged; the bad ones wait in the dead-letter table."),
        ),
        AssetCheckSpec(
            "matches_source", asset=staged.staging_key, partitions_def=reporting_windows,
            description=(
                "Staging equals the CRM for a sample of keys: up to HRDV_DRIFT_SAMPLE keys the "
                "window changed and as many from anywhere in staging, read from the CRM by key "
                "through the source reader login. A row whose CRM version committed before the "
                "run's last window ended must be staged exactly so; the ones that are not are "
                "listed with `hrdv resync` to repair them. Not blocking."),
        ),
    ]
    if staged.entity.has_status:
        specs.append(AssetCheckSpec(
            "statuses_known", asset=staged.staging_key, partitions_def=reporting_windows,
            description=(
                "Every status staged in the window is one the marts know (the entity's "
                "statuses in hrdv/entities.py); a new value, e.g. from a CRM migration, warns with its "
                "count per value. Not blocking: the changes are staged all the same."),
        ))
    return specs


def _changed_keys(read: ChangesRead, keys: list[str]) -> dict[str, list]:
    """Keys each window of the run changed, from the rows read (key and committed_at columns)."""
    key_at, committed_at = 0, read.columns.index("committed_at")
    changed: dict[str, list] = {key: [] for key in keys}
    names: dict[int, str] = {}  # window number -> key: key_of per row would cost 3 µs each
    for row in read.rows:
        moment = row[committed_at].replace(tzinfo=timezone.utc)
        number = (moment - WINDOW_ORIGIN) // WINDOW
        window = names.get(number) or names.setdefault(number, key_of(moment))
        if window in changed:
            changed[window].append(row[key_at])
    return changed


def _drift_checks(reads: list[ChangesRead], keys: list[str], hrdv_db: PostgresResource,
                  source_db: PostgresResource) -> Iterator[AssetCheckEvaluation]:
    """One matches_source evaluation per entity and window, with one connection to each side."""
    size = drift.sample_size()
    horizon = window_of(keys[-1]).end
    try:
        with hrdv_db.connect() as db, source_db.connect() as source:
            for read in reads:
                yield from _drift_of(read, keys, db, source, size, horizon)
    except psycopg.Error as error:  # the windows are staged; say why they could not be compared
        for read in reads:
            for key in keys:
                yield AssetCheckEvaluation(
                    asset_key=read.staged.staging_key, check_name="matches_source", partition=key,
                    passed=False, severity=AssetCheckSeverity.WARN,
                    description=f"could not compare with the CRM (HRDV_SOURCE_DSN): {error}".strip())


def _drift_of(read: ChangesRead, keys: list[str], db, source, size: int, horizon: datetime):
    staged = read.staged
    samples = drift.window_samples(_changed_keys(read, keys), drift.random_staged_keys(db, staged.name, size), size)
    everything = sorted({k for ids in samples.values() for k in ids})
    columns = drift.compared_columns(source, staged.name, staged.column_names)
    staged_rows = drift.staged_rows(db, staged.name, columns, everything)
    crm = drift.source_rows(source, staged.name, columns, everything, staged.changed_at)
    for key in keys:
        report = drift.judge(samples[key], staged_rows, crm, columns, horizon)
        yield AssetCheckEvaluation(
            asset_key=staged.staging_key, check_name="matches_source", partition=key,
            passed=not report.drifted, severity=AssetCheckSeverity.WARN,
            description=(f"{len(report.drifted)} of {report.judged} judged rows differ from the CRM"
                         if report.drifted else f"{report.judged} judged rows equal the CRM"),
            metadata=report.metadata(staged.name),
        )


# --- the asset ---------------------------------------------------------------------------------------
def _staging_metadata(staged: StagedEntity, key: str, figures: WindowFigures) -> dict:
    """A window's own figures: what a run of this window alone would report."""
    return {
        **window_text(window_of(key)),
        "dagster/row_count": figures.changed,
        "dagster/table_name": f"hrdv.staging.{staged.name}",
        "deletes": figures.deletes,
        "dead_letters": sum((figures.dead_letters or {}).values()),
        # TOAST placeholders the buffer could not resolve: staging kept its old text.
        "unresolved_toast_placeholders": figures.unresolved_toast,
    }


def _selected(context: AssetExecutionContext, entities: list[StagedEntity]) -> list[StagedEntity]:
    chosen = context.selected_asset_keys
    return [s for s in entities if s.staging_key in chosen or s.history_key in chosen]


def _report(context: AssetExecutionContext, read: ChangesRead, keys: list[str], late: Late,
            run_figures: dict) -> None:
    staged = read.staged
    targets = [k for k in (staged.staging_key, staged.history_key) if k in context.selected_asset_keys]
    for target in targets:
        for key in keys:
            figures = read.by_window.get(key, WindowFigures())
            metadata = _staging_metadata(staged, key, figures)
            if target == staged.history_key:
                metadata |= {"dagster/table_name": f"hrdv.staging.{staged.name}_history",
                             "versions_in_run": len(read.versions)}
            context.add_asset_metadata({**metadata, **run_figures}, asset_key=target, partition_key=key)
    if staged.staging_key in targets:
        # Windows whose marts are stale until recomputed: the late-change sensor reads this list
        # (sensors/late_changes.py), on the run's last window. Capped: metadata must stay small.
        # kpi_late_windows: the same for the KPI catalog's marts (kpi_late_change_sensor).
        context.add_asset_metadata({"late_window_count": len(late.windows),
                                    "late_windows": MetadataValue.json(late.windows[:MAX_LISTED_WINDOWS]),
                                    "kpi_late_windows": MetadataValue.json(late.kpi[:MAX_LISTED_WINDOWS])},
                                   asset_key=staged.staging_key, partition_key=keys[-1])
        if late.windows or late.kpi:
            context.log.warning(f"{staged.name}: earlier windows changed after their run: "
                                f"{late.windows[:10]}; in the KPI marts: {late.kpi[:10]}")


def _window_checks(context: AssetExecutionContext, read: ChangesRead, keys: list[str]) -> Iterator:
    staged, wanted = read.staged, context.selected_asset_check_keys
    for key in keys:
        figures = read.by_window.get(key, WindowFigures())
        if AssetCheckKey(staged.staging_key, "dead_letters_within_threshold") in wanted:
            yield _dead_letter_check(staged, key, figures.dead_letters or {})
        if AssetCheckKey(staged.staging_key, "statuses_known") in wanted:
            yield _status_check(staged, key, unknown_statuses(staged, figures.statuses or {}))


def build_staging_asset(entities: list[StagedEntity]):
    """One multi-asset staging every entity of `entities` (a subset when only some are selected)."""
    specs = [_staging_spec(s) for s in entities] + [_history_spec(s) for s in entities if s.history_key]

    @multi_asset(
        name=STAGING_ASSET,
        specs=specs,
        check_specs=[spec for s in entities for spec in _check_specs(s)],
        backfill_policy=BackfillPolicy.single_run(),
        # Check results are per window, yielded as evaluations: no check output is required.
        can_subset=True,
        pool=CLICKHOUSE_POOL,
        retry_policy=PASSING_FAILURES,
        description="Stages every selected CRM entity for the run's windows: one ClickHouse session, "
                    "one PostgreSQL transaction.",
    )
    def stage_crm(
        context: AssetExecutionContext,
        clickhouse: ClickHouseResource,
        hrdv_db: PostgresResource,
        source_db: PostgresResource,
        kafka: KafkaResource,
    ):
        selected = _selected(context, entities)
        keys = requested_keys(context)
        topics = [s.topic for s in selected]
        begun = time.monotonic()
        complete_until = require_complete(kafka, topics, keys[-1])
        lag = sum(p.lag for p in kafka.lag(topics))
        started = time.monotonic()
        start, end = window_of(keys[0]).start, window_of(keys[-1]).end
        reads = read_changes(clickhouse, selected, start, end)
        read_s = time.monotonic() - started
        late = write_changes(hrdv_db, reads.values(), start, end)
        run_figures = {"windows_in_run": len(keys), "entities_in_run": len(selected),
                       "kafka_lag_at_run_start": lag, "run_barrier_s": round(started - begun, 3),
                       "run_read_s": round(read_s, 3), "run_duration_s": round(time.monotonic() - started, 3)}
        for read in reads.values():
            _report(context, read, keys, late[read.staged.name], run_figures)
        context.log.info(f"staged {sum(len(r.rows) for r in reads.values())} changes of {len(selected)} "
                         f"entities for {len(keys)} window(s) {keys[0]}..{keys[-1]} in "
                         f"{run_figures['run_duration_s']} s")
        # Check results before the materialisations: a run that dies in between leaves its
        # windows unpublished (requested again), never published with checks that never reported.
        for read in reads.values():
            yield from _window_checks(context, read, keys)
        wanted = context.selected_asset_check_keys
        drift_reads = [r for r in reads.values() if AssetCheckKey(r.staged.staging_key, "matches_source") in wanted]
        if drift.sample_size() and drift_reads:
            yield from _drift_checks(drift_reads, keys, hrdv_db, source_db)
        for read in reads.values():
            yield from _results(context, read, complete_until)

    return stage_crm


def _results(context: AssetExecutionContext, read: ChangesRead, complete_until: str) -> Iterator:
    staged = read.staged
    for target in (staged.staging_key, staged.history_key):
        if target in context.selected_asset_keys:
            yield MaterializeResult(asset_key=target)
    yield AssetObservation(asset_key=staged.buffer_key, metadata={
        "dagster/row_count": read.buffer_rows,
        "newest_commit": MetadataValue.text(read.newest_commit.isoformat() if read.newest_commit else "-"),
        "complete_until": MetadataValue.text(complete_until),
    })


def build_cdc_assets(entities: Iterable[StagedEntity] = STAGED.values()) -> list:
    """Topic and buffer specs of every entity, and the one staging multi-asset."""
    entities = list(entities)
    return [*(_topic_spec(s) for s in entities), *(_buffer_spec(s) for s in entities),
            build_staging_asset(entities)]

"""The part every CDC entity shares: Kafka topic -> ClickHouse buffer -> PostgreSQL staging.

An entity is described by a StagedEntity; build_cdc_assets turns it into two upstream specs (the
topic Debezium writes and the buffer ClickHouse fills) and one partitioned staging asset that
upserts a window's changes into the operational store. A run of a range of windows stages them
in one read and one transaction, and still records each window's own figures and check results.
"""

import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

from dagster import (
    AssetCheckEvaluation,
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

from hrdv import drift
from hrdv.clickhouse import render_sql
from hrdv.settings import load
from hrdv.sql import sql_text
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


@dataclass(frozen=True)
class StagedEntity:
    """What differs between CDC entities; everything else is the same code."""

    name: str  # e.g. "interactions": CRM table, group name, staging table
    columns: tuple[TableColumn, ...]  # staging columns read from the buffer, in query order
    window_query: str  # sql/clickhouse/queries/...: latest version per key changed in a window
    upsert: str  # sql/postgres/...: upsert from tmp_<entity>_changes into staging.<entity>
    late_windows: str  # sql/postgres/...: earlier windows whose marts these changes make stale
    description: str
    # Status values the marts and reports know; others are reported by the check statuses_known.
    known_statuses: tuple[str, ...] = ()
    # The CRM column its application sets on every change: the drift check's commit time for rows
    # committed before the CRM tracked commit timestamps (hrdv/drift.py).
    changed_at: str = "updated_at"

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

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
    def temp_table(self) -> str:
        # The upsert SQL reads the window's changes from this temporary table.
        return f"tmp_{self.name}_changes"


def utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc)


def ch_time(moment: datetime) -> str:
    """A ClickHouse DateTime64 literal in UTC (the buffer's time zone)."""
    return utc(moment).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _topic_spec(entity: StagedEntity) -> AssetSpec:
    return AssetSpec(
        key=entity.topic_key,
        description=(f"Debezium change events of CRM table public.{entity.name} (topic "
                     f"{entity.topic}). Observed by the lag sensor: end offsets and the newest "
                     "Debezium heartbeat."),
        group_name=entity.name,
        owners=OWNERS,
        kinds={"kafka"},
        metadata={"topic": entity.topic},
    )


def _buffer_spec(entity: StagedEntity) -> AssetSpec:
    return AssetSpec(
        key=entity.buffer_key,
        deps=[entity.topic_key],
        description=(
            f"ClickHouse ReplacingMergeTree {entity.buffer_table}: the parsed change events, "
            "one row per change, versioned by source LSN, deletes kept as flagged rows. Filled "
            "continuously by the Kafka engine (production) or the embedded ingestor (chDB). "
            "Observed by the lag sensor (consumer lag, how far it is complete) and by each "
            "staging run (rows, newest commit)."
        ),
        group_name=entity.name,
        owners=OWNERS,
        kinds={"clickhouse"},
        metadata={"dagster/table_name": entity.buffer_table},
    )


@dataclass(frozen=True)
class WindowFigures:
    """What one window of a staging run holds: the figures a run of that window alone reports."""

    changed: int = 0
    deletes: int = 0
    statuses: dict[str, int] | None = None
    dead_letters: dict[str, int] | None = None
    unresolved_toast: int = 0


@dataclass(frozen=True)
class ChangesRead:
    columns: tuple[str, ...]
    rows: list[tuple]
    by_window: dict[str, WindowFigures]
    buffer_rows: int
    newest_commit: datetime | None


def _read_changes(clickhouse: ClickHouseResource, entity: StagedEntity, start: datetime,
                  end: datetime) -> ChangesRead:
    """The changes of [start, end) (latest version per key), each window's figures and the
    buffer's size, in one ClickHouse session."""
    window = {"window_start": ch_time(start), "window_end": ch_time(end), "window_minutes": WINDOW_MINUTES}
    with clickhouse.session() as client:
        result = client.query(sql_text(entity.window_query),
                              parameters={**window, "unavailable": UNAVAILABLE})
        summary = client.query(render_sql("queries/changes_by_window.sql", {"entity": entity.name}),
                               parameters=window).result_rows
        dead = client.query(sql_text("clickhouse/queries/dead_letters_by_window.sql"),
                            parameters={**window, "topic": entity.topic}).result_rows
        buffer_rows, newest = client.query(
            f"SELECT count(), max(committed_at) FROM {entity.buffer_table}").result_rows[0]
    # An empty result has no column names (chDB): the entity's columns are the query's, in order.
    columns = tuple(result.column_names) or entity.column_names
    rows = result.result_rows
    toast = Counter(_key(row[columns.index("committed_at")]) for row in rows if UNAVAILABLE in row)
    letters: dict[str, dict[str, int]] = defaultdict(dict)
    for moment, reason, messages in dead:
        letters[_key(moment)][reason] = messages
    by_window = {
        _key(moment): WindowFigures(changed, deletes, dict(statuses), letters.get(_key(moment), {}),
                                    toast[_key(moment)])
        for moment, changed, deletes, statuses in summary
    }
    for key, reasons in letters.items():  # a window with dead letters and no good change
        by_window.setdefault(key, WindowFigures(dead_letters=reasons))
    return ChangesRead(columns, rows, by_window, int(buffer_rows), newest if buffer_rows else None)


def _key(moment: datetime) -> str:
    """Partition key of a ClickHouse time (UTC, naive or aware)."""
    return key_of(moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc))


def _dead_letter_check(entity: StagedEntity, key: str, dead: dict[str, int]) -> AssetCheckEvaluation:
    threshold = dead_letter_threshold()
    total = sum(dead.values())
    return AssetCheckEvaluation(
        asset_key=entity.staging_key,
        check_name="dead_letters_within_threshold",
        partition=key,
        passed=total <= threshold,
        metadata={"dead_letters": total, "threshold": threshold, "by_reason": MetadataValue.json(dead)},
        description=f"{total} message(s) of {entity.topic} went to hrdv.dead_letters in this window",
    )


def unknown_statuses(entity: StagedEntity, statuses: dict[str, int]) -> dict[str, int]:
    """{status: changes} of a window's live changes whose status is not in known_statuses."""
    return {status: n for status, n in sorted(statuses.items()) if status not in entity.known_statuses}


def _status_check(entity: StagedEntity, key: str, unknown: dict[str, int]) -> AssetCheckEvaluation:
    # WARN, not an error: the changes are staged all the same; someone must tell the marts what
    # the new value means (and add it to known_statuses).
    return AssetCheckEvaluation(
        asset_key=entity.staging_key,
        check_name="statuses_known",
        partition=key,
        passed=not unknown,
        severity=AssetCheckSeverity.WARN,
        metadata={"unknown": MetadataValue.json(unknown), "unknown_changes": sum(unknown.values()),
                  "known": MetadataValue.json(list(entity.known_statuses))},
        description=(f"{sum(unknown.values())} change(s) with a status outside the known set: "
                     f"{unknown}" if unknown else "every status is known"),
    )


def dead_letter_threshold() -> int:
    """Dead letters a window may have before its check fails (HRDV_DEAD_LETTER_THRESHOLD)."""
    raw = os.environ.get("HRDV_DEAD_LETTER_THRESHOLD", "0")
    if not raw.isdigit():
        raise ValueError(f"HRDV_DEAD_LETTER_THRESHOLD must be a whole number >= 0, got {raw!r}")
    return int(raw)


def _write_changes(
    db: PostgresResource, entity: StagedEntity, columns, rows, range_start: datetime
) -> list[str]:
    """Upserts the changes in one transaction; returns the windows before range_start they make
    stale (ISO starts)."""
    copy = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(entity.temp_table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with db.connect() as conn, conn.cursor() as cur:
        # The buffer's times are UTC without a zone attached.
        cur.execute("SET LOCAL TIME ZONE 'UTC'")
        cur.execute(
            sql.SQL("CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP").format(
                sql.Identifier(entity.temp_table), sql.Identifier("staging", entity.name)
            )
        )
        with cur.copy(copy) as writer:
            for row in rows:
                writer.write_row(row)
        late = cur.execute(
            sql_text(entity.late_windows),
            {"range_start": range_start, "window": WINDOW, "origin": WINDOW_ORIGIN},
        ).fetchall()
        cur.execute(sql_text(entity.upsert), {"unavailable": UNAVAILABLE})
    # Windows before the first partition (a snapshot's history) cannot be recomputed anyway.
    return [utc(start).isoformat() for (start,) in late if start >= reporting_windows.start]


def _staging_metadata(entity: StagedEntity, key: str, figures: WindowFigures) -> dict:
    """A window's own figures: what a run of this window alone would report."""
    return {
        **window_text(window_of(key)),
        "dagster/row_count": figures.changed,
        "dagster/table_name": f"hrdv.staging.{entity.name}",
        "deletes": figures.deletes,
        "dead_letters": sum((figures.dead_letters or {}).values()),
        # TOAST placeholders the buffer could not resolve: staging kept its old text.
        "unresolved_toast_placeholders": figures.unresolved_toast,
    }


def _checks(entity: StagedEntity) -> list[AssetCheckSpec]:
    return [
        AssetCheckSpec(
            "dead_letters_within_threshold",
            asset=entity.staging_key,
            partitions_def=reporting_windows,
            description=(
                "Messages of the topic that went to hrdv.dead_letters during the window stay "
                "within HRDV_DEAD_LETTER_THRESHOLD (default 0). Not blocking: the good "
                "changes are staged; the bad ones wait in the dead-letter table."
            ),
        ),
        AssetCheckSpec(
            "matches_source",
            asset=entity.staging_key,
            partitions_def=reporting_windows,
            description=(
                "Staging equals the CRM for a sample of keys: up to HRDV_DRIFT_SAMPLE keys the "
                "window changed and as many from anywhere in staging, read from the CRM by key "
                "through the source reader login. A row whose CRM version committed before the "
                "run's last window ended must be staged exactly so; the ones that are not are "
                "listed with `hrdv resync` to repair them. Not blocking."
            ),
        ),
        AssetCheckSpec(
            "statuses_known",
            asset=entity.staging_key,
            partitions_def=reporting_windows,
            description=(
                "Every status staged in the window is one the marts know (the entity's "
                "known_statuses); a new value, e.g. from a CRM migration, warns with its count "
                "per value. Not blocking: the changes are staged all the same."
            ),
        ),
    ]


def _changed_keys(read: "ChangesRead", keys: list[str]) -> dict[str, list[int]]:
    """Ids each window of the run changed, from the rows read (id and committed_at columns)."""
    id_at, committed_at = read.columns.index("id"), read.columns.index("committed_at")
    changed: dict[str, list[int]] = {key: [] for key in keys}
    names: dict[int, str] = {}  # window number -> key: key_of per row would cost 3 µs each
    for row in read.rows:
        moment = row[committed_at].replace(tzinfo=timezone.utc)
        number = (moment - WINDOW_ORIGIN) // WINDOW
        window = names.get(number) or names.setdefault(number, key_of(moment))
        if window in changed:
            changed[window].append(row[id_at])
    return changed


def _drift_checks(entity: StagedEntity, read: "ChangesRead", keys: list[str], hrdv_db: PostgresResource,
                  source_db: PostgresResource) -> Iterator[AssetCheckEvaluation]:
    """One matches_source evaluation per window, from one read of each side."""
    size = drift.sample_size()
    horizon = window_of(keys[-1]).end
    try:
        with hrdv_db.connect() as db, source_db.connect() as source:
            samples = drift.window_samples(_changed_keys(read, keys),
                                           drift.random_staged_keys(db, entity.name, size), size)
            everything = sorted({k for ids in samples.values() for k in ids})
            columns = drift.compared_columns(source, entity.name, entity.column_names)
            staged = drift.staged_rows(db, entity.name, columns, everything)
            crm = drift.source_rows(source, entity.name, columns, everything, entity.changed_at)
    except psycopg.Error as error:  # the windows are staged; say why they could not be compared
        for key in keys:
            yield AssetCheckEvaluation(
                asset_key=entity.staging_key, check_name="matches_source", partition=key,
                passed=False, severity=AssetCheckSeverity.WARN,
                description=f"could not compare with the CRM (HRDV_SOURCE_DSN): {error}".strip())
        return
    for key in keys:
        report = drift.judge(samples[key], staged, crm, columns, horizon)
        yield AssetCheckEvaluation(
            asset_key=entity.staging_key, check_name="matches_source", partition=key,
            passed=not report.drifted, severity=AssetCheckSeverity.WARN,
            description=(f"{len(report.drifted)} of {report.judged} judged rows differ from the CRM"
                         if report.drifted else f"{report.judged} judged rows equal the CRM"),
            metadata=report.metadata(entity.name),
        )


def _staging_asset(entity: StagedEntity):
    @multi_asset(
        name=f"stage_{entity.name}",
        specs=[AssetSpec(
            key=entity.staging_key,
            deps=[entity.buffer_key],
            partitions_def=reporting_windows,
            group_name=entity.name,
            owners=OWNERS,
            kinds={"postgres"},
            description=entity.description,
            metadata={"dagster/table_name": f"hrdv.staging.{entity.name}",
                      "dagster/column_schema": TableSchema(columns=list(entity.columns))},
        )],
        check_specs=_checks(entity),
        backfill_policy=BackfillPolicy.single_run(),
        # Check results are per window, yielded as evaluations: no check output is required.
        can_subset=True,
        pool=CLICKHOUSE_POOL,
        retry_policy=PASSING_FAILURES,
    )
    def staging(
        context: AssetExecutionContext,
        clickhouse: ClickHouseResource,
        hrdv_db: PostgresResource,
        source_db: PostgresResource,
        kafka: KafkaResource,
    ):
        keys = requested_keys(context)
        complete_until = require_complete(kafka, [entity.topic], keys[-1])
        started = time.monotonic()
        lag = sum(p.lag for p in kafka.lag([entity.topic]))
        start, end = window_of(keys[0]).start, window_of(keys[-1]).end
        read = _read_changes(clickhouse, entity, start, end)
        read_s = time.monotonic() - started
        late_windows = _write_changes(hrdv_db, entity, read.columns, read.rows, start)
        if late_windows:
            context.log.warning(
                f"{len(late_windows)} earlier window(s) changed after their run: {late_windows[:10]}"
            )
        run_figures = {
            "windows_in_run": len(keys),
            "kafka_lag_at_run_start": lag,
            "run_read_s": round(read_s, 3),
            "run_duration_s": round(time.monotonic() - started, 3),
        }
        for key in keys:
            context.add_asset_metadata(
                {**_staging_metadata(entity, key, read.by_window.get(key, WindowFigures())), **run_figures},
                partition_key=key,
            )
        # Windows whose marts are stale until recomputed: the late-change sensor reads this list
        # (sensors/late_changes.py), on the run's last window. Capped: metadata must stay small.
        context.add_asset_metadata(
            {"late_window_count": len(late_windows),
             "late_windows": MetadataValue.json(late_windows[:MAX_LISTED_WINDOWS])},
            partition_key=keys[-1],
        )
        context.log.info(f"staged {len(read.rows)} {entity.name} changes for {len(keys)} window(s) "
                         f"{keys[0]}..{keys[-1]}")
        # Check results before the materialisations: a run that dies in between leaves its
        # windows unpublished (requested again), never published with checks that never reported.
        for key in keys:
            figures = read.by_window.get(key, WindowFigures())
            yield _dead_letter_check(entity, key, figures.dead_letters or {})
            yield _status_check(entity, key, unknown_statuses(entity, figures.statuses or {}))
        if drift.sample_size():
            yield from _drift_checks(entity, read, keys, hrdv_db, source_db)
        yield MaterializeResult(asset_key=entity.staging_key)
        yield AssetObservation(asset_key=entity.buffer_key, metadata={
            "dagster/row_count": read.buffer_rows,
            "newest_commit": MetadataValue.text(read.newest_commit.isoformat() if read.newest_commit else "-"),
            "complete_until": MetadataValue.text(complete_until),
        })

    return staging


def build_cdc_assets(entity: StagedEntity) -> list:
    return [_topic_spec(entity), _buffer_spec(entity), _staging_asset(entity)]

"""The part every CDC entity shares: Kafka topic -> ClickHouse buffer -> PostgreSQL staging.

An entity is described by a StagedEntity; build_cdc_assets turns it into two upstream specs (the
topic Debezium writes and the buffer ClickHouse fills) and one partitioned staging asset that
upserts a window's changes into the operational store.
"""

import os
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    asset,
)
from psycopg import sql

from hrdv.settings import load
from hrdv.sql import sql_text
from hrdv.stack.connect import unavailable_placeholder
from partitions import WINDOW, WINDOW_ORIGIN, reporting_windows
from resources.clickhouse import ClickHouseResource
from resources.kafka import KafkaResource
from resources.postgres import PostgresResource

OWNERS = ["team:hrdv-data-engineering"]
UNAVAILABLE = unavailable_placeholder()  # Debezium's stand-in for an unchanged TOASTed value
MAX_LISTED_WINDOWS = 2000  # a week of 15-minute windows, and then some


@dataclass(frozen=True)
class StagedEntity:
    """What differs between CDC entities; everything else is the same code."""

    name: str  # e.g. "interactions": CRM table, group name, staging table
    columns: tuple[str, ...]  # staging columns read from the buffer, in query order
    window_query: str  # sql/clickhouse/queries/...: latest version per key changed in a window
    upsert: str  # sql/postgres/...: upsert from tmp_<entity>_changes into staging.<entity>
    late_windows: str  # sql/postgres/...: earlier windows whose marts these changes make stale
    description: str
    # Status values the marts and reports know; others are reported by the check statuses_known.
    known_statuses: tuple[str, ...] = ()

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
        description=f"Debezium change events of CRM table public.{entity.name} (topic {entity.topic}).",
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
            f"ClickHouse ReplacingMergeTree hrdv.{entity.name}_buffer: the parsed change events, "
            "one row per change, versioned by source LSN, deletes kept as flagged rows. Filled "
            "continuously by the Kafka engine (production) or the embedded ingestor (chDB)."
        ),
        group_name=entity.name,
        owners=OWNERS,
        kinds={"clickhouse"},
        metadata={"table": f"hrdv.{entity.name}_buffer"},
    )


def _read_changes(clickhouse: ClickHouseResource, entity: StagedEntity, start, end):
    """The window's changes, and its dead letters by reason, in one ClickHouse session."""
    window = {"window_start": ch_time(start), "window_end": ch_time(end)}
    with clickhouse.session() as client:
        result = client.query(sql_text(entity.window_query),
                              parameters={**window, "unavailable": UNAVAILABLE})
        dead = client.query(
            sql_text("clickhouse/queries/dead_letters_in_window.sql"),
            parameters={**window, "topic": entity.topic},
        ).result_rows
    # An empty result has no column names (chDB): the entity's columns are the query's, in order.
    return result.column_names or entity.columns, result.result_rows, dict(dead)


def _dead_letter_check(entity: StagedEntity, dead: dict[str, int]) -> AssetCheckResult:
    threshold = dead_letter_threshold()
    total = sum(dead.values())
    return AssetCheckResult(
        check_name="dead_letters_within_threshold",
        asset_key=entity.staging_key,
        passed=total <= threshold,
        metadata={"dead_letters": total, "threshold": threshold, "by_reason": MetadataValue.json(dead)},
        description=f"{total} message(s) of {entity.topic} went to hrdv.dead_letters in this window",
    )


def unknown_statuses(entity: StagedEntity, columns, rows) -> dict[str, int]:
    """{status: changes} of the window's live changes whose status is not in known_statuses."""
    status, deleted = columns.index("status"), columns.index("is_deleted")
    counts = Counter(str(row[status]) for row in rows
                     if not row[deleted] and row[status] not in entity.known_statuses)
    return dict(sorted(counts.items()))


def _status_check(entity: StagedEntity, unknown: dict[str, int]) -> AssetCheckResult:
    # WARN, not an error: the changes are staged all the same; someone must tell the marts what
    # the new value means (and add it to known_statuses).
    return AssetCheckResult(
        check_name="statuses_known",
        asset_key=entity.staging_key,
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
    db: PostgresResource, entity: StagedEntity, columns, rows, window_start: datetime
) -> list[str]:
    """Upserts the changes in one transaction; returns the earlier windows they make stale."""
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
            {"range_start": window_start, "window": WINDOW, "origin": WINDOW_ORIGIN},
        ).fetchall()
        cur.execute(sql_text(entity.upsert), {"unavailable": UNAVAILABLE})
    # Windows before the first partition (a snapshot's history) cannot be recomputed anyway.
    return [utc(start).isoformat() for (start,) in late if start >= reporting_windows.start]


def _staging_asset(entity: StagedEntity):
    @asset(
        key=entity.staging_key,
        deps=[entity.buffer_key],
        partitions_def=reporting_windows,
        backfill_policy=BackfillPolicy.single_run(),
        group_name=entity.name,
        owners=OWNERS,
        kinds={"postgres"},
        description=entity.description,
        pool="hrdv_clickhouse",
        check_specs=[
            AssetCheckSpec(
                "dead_letters_within_threshold",
                asset=entity.staging_key,
                description=(
                    "Messages of the topic that went to hrdv.dead_letters during the window stay "
                    "within HRDV_DEAD_LETTER_THRESHOLD (default 0). Not blocking: the good "
                    "changes are staged; the bad ones wait in the dead-letter table."
                ),
            ),
            AssetCheckSpec(
                "statuses_known",
                asset=entity.staging_key,
                description=(
                    "Every status staged in the window is one the marts know (the entity's "
                    "known_statuses); a new value, e.g. from a CRM migration, warns with its count "
                    "per value. Not blocking: the changes are staged all the same."
                ),
            ),
        ],
    )
    def staging(
        context: AssetExecutionContext,
        clickhouse: ClickHouseResource,
        hrdv_db: PostgresResource,
        kafka: KafkaResource,
    ) -> MaterializeResult:
        window = context.partition_time_window
        started = time.monotonic()
        lag = sum(p.lag for p in kafka.lag([entity.topic]))
        columns, rows, dead = _read_changes(clickhouse, entity, window.start, window.end)
        read_s = time.monotonic() - started
        late_windows = _write_changes(hrdv_db, entity, columns, rows, window.start)
        if late_windows:
            context.log.warning(
                f"{len(late_windows)} earlier window(s) changed after their run: {late_windows[:10]}"
            )
        deletes = sum(1 for row in rows if row[columns.index("is_deleted")])
        context.log.info(f"staged {len(rows)} {entity.name} changes for {window.start}..{window.end}")
        return MaterializeResult(
            metadata={
                "rows": len(rows),
                "deletes": deletes,
                "window_start": MetadataValue.text(window.start.isoformat()),
                "window_end": MetadataValue.text(window.end.isoformat()),
                "kafka_lag_at_start": lag,
                "dead_letters": sum(dead.values()),
                # TOAST placeholders the buffer could not resolve: staging kept its old text.
                "unresolved_toast_placeholders": sum(UNAVAILABLE in row for row in rows),
                # Windows whose marts are stale until recomputed: the late-change sensor reads
                # this list (sensors/late_changes.py). Capped: the metadata must stay small.
                "late_window_count": len(late_windows),
                "late_windows": MetadataValue.json(late_windows[:MAX_LISTED_WINDOWS]),
                "read_s": round(read_s, 3),
                "duration_s": round(time.monotonic() - started, 3),
            },
            check_results=[_dead_letter_check(entity, dead),
                           _status_check(entity, unknown_statuses(entity, columns, rows))],
        )

    return staging


def build_cdc_assets(entity: StagedEntity) -> list:
    return [_topic_spec(entity), _buffer_spec(entity), _staging_asset(entity)]

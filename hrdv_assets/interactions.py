"""Customer interactions (обращения): CRM table -> buffer -> staging -> 15-minute KPI mart."""

import time
from datetime import datetime, timezone

import pandas as pd
import pandera.pandas as pa
import psycopg
from dagster import (
    AssetCheckResult,

    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
    asset,
)

from hrdv.sql import sql_text
from hrdv_assets.cdc import OWNERS, StagedEntity, build_cdc_assets
from partitions import WINDOW, WINDOW_ORIGIN, reporting_windows
from resources.postgres import PostgresResource

INTERACTIONS = StagedEntity(
    name="interactions",
    columns=(
        "id", "customer_id", "channel_code", "region_code", "topic_code", "queue_code",
        "direction", "status", "operator_id", "subject", "channel_detail", "created_at",
        "first_response_at", "closed_at", "resolved_on_first_contact", "updated_at", "is_deleted",
        "lsn", "committed_at",
    ),
    # The lifecycle new -> assigned -> in_progress -> closed (-> reopened), and 'in_work', the
    # name CRM migration 001 gives in_progress (rows staged before it keep the old name).
    known_statuses=("new", "assigned", "in_progress", "in_work", "closed", "reopened"),
    window_query="clickhouse/queries/interaction_changes_in_window.sql",
    upsert="postgres/staging_interactions_upsert.sql",
    late_windows="postgres/staging_interactions_late_windows.sql",
    description=(
        "Operational store staging.interactions: the latest state of every CRM interaction. "
        "A partition upserts the interactions whose changes were committed in the CRM during "
        "its window (latest version per id by LSN; deletes flagged)."
    ),
)

MART_KEY = AssetKey(["mart", "mart_interaction_kpi"])

interaction_kpi_schema = pa.DataFrameSchema(
    {
        "window_start": pa.Column(pd.DatetimeTZDtype(tz="UTC"), coerce=True),
        "window_end": pa.Column(pd.DatetimeTZDtype(tz="UTC"), coerce=True),
        "channel_code": pa.Column(str, pa.Check.str_length(min_value=1)),
        "region_code": pa.Column(str, pa.Check.str_length(min_value=1)),
        "opened": pa.Column(int, pa.Check.ge(0)),
        "closed": pa.Column(int, pa.Check.ge(0)),
        "avg_resolution_s": pa.Column(float, pa.Check.ge(0), nullable=True),
        "p90_resolution_s": pa.Column(float, pa.Check.ge(0), nullable=True),
        "first_contact_resolution_share": pa.Column(
            float, pa.Check.in_range(0.0, 1.0), nullable=True
        ),
    },
    checks=[
        pa.Check(lambda df: df["opened"] + df["closed"] > 0, error="row with nothing opened or closed"),
        pa.Check(lambda df: df["window_end"] - df["window_start"] == pd.Timedelta(WINDOW),
                 error="window is not one reporting window long"),
        pa.Check(lambda df: df["window_start"].dt.floor(pd.Timedelta(WINDOW)) == df["window_start"],
                 error="window_start is not on a window boundary"),
        pa.Check(lambda df: (df["closed"] == 0) == df["avg_resolution_s"].isna(),
                 error="resolution time must be present exactly when something closed"),
    ],
    unique=["window_start", "channel_code", "region_code"],
    strict="filter",
    # Rows come from psycopg as Python objects: an empty window, or one where nothing closed
    # (all resolution times NULL), has object columns that must still validate.
    coerce=True,
    name="interaction_kpi",
)

MART_COLUMNS = TableSchema(
    columns=[
        TableColumn("window_start", "timestamptz", "start of the reporting window"),
        TableColumn("window_end", "timestamptz", "end of the reporting window (exclusive)"),
        TableColumn("channel_code", "text", "call, chat, web ..."),
        TableColumn("region_code", "text", "federal subject, e.g. RU-MOW"),
        TableColumn("opened", "integer", "interactions created in the window"),
        TableColumn("closed", "integer", "interactions closed in the window"),
        TableColumn("avg_resolution_s", "float", "mean of closed_at - created_at of those closed"),
        TableColumn("p90_resolution_s", "float", "90th percentile of the same"),
        TableColumn("first_contact_resolution_share", "float", "share of closed resolved at first contact"),
        TableColumn("published_at", "timestamptz", "when this row was computed"),
    ]
)


def _validate(frame: pd.DataFrame) -> AssetCheckResult:
    try:
        interaction_kpi_schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
        return AssetCheckResult(
            check_name="pandera_schema",
            passed=False,
            metadata={
                "failures": len(cases),
                "failure_cases": MetadataValue.md(f"```\n{cases.head(20).to_string()}\n```"),
            },
        )
    return AssetCheckResult(check_name="pandera_schema", passed=True, metadata={"rows": len(frame)})


def _totals(cur: psycopg.Cursor, params: dict) -> AssetCheckResult:
    mart_opened, staging_opened, mart_closed, staging_closed = cur.execute(
        sql_text("postgres/interaction_kpi_totals.sql"), params
    ).fetchone()
    passed = mart_opened == staging_opened and mart_closed == staging_closed
    return AssetCheckResult(
        check_name="totals_match_staging",
        passed=passed,
        metadata={
            "mart_opened": int(mart_opened),
            "staging_opened": int(staging_opened),
            "mart_closed": int(mart_closed),
            "staging_closed": int(staging_closed),
        },
    )


@asset(
    key=MART_KEY,
    deps=[INTERACTIONS.staging_key],
    partitions_def=reporting_windows,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="interactions",
    owners=OWNERS,
    kinds={"postgres"},
    description=(
        "mart.interaction_kpi: per reporting window x channel x region, interactions opened and "
        "closed, average and p90 resolution time of those closed, and the share resolved at "
        "first contact. Published only when both checks pass."
    ),
    metadata={"dagster/column_schema": MART_COLUMNS, "table": "mart.interaction_kpi"},
    check_specs=[
        AssetCheckSpec("pandera_schema", asset=MART_KEY, blocking=True,
                       description="Pandera: types, ranges, window alignment, uniqueness."),
        AssetCheckSpec("totals_match_staging", asset=MART_KEY, blocking=True,
                       description="Opened and closed totals equal the staging rows of the windows."),
    ],
)
def mart_interaction_kpi(context: AssetExecutionContext, hrdv_db: PostgresResource) -> MaterializeResult:
    window = context.partition_time_window
    started = time.monotonic()
    params = {
        "range_start": window.start,
        "range_end": window.end,
        "window": WINDOW,
        "origin": WINDOW_ORIGIN,
    }
    with hrdv_db.connect() as conn, conn.cursor() as cur:
        with conn.transaction():
            cur.execute("SET LOCAL TIME ZONE 'UTC'")
            cur.execute(sql_text("postgres/mart_interaction_kpi.sql"), params)
            cur.execute(
                "SELECT * FROM mart.interaction_kpi WHERE window_start >= %(range_start)s "
                "AND window_start < %(range_end)s ORDER BY 1, 3, 4",
                params,
            )
            frame = pd.DataFrame(cur.fetchall(), columns=[c.name for c in cur.description])
            checks = [_validate(frame), _totals(cur, params)]
            published = all(check.passed for check in checks)
            if not published:
                context.log.error("mart checks failed: rolled back, nothing published")
                raise psycopg.Rollback()
    now = datetime.now(timezone.utc)
    return MaterializeResult(
        metadata={
            "rows": len(frame),
            "window_start": MetadataValue.text(window.start.isoformat()),
            "window_end": MetadataValue.text(window.end.isoformat()),
            "opened": int(frame["opened"].sum()) if len(frame) else 0,
            "closed": int(frame["closed"].sum()) if len(frame) else 0,
            "published": published,
            "published_after_window_end_s": round((now - window.end).total_seconds(), 1),
            "duration_s": round(time.monotonic() - started, 3),
        },
        check_results=checks,
    )


interaction_assets = [*build_cdc_assets(INTERACTIONS), mart_interaction_kpi]

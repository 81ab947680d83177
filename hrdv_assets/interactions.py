"""Customer interactions (обращения): CRM table -> buffer -> staging -> 15-minute KPI mart.

The mart of a set of windows is published by one function, publish_interaction_kpi, from two
places: the partitioned asset (a window's run, a backfill of a range) and the recompute job that
the late-change sensor starts for exactly the windows later changes altered (windows far apart,
in one run). Either way each window gets its own materialisation and its own check results.
"""

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pandas as pd
import pandera.pandas as pa
import psycopg
from dagster import (
    AssetCheckEvaluation,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetSpec,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    OpExecutionContext,
    TableColumn,
    TableSchema,
    multi_asset,
    op,
)

from hrdv.sql import sql_text
from hrdv_assets.cdc import OWNERS, STAGED
from hrdv_assets.windows import (
    PASSING_FAILURES,
    RecomputeConfig,
    keys_to_recompute,
    now_utc,
    refuse,
    requested_keys,
    unstaged_keys,
    window_text,
)
from partitions import WINDOW, key_of, reporting_windows, window_of
from resources.postgres import PostgresResource

# The entity as described in hrdv/entities.py. What differs from the shared staging: its own
# late-window rule (sql/postgres/staging_interactions_late_windows.sql: only the changes that move
# a figure of mart.interaction_kpi list a window), and the mart below.
INTERACTIONS = STAGED["interactions"]

MART_KEY = AssetKey(["mart", "mart_interaction_kpi"])
MART_TABLE = "mart.interaction_kpi"
# ... and one step at a time writes the marts, so that two runs never write the same window.
MART_POOL = "hrdv_mart"

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

MART_CHECKS = [
    AssetCheckSpec("pandera_schema", asset=MART_KEY, blocking=True, partitions_def=reporting_windows,
                   description="Pandera: types, ranges, window alignment, uniqueness."),
    AssetCheckSpec("totals_match_staging", asset=MART_KEY, blocking=True, partitions_def=reporting_windows,
                   description="Opened and closed totals equal the staging rows of the window."),
]


def _schema_failures(frame: pd.DataFrame) -> pd.DataFrame:
    """Pandera's failure cases of the mart rows (empty when they validate)."""
    try:
        interaction_kpi_schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        return errors.failure_cases
    return pd.DataFrame()


def _pandera_check(key: str, rows: pd.DataFrame, failures: pd.DataFrame) -> AssetCheckEvaluation:
    """The window's own result: failure cases of its rows, or of the whole frame when Pandera
    cannot place them (a frame-level check)."""
    if len(failures):
        index = failures["index"] if "index" in failures else pd.Series(dtype=object)
        own = failures[index.isin(rows.index) | index.isna()]
    else:
        own = failures
    return AssetCheckEvaluation(
        asset_key=MART_KEY, check_name="pandera_schema", partition=key, blocking=True,
        passed=own.empty,
        metadata={"rows": len(rows), "failures": len(own),
                  **({"failure_cases": MetadataValue.md(f"```\n{own.head(20).to_string()}\n```")}
                     if len(own) else {})},
    )


def _totals_check(key: str, totals: tuple) -> AssetCheckEvaluation:
    mart_opened, staging_opened, mart_closed, staging_closed = map(int, totals)
    return AssetCheckEvaluation(
        asset_key=MART_KEY, check_name="totals_match_staging", partition=key, blocking=True,
        passed=mart_opened == staging_opened and mart_closed == staging_closed,
        metadata={"mart_opened": mart_opened, "staging_opened": staging_opened,
                  "mart_closed": mart_closed, "staging_closed": staging_closed},
    )


@dataclass(frozen=True)
class Published:
    """The outcome of one publication: each window's figures and check results."""

    metadata: dict[str, dict]  # key -> the window's own materialisation metadata
    checks: list[AssetCheckEvaluation]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)


def publish_interaction_kpi(db: PostgresResource, keys: Sequence[str]) -> Published:
    """Recompute the mart of the windows `keys` and publish it in one transaction, only if every
    window passes both checks; rolled back otherwise (Published.passed is then False)."""
    started = time.monotonic()
    starts = [window_of(key).start for key in keys]
    params = {"window_starts": starts, "window": WINDOW}
    with db.connect() as conn, conn.cursor() as cur, conn.transaction():
        cur.execute("SET LOCAL TIME ZONE 'UTC'")
        cur.execute(sql_text("postgres/mart_interaction_kpi.sql"), params)
        cur.execute(f"SELECT * FROM {MART_TABLE} WHERE window_start = ANY (%(window_starts)s::timestamptz[]) "
                    "ORDER BY 1, 3, 4", params)
        frame = pd.DataFrame(cur.fetchall(), columns=[c.name for c in cur.description])
        totals = {key_of(row[0]): row[1:] for row in
                  cur.execute(sql_text("postgres/interaction_kpi_totals.sql"), params).fetchall()}
        failures = _schema_failures(frame)
        groups = dict(list(frame.groupby(frame["window_start"].map(key_of)))) if len(frame) else {}
        checks, metadata = [], {}
        for key in keys:
            rows = groups.get(key, frame.iloc[0:0])
            checks += [_pandera_check(key, rows, failures), _totals_check(key, totals[key])]
            metadata[key] = {
                **window_text(window_of(key)),
                "dagster/row_count": len(rows),
                "dagster/table_name": f"hrdv.{MART_TABLE}",
                "opened": int(rows["opened"].sum()),
                "closed": int(rows["closed"].sum()),
            }
        published = Published(metadata, checks)
        if not published.passed:
            raise psycopg.Rollback()
    now = now_utc()
    run_figures = {"windows_in_run": len(keys), "run_duration_s": round(time.monotonic() - started, 3),
                   "published": published.passed}
    for key in keys:
        metadata[key] |= {**run_figures, "published_after_window_end_s":
                          round((now - window_of(key).end).total_seconds(), 1)}
    return published


def _fail_if_rejected(context, published: Published) -> None:
    if not published.passed:
        failed = sorted({f"{c.partition}: {c.check_name}" for c in published.checks if not c.passed})
        context.log.error(f"mart checks failed, rolled back, nothing published: {failed[:20]}")
        raise refuse(f"{MART_TABLE}: blocking checks failed for {len(failed)} window check(s), "
                     f"nothing was published: {failed[:20]}")


@multi_asset(
    name="publish_interaction_kpi",
    specs=[AssetSpec(
        key=MART_KEY,
        deps=[INTERACTIONS.staging_key],
        partitions_def=reporting_windows,
        group_name="interactions",
        owners=OWNERS,
        kinds={"postgres"},
        description=(
            "mart.interaction_kpi: per reporting window x channel x region, interactions opened and "
            "closed, average and p90 resolution time of those closed, and the share resolved at "
            "first contact. Published only when both checks pass for every window of the run."
        ),
        metadata={"dagster/column_schema": MART_COLUMNS, "dagster/table_name": f"hrdv.{MART_TABLE}"},
    )],
    check_specs=MART_CHECKS,
    backfill_policy=BackfillPolicy.single_run(),
    can_subset=True,  # check results are yielded per window as evaluations
    pool=MART_POOL,
    retry_policy=PASSING_FAILURES,
)
def mart_interaction_kpi(context: AssetExecutionContext, hrdv_db: PostgresResource) -> Iterator:
    keys = requested_keys(context)
    unstaged = unstaged_keys(context, keys, INTERACTIONS.staging_key)
    if unstaged:
        raise refuse(f"staging of {len(unstaged)} window(s) has not run ({unstaged[:5]}...): their "
                     f"{MART_TABLE} would not be final; materialise staging too")
    published = publish_interaction_kpi(hrdv_db, keys)
    for key in keys:
        context.add_asset_metadata(published.metadata[key], partition_key=key)
    # Check results first: a run that dies in between leaves its windows unpublished (the lag
    # sensor requests them again), never published with checks that never reported.
    yield from published.checks
    _fail_if_rejected(context, published)
    yield MaterializeResult(asset_key=MART_KEY)


@op(
    name="recompute_interaction_kpi",
    description=(f"Recomputes {MART_TABLE} for exactly the listed windows (late changes), in one "
                 "transaction, recording a materialisation and check results per window."),
    out={},  # it reports materialisations of the mart's partitions, no output
    pool=MART_POOL,
    retry_policy=PASSING_FAILURES,
)
def recompute_interaction_kpi(context: OpExecutionContext, config: RecomputeConfig,
                              hrdv_db: PostgresResource) -> Iterator:
    keys = keys_to_recompute(context, config, INTERACTIONS.staging_key)
    if not keys:
        return
    published = publish_interaction_kpi(hrdv_db, keys)
    yield from published.checks
    _fail_if_rejected(context, published)
    for key in keys:
        yield AssetMaterialization(asset_key=MART_KEY, partition=key, metadata=published.metadata[key])


interaction_assets = [mart_interaction_kpi]

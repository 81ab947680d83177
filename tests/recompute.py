"""What the warehouse should contain, computed independently from the CRM, and the comparisons.

Shared by the end-to-end test and the fault-injection tests:
- `crm_rows` reads the CRM's interactions (the truth); `recompute_kpi` turns such rows into the
  KPI mart with pandas, without any of the pipeline's SQL;
- `assert_same` compares mart rows with that recomputation, `assert_staging_equals` compares
  staging with CRM rows, row for row;
- `backfill` materialises staging and mart over a range of windows in one run, as an operator's
  single-run backfill would; `stage` runs staging's read and upsert over any span, as the asset
  does, so that a test need not wait for a window to close;
- INSERT_INTERACTION_SQL writes one interaction of a test's own (id, channel, subject).
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import psycopg
from dagster import DagsterInstance, materialize
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from hrdv.definitions import ASSETS, KPI_KEYS, WINDOWED, defs
from hrdv.settings import Settings
from hrdv_assets.cdc import Late, read_changes, write_changes
from hrdv_assets.interactions import INTERACTIONS, MART_KEY
from partitions import WINDOW
from resources.clickhouse import ClickHouseResource
from resources.postgres import PostgresResource

KEYS = ["window_start", "channel_code", "region_code"]
MART_COLUMNS = ["opened", "closed", "avg_resolution_s", "p90_resolution_s", "first_contact_resolution_share"]
# The CRM's columns as staging holds them (staging adds is_deleted, lsn and committed_at).
CRM_COLUMNS = [c for c in INTERACTIONS.column_names if c not in ("is_deleted", "lsn", "committed_at")]


def resources() -> dict:
    return dict(defs.resources)


INSERT_INTERACTION_SQL = """
    INSERT INTO interactions (id, customer_id, channel_code, region_code, topic_code, queue_code,
                              subject, created_at, updated_at)
    SELECT %(id)s, c.id, %(channel)s, c.region_code,
           (SELECT code FROM topics WHERE parent_code IS NOT NULL ORDER BY code LIMIT 1),
           (SELECT code FROM queues ORDER BY code LIMIT 1), %(subject)s, now(), now()
    FROM customers c ORDER BY c.id LIMIT 1"""


def stage(settings: Settings, start: datetime, end: datetime, entities=(INTERACTIONS,)) -> dict[str, Late]:
    """Staging's read of the buffer and its upsert over [start, end), with the asset's functions;
    returns the late windows per entity."""
    reads = read_changes(ClickHouseResource(dsn=settings.clickhouse_dsn), entities, start, end)
    return write_changes(PostgresResource(dsn=settings.hrdv_dsn), reads.values(), start, end)


def stage_since(settings: Settings, since: datetime) -> None:
    """stage over [since - 1 min, now + 1 min): everything a test committed since `since`, as the
    next window's run would take it."""
    stage(settings, since - timedelta(minutes=1), datetime.now(timezone.utc) + timedelta(minutes=1))


def backfill(instance: DagsterInstance, first_key: str, last_key: str, kpi: bool = False):
    """Staging and the interaction mart (with kpi: every KPI mart too) of the windows
    first_key..last_key in one run; asserts it succeeded and returns Dagster's result. The KPI
    marts need every earlier window staged: their rules refuse dimension values staging lacks."""
    result = materialize(
        ASSETS, instance=instance, resources=resources(),
        selection=[*WINDOWED, MART_KEY, *(KPI_KEYS if kpi else [])],
        tags={ASSET_PARTITION_RANGE_START_TAG: first_key, ASSET_PARTITION_RANGE_END_TAG: last_key},
    )
    assert result.success, f"backfill {first_key}...{last_key} failed"
    return result


def crm_rows(conn: psycopg.Connection) -> list[tuple]:
    """The CRM's interactions (CRM_COLUMNS), ordered by id. Before migration 001 the CRM has no
    channel_detail, and staging must then hold NULL there."""
    present = {name for (name,) in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'interactions'")}
    selected = [name if name in present else f"NULL AS {name}" for name in CRM_COLUMNS]
    return conn.execute(f"SELECT {', '.join(selected)} FROM interactions ORDER BY id").fetchall()


def recompute_kpi(rows: list[tuple], first: datetime, end: datetime) -> pd.DataFrame:
    """The mart rows of windows in [first, end) that CRM rows (crm_rows) imply, by pandas."""
    crm = pd.DataFrame(rows, columns=CRM_COLUMNS).rename(columns={"resolved_on_first_contact": "fcr"})
    crm["created_at"] = pd.to_datetime(crm["created_at"], utc=True)
    crm["closed_at"] = pd.to_datetime(crm["closed_at"], utc=True)
    opened = (crm.assign(window_start=crm["created_at"].dt.floor(WINDOW))
              .groupby(KEYS).size().rename("opened"))
    done = crm[crm["closed_at"].notna()].copy()
    done["window_start"] = done["closed_at"].dt.floor(WINDOW)
    done["resolution"] = (done["closed_at"] - done["created_at"]).dt.total_seconds()
    done["fcr"] = done["fcr"].fillna(False).astype(float)
    closed = done.groupby(KEYS).agg(
        closed=("resolution", "size"),
        avg_resolution_s=("resolution", "mean"),
        p90_resolution_s=("resolution", lambda s: s.quantile(0.9)),
        first_contact_resolution_share=("fcr", "mean"),
    )
    expected = pd.concat([opened, closed], axis=1).reset_index()
    expected[["opened", "closed"]] = expected[["opened", "closed"]].fillna(0).astype(int)
    inside = (expected["window_start"] >= first) & (expected["window_start"] < end)
    return expected[inside].sort_values(KEYS).reset_index(drop=True)


def recompute_from_crm(settings: Settings, first: datetime, end: datetime) -> pd.DataFrame:
    with psycopg.connect(settings.crm_dsn) as conn:
        return recompute_kpi(crm_rows(conn), first, end)


def mart_rows(settings: Settings, first: datetime, end: datetime) -> pd.DataFrame:
    """mart.interaction_kpi rows of windows in [first, end), ordered like recompute_kpi."""
    with psycopg.connect(settings.hrdv_dsn) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        cur = conn.execute(
            "SELECT window_start, channel_code, region_code, " + ", ".join(MART_COLUMNS) +
            " FROM mart.interaction_kpi WHERE window_start >= %s AND window_start < %s ORDER BY 1, 2, 3",
            (first, end),
        )
        frame = pd.DataFrame(cur.fetchall(), columns=[c.name for c in cur.description])
    frame["window_start"] = pd.to_datetime(frame["window_start"], utc=True)
    return frame


def assert_same(mart: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Mart rows equal the recomputation: same keys, exact counts, measures to 1e-9."""
    assert len(expected) > 0, "nothing to compare: the recomputation has no rows"
    assert mart[KEYS].equals(expected[KEYS]), "the mart has other (window, channel, region) rows"
    for column in ["opened", "closed"]:
        assert (mart[column].astype(int) == expected[column]).all(), column
    for column in ["avg_resolution_s", "p90_resolution_s", "first_contact_resolution_share"]:
        pd.testing.assert_series_equal(mart[column].astype(float), expected[column].astype(float),
                                       check_names=False, rtol=1e-9, atol=1e-6)


def assert_staging_equals(settings: Settings, source: list[tuple]) -> int:
    """Staging's live rows equal the CRM rows `source` (crm_rows), row for row; returns how many
    deleted interactions staging keeps as flagged rows."""
    with psycopg.connect(settings.hrdv_dsn) as hrdv:
        staged = hrdv.execute(f"SELECT {', '.join(CRM_COLUMNS)} FROM staging.interactions "
                              "WHERE NOT is_deleted ORDER BY id").fetchall()
        deleted = hrdv.execute("SELECT count(*) FROM staging.interactions WHERE is_deleted").fetchone()[0]
    if staged != source:
        missing = {row[0] for row in source} - {row[0] for row in staged}
        extra = {row[0] for row in staged} - {row[0] for row in source}
        differ = [a[0] for a, b in zip(staged, source) if a != b][:10]
        raise AssertionError(f"staging differs from the CRM: {len(staged)} vs {len(source)} rows, "
                             f"missing ids {sorted(missing)[:10]}, extra {sorted(extra)[:10]}, "
                             f"first differing ids {differ}")
    return deleted


# --- every entity ----------------------------------------------------------------------------------
def _entity_select(entity, present: set[str] | None = None):
    """The staged columns, jsonb as the text Debezium sends; NULL for a column the CRM has not
    added yet (channel_detail before CRM migration 001), as staging holds it."""
    from psycopg import sql

    def one(column):
        if present is not None and column.name not in present:
            return sql.SQL("NULL")
        return sql.SQL("{}::text" if column.type == "jsonb" else "{}").format(sql.Identifier(column.name))
    return sql.SQL(", ").join(one(c) for c in entity.staged)


def crm_entity_rows(crm: psycopg.Connection, entity) -> list[tuple]:
    """The CRM table of `entity` (hrdv.entities.Entity) as staging must hold it, ordered by key."""
    from psycopg import sql

    present = {name for (name,) in crm.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s", [entity.name])}
    return crm.execute(sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
        _entity_select(entity, present), sql.Identifier(entity.name), sql.Identifier(entity.key))).fetchall()


def assert_entity_staged(hrdv: psycopg.Connection, entity, source: list[tuple]) -> int:
    """staging.<entity>'s live rows equal `source` (crm_entity_rows) row for row; returns the count."""
    from psycopg import sql

    staged = hrdv.execute(sql.SQL("SELECT {} FROM staging.{} WHERE NOT is_deleted ORDER BY {}").format(
        _entity_select(entity), sql.Identifier(entity.name), sql.Identifier(entity.key))).fetchall()
    missing = {row[0] for row in source} - {row[0] for row in staged}
    extra = {row[0] for row in staged} - {row[0] for row in source}
    assert not missing and not extra, (f"{entity.name}: keys not staged {sorted(missing)[:5]}, "
                                       f"staged but not in the CRM {sorted(extra)[:5]}")
    differing = [(a, b) for a, b in zip(source, staged) if a != b]
    assert not differing, (f"{entity.name}: {len(differing)} rows differ, e.g. CRM {differing[0][0]} "
                           f"staged {differing[0][1]}")
    return len(source)

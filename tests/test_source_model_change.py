"""CRM migration 001 applied while the live generator writes, on the real stack: the new column
interactions.channel_detail flows into ClickHouse and staging without a restart, and the renamed
status 'in_work' is reported by staging's check statuses_known until the known set has it.

Uses the shared session `stack` (conftest). Like test_crm_live_pipeline, it deletes the
interactions it created before it ends, so that the end-to-end windows see nothing of them. The
generator also carries on interactions left open by other tests (and the migration renames theirs):
the comparisons are on the interactions created here, the status count on all.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from datetime import datetime, timezone

import psycopg
import pytest
from dagster import AssetCheckSeverity, DagsterInstance, materialize
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from hrdv import clickhouse
from hrdv.crm import live, migrate
from hrdv.crm.behaviour import Behaviour, scaled
from hrdv.definitions import defs
from hrdv_assets.cdc import build_cdc_assets
from hrdv_assets.interactions import INTERACTIONS
from partitions import reporting_windows, window_of
from test_crm_live_pipeline import ENGINEERS_SQL

pytestmark = pytest.mark.stack

BEFORE_001 = tuple(s for s in INTERACTIONS.known_statuses if s != "in_work")
CREATED_SQL = "SELECT id, status, channel_detail FROM interactions WHERE created_at >= %s ORDER BY id"


def _buffer_versions(dsn: str, ids: list[int]) -> list[tuple]:
    with clickhouse.session(dsn) as client:
        return [tuple(row) for row in client.query(
            "SELECT id, status, channel_detail FROM (SELECT * FROM hrdv.interactions_buffer "
            "WHERE id IN {ids:Array(Int64)} ORDER BY id, lsn DESC LIMIT 1 BY id) WHERE NOT is_deleted",
            parameters={"ids": ids}).result_rows]


# Rows of the test's own beside the generator's: the generator first advances interactions that
# earlier tests left open (thousands after the fault tests), and may create none of its own in 12 s.
# The generator numbers from max(id) + 1 when it starts: the rows before it starts take ids above
# those written later (negative: below every generated id when the CRM has any).
BEFORE_IDS, AFTER_IDS = range(-5 * 10**11 + 10, -5 * 10**11 + 13), range(-5 * 10**11, -5 * 10**11 + 3)
DIRECT_SQL = """
    INSERT INTO interactions (id, customer_id, channel_code, region_code, topic_code, queue_code,
                              status, operator_id, subject, created_at, updated_at {detail_column})
    SELECT %(id)s, c.id, 'chat', c.region_code,
           (SELECT code FROM topics WHERE parent_code IS NOT NULL ORDER BY code LIMIT 1),
           (SELECT code FROM queues ORDER BY code LIMIT 1), %(status)s,
           (SELECT id FROM employees WHERE role = 'operator' ORDER BY id LIMIT 1),
           'source-model test', clock_timestamp(), clock_timestamp() {detail_value}
    FROM customers c ORDER BY c.id LIMIT 1"""


def _insert_direct(crm_dsn: str, ids: range, status: str, detail: str | None) -> None:
    extra = ("", "") if detail is None else (", channel_detail", ", %(detail)s")
    statement = DIRECT_SQL.format(detail_column=extra[0], detail_value=extra[1])
    with psycopg.connect(crm_dsn, autocommit=True) as conn:
        for item in ids:
            conn.execute(statement, {"id": item, "status": status, "detail": detail})


def _write_with_migration_midway(crm_dsn: str) -> None:
    """12 s of live changes (ten hours of lifecycle a minute), migration 001 after 5 s, and the
    test's own rows on either side of it: 'in_progress' ones before (the migration renames them),
    ones with a channel_detail after."""
    _insert_direct(crm_dsn, BEFORE_IDS, "in_progress", None)
    writer = threading.Thread(target=live.run_live, kwargs=dict(
        dsn=crm_dsn, rate=300, duration=12, seed=31, behaviour=scaled(Behaviour(), 1 / 600),
        progress_every=60))
    writer.start()
    time.sleep(5)
    assert migrate.apply(crm_dsn, "001")
    _insert_direct(crm_dsn, AFTER_IDS, "in_work", "telegram")
    writer.join()


def _stage(entity, first: str, last: str):
    """Materialise the staging of `entity` alone over windows first..last (one run)."""
    result = materialize(
        build_cdc_assets([entity]), instance=DagsterInstance.ephemeral(), selection=[entity.staging_key],
        resources=dict(defs.resources),
        tags={ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last})
    assert result.success
    return [c for c in result.get_asset_check_evaluations() if c.check_name == "statuses_known"]


def _wait_for_window_end(moment: datetime) -> str:
    """The key of the window holding `moment`, once it has closed (its partition exists)."""
    key = reporting_windows.get_partition_key_for_timestamp(moment.timestamp())
    time.sleep(max(0.0, (window_of(key).end - datetime.now(timezone.utc)).total_seconds() + 1))
    return key


def test_migration_001_mid_stream_reaches_staging(stack) -> None:
    settings = stack
    with psycopg.connect(settings.crm_dsn) as conn:
        conn.execute(ENGINEERS_SQL)
        started = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # the CRM's clock
    try:
        _write_with_migration_midway(settings.crm_dsn)
        written = datetime.now(timezone.utc)
        with psycopg.connect(settings.crm_dsn) as conn:
            crm = [tuple(row) for row in conn.execute(CREATED_SQL, (started,))]
            in_work = conn.execute("SELECT count(*) FROM interactions WHERE status = 'in_work'").fetchone()[0]
        details = [detail for _, _, detail in crm]
        assert None in details and any(details), "need rows from before and after the migration"
        assert in_work > 0, "no interaction reached 'in_work' after the migration"

        deadline = time.monotonic() + 40
        ids = [row[0] for row in crm]
        while (buffered := _buffer_versions(settings.clickhouse_dsn, ids)) != crm:
            assert time.monotonic() < deadline, (
                f"the buffer differs from the CRM after 40 s: {set(buffered) ^ set(crm)}")
            time.sleep(1)

        first = reporting_windows.get_partition_key_for_timestamp(started.timestamp())
        last = _wait_for_window_end(written)
        # Before the known set had 'in_work', staging warned with its count (and staged all).
        # Each window reports its own: the ids whose latest change in it has the new status.
        old = _stage(dataclasses.replace(INTERACTIONS, known=BEFORE_001), first, last)
        warned = [check for check in old if not check.passed]
        assert warned and all(check.severity == AssetCheckSeverity.WARN for check in warned)
        assert all(set(check.metadata["unknown"].value) == {"in_work"} for check in warned)
        assert sum(check.metadata["unknown"].value["in_work"] for check in warned) >= in_work

        with psycopg.connect(settings.hrdv_dsn) as conn:
            staged = [tuple(row) for row in conn.execute(
                "SELECT id, status, channel_detail FROM staging.interactions "
                "WHERE id = ANY(%s) AND NOT is_deleted ORDER BY id", (ids,))]
        assert staged == crm  # channel_detail NULL before the migration, its value after

        # With 'in_work' known (as INTERACTIONS declares since migration 001), the check passes.
        assert all(check.passed for check in _stage(INTERACTIONS, first, last))
    finally:
        with psycopg.connect(settings.crm_dsn) as conn:
            created = "SELECT id FROM interactions WHERE created_at >= %(started)s"
            conn.execute(f"DELETE FROM work_orders WHERE interaction_id IN ({created})", {"started": started})
            conn.execute(f"UPDATE claims SET interaction_id = NULL WHERE interaction_id IN ({created})",
                         {"started": started})
            conn.execute("DELETE FROM interactions WHERE created_at >= %(started)s", {"started": started})

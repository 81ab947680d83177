"""The live and replay drivers against a real PostgreSQL: determinism, the source-model change
applied while the live stream runs, and the lifecycle order of everything they wrote.

Durations are compressed (behaviour.scaled: one hour of lifecycle per second) so that a few
seconds of live load close interactions, reopen and correct them, and drive work orders and
claims through their states.
"""
from __future__ import annotations

import math
import threading
import time
from datetime import datetime, timezone

import psycopg
import pytest

from crm_pg import REPLAY_DAY, copy_seed
from hrdv.crm import behaviour as bh
from hrdv.crm import live, migrate

START = datetime(2026, 11, 25, 7, 0, tzinfo=timezone.utc)  # 10:00 in Moscow: a busy hour
FAST = bh.scaled(bh.Behaviour(claim_share=0.2, claim_delay_median_s=1800, reopen_share=0.2,
                              reopen_median_s=1800, correction_share=0.2, test_record_share=0.02,
                              incidents_per_day=20), 1 / 3600)

SNAPSHOT = {  # what must repeat exactly; live timestamps are the CRM's clock, so not those
    "interactions": "id, customer_id, channel_code, region_code, topic_code, queue_code, status, "
                    "operator_id, subject, previous_interaction_id, reopen_count, "
                    "resolved_on_first_contact, closed_at IS NULL",
    "work_orders": "id, interaction_id, customer_id, type, priority, service_area_code, engineer_id, "
                   "status, reassign_count, postpone_count",
    "claims": "id, customer_id, interaction_id, category, amount_claimed, status, outcome",
}


def _snapshot(dsn: str, with_times: bool = False) -> dict[str, list[tuple]]:
    with psycopg.connect(dsn) as conn:
        return {table: conn.execute(f"SELECT {'*' if with_times else columns} FROM {table} "
                                    "ORDER BY id").fetchall()
                for table, columns in SNAPSHOT.items()}


def test_live_same_seed_same_changes(fresh_crm) -> None:
    runs = []
    for seed in (5, 5, 6):
        dsn = fresh_crm()
        stats = live.run_live(dsn, rate=4000, max_changes=4000, seed=seed, behaviour=FAST,
                              start=START, progress_every=60)
        runs.append((stats.actions, _snapshot(dsn)))
    assert runs[0] == runs[1]
    assert runs[0][1] != runs[2][1], "another seed should give other data"
    actions = runs[0][0]
    assert actions["interactions.insert"] > 500 and actions["interactions.update"] > 1000
    assert actions["work_orders.insert"] > 0 and actions["work_orders.update"] > 0


def test_replay_same_seed_same_rows_and_times(fresh_crm) -> None:
    b = bh.Behaviour(contacts_per_customer_day=0.4)
    first, second = fresh_crm(), fresh_crm()
    for dsn in (first, second):
        live.run_replay(dsn, REPLAY_DAY, speedup=math.inf, seed=9, behaviour=b,
                        changes_per_transaction=50, progress_every=60)
    assert _snapshot(first, with_times=True) == _snapshot(second, with_times=True)
    day_start = datetime.combine(REPLAY_DAY, datetime.min.time(), live.MOSCOW)
    with psycopg.connect(first) as conn:
        low, high, n = conn.execute("SELECT min(created_at), max(updated_at), count(*) FROM interactions "
                                    "WHERE created_at >= %s", (day_start,)).fetchone()
    assert n > 500
    assert day_start <= low and (high - day_start).total_seconds() <= 86400  # backdated, in the day
    _assert_lifecycle_order(first)


@pytest.fixture(scope="module")
def migrated_mid_run(crm_cluster) -> dict:
    """A live run of 5 s at 1 500 changes/s; migration 001 is applied 2 s in."""
    dsn = copy_seed(crm_cluster, "crm_live_migration")
    with psycopg.connect(dsn) as conn:
        before = conn.execute("SELECT clock_timestamp(), coalesce(max(id), 0) FROM interactions").fetchone()
    result: dict = {"dsn": dsn, "began": before[0], "seed_max_id": before[1]}
    thread = threading.Thread(target=lambda: result.update(stats=live.run_live(
        dsn, rate=1500, duration=5, seed=3, behaviour=FAST, progress_every=60)))
    thread.start()
    time.sleep(2)
    result["applied"] = migrate.apply(dsn, "001")
    with psycopg.connect(dsn) as conn:
        result["boundary"] = conn.execute("SELECT max(id) FROM interactions").fetchone()[0]
    result["applied_again"] = migrate.apply(dsn, "001")
    thread.join(30)
    with psycopg.connect(dsn) as conn:
        result["ended"] = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    return result


def test_migration_is_applied_once(migrated_mid_run) -> None:
    assert migrated_mid_run["applied"] is True and migrated_mid_run["applied_again"] is False
    with psycopg.connect(migrated_mid_run["dsn"]) as conn:
        assert migrate.applied(conn) == ["001_interactions_channel_detail_and_status_rename"]


def test_live_notices_the_migration_while_running(migrated_mid_run) -> None:
    """Every interaction the generator created before the migration committed lacks
    channel_detail, every one after has it: the ids split cleanly. And once migrated, nothing
    says 'in_progress' any more (the migration renamed the old ones, the generator the new)."""
    stats = migrated_mid_run["stats"]
    assert stats.migration_seen_at is not None and 0 < stats.migration_seen_at < stats.changes
    with psycopg.connect(migrated_mid_run["dsn"]) as conn:
        statuses = dict(conn.execute("SELECT status, count(*) FROM interactions GROUP BY 1").fetchall())
        without, last_without, with_detail, first_with = conn.execute("""SELECT
            count(*) FILTER (WHERE channel_detail IS NULL), max(id) FILTER (WHERE channel_detail IS NULL),
            count(*) FILTER (WHERE channel_detail IS NOT NULL), min(id) FILTER (WHERE channel_detail IS NOT NULL)
            FROM interactions WHERE id > %s""", (migrated_mid_run["seed_max_id"],)).fetchone()
    assert "in_progress" not in statuses and statuses.get("in_work", 0) > 0
    assert without > 100 and with_detail > 100
    assert last_without < first_with <= migrated_mid_run["boundary"] + 1


def test_live_timestamps_are_the_crms_clock(migrated_mid_run) -> None:
    with psycopg.connect(migrated_mid_run["dsn"]) as conn:
        low, high = conn.execute("SELECT min(created_at), max(updated_at) FROM interactions "
                                 "WHERE id > %s", (migrated_mid_run["seed_max_id"],)).fetchone()
    assert migrated_mid_run["began"] <= low <= high <= migrated_mid_run["ended"]


def test_live_lifecycles(migrated_mid_run) -> None:
    actions = migrated_mid_run["stats"].actions
    for kind in ("interactions.insert", "interactions.update", "interactions.delete",
                 "work_orders.insert", "work_orders.update", "claims.insert"):
        assert actions[kind] > 0, kind
    _assert_lifecycle_order(migrated_mid_run["dsn"])


VIOLATIONS = {
    "interaction responded before created or closed before its response": """
        SELECT count(*) FROM interactions WHERE first_response_at < created_at
            OR closed_at < coalesce(first_response_at, created_at) OR updated_at < created_at""",
    "status disagrees with the timestamps": """
        SELECT count(*) FROM interactions WHERE (status = 'closed') <> (closed_at IS NOT NULL)
            OR (status IN ('in_progress', 'in_work', 'closed', 'reopened') AND first_response_at IS NULL)
            OR (status = 'new' AND (operator_id IS NOT NULL OR first_response_at IS NOT NULL))
            OR (status = 'reopened' AND reopen_count = 0)
            OR status NOT IN ('new', 'assigned', 'in_progress', 'in_work', 'reopened', 'closed')""",
    "repeat of a later interaction": """
        SELECT count(*) FROM interactions i JOIN interactions p ON p.id = i.previous_interaction_id
        WHERE p.created_at > i.created_at OR p.customer_id <> i.customer_id""",
    "work order without its interaction or before its first response": """
        SELECT count(*) FROM work_orders w LEFT JOIN interactions i ON i.id = w.interaction_id
        WHERE i.id IS NULL OR w.created_at < coalesce(i.first_response_at, i.created_at)
            OR w.customer_id <> i.customer_id""",
    "work order states out of order": """
        SELECT count(*) FROM work_orders WHERE completed_at < assigned_at
            OR (status = 'done') <> (completed_at IS NOT NULL)
            OR (status = 'cancelled') <> (cancelled_at IS NOT NULL)
            OR (status <> 'new' AND status <> 'cancelled' AND engineer_id IS NULL)
            OR sla_due_at <= created_at""",
    "claim before its interaction closed": """
        SELECT count(*) FROM claims c JOIN interactions i ON i.id = c.interaction_id
        WHERE c.created_at < i.created_at OR (i.closed_at IS NOT NULL AND c.created_at < i.closed_at)
            OR (c.status IN ('resolved', 'rejected')) <> (c.resolved_at IS NOT NULL)
            OR c.regulatory_due_at <= c.created_at""",
}


def _assert_lifecycle_order(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        found = {name: conn.execute(query).fetchone()[0] for name, query in VIOLATIONS.items()}
    assert found == {name: 0 for name in VIOLATIONS}

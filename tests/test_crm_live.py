"""The live and replay drivers against a real PostgreSQL: determinism, the source-model change
applied while the live stream runs, and the lifecycle order of everything they wrote.

Durations are compressed (behaviour.scaled: one hour of lifecycle per second) so that a few
seconds of live load close interactions, reopen and correct them, and drive work orders and
claims through their states.
"""
from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from collections import Counter
from datetime import datetime, timezone

import psycopg
import pytest

from crm_pg import REPLAY_DAY, copy_seed
from hrdv.crm import behaviour as bh
from hrdv.crm import live, migrate, reference

START = datetime(2026, 11, 25, 7, 0, tzinfo=timezone.utc)  # 10:00 in Moscow: a busy hour
FAST = bh.scaled(bh.Behaviour(claim_share=0.2, claim_delay_median_s=1800, reopen_share=0.2,
                              reopen_median_s=1800, correction_share=0.2, test_record_share=0.02,
                              incidents_per_day=20), 1 / 3600)

# Every kind of reference change, often enough that each shows in ~2 000 changes.
REF_FAST = dataclasses.replace(FAST, reference_change_share=0.25,
                               reference_change_mix={kind: 1.0 for kind in bh.REFERENCE_CHANGE_KINDS})

SNAPSHOT = {  # what must repeat exactly; live timestamps are the CRM's clock, so not those
    "interactions": "id, customer_id, channel_code, region_code, topic_code, queue_code, status, "
                    "operator_id, subject, previous_interaction_id, reopen_count, "
                    "resolved_on_first_contact, closed_at IS NULL, abandoned_at IS NULL, transfer_count",
    "work_orders": "id, interaction_id, customer_id, type, priority, service_area_code, engineer_id, "
                   "status, reassign_count, postpone_count",
    "claims": "id, customer_id, interaction_id, category, amount_claimed, status, outcome",
}
REFERENCE_SNAPSHOT = {  # table -> (key, columns): what reference changes touch (and personal data)
    "customers": ("id", "id, full_name, region_code, segment, branch_code, tariff_code, status"),
    "contact_persons": ("id", "id, customer_id, full_name, phone, email, consent_sms, consent_email, "
                              "is_primary"),
    "employees": ("id", "id, full_name, role, site, skill_group, region_code, service_area_code, "
                        "specialisation, shift"),
    "queues": ("code", "code, skill_group, routing_rule::text"),
    "branches": ("code", "code, name, region_code"),
    "service_areas": ("code", "code, name, branch_code"),
}


def _snapshot(dsn: str, with_times: bool = False) -> dict[str, list[tuple]]:
    with psycopg.connect(dsn) as conn:
        facts = {table: conn.execute(f"SELECT {'*' if with_times else columns} FROM {table} "
                                     "ORDER BY id").fetchall()
                 for table, columns in SNAPSHOT.items()}
        return facts | {table: conn.execute(f"SELECT {'*' if with_times else columns} FROM {table} "
                                            f"ORDER BY {key}").fetchall()
                        for table, (key, columns) in REFERENCE_SNAPSHOT.items()}


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
    b = bh.Behaviour(contacts_per_customer_day=0.4, reference_change_share=0.05)
    first, second = fresh_crm(), fresh_crm()
    for dsn in (first, second):
        stats = live.run_replay(dsn, REPLAY_DAY, speedup=math.inf, seed=9, behaviour=b,
                                changes_per_transaction=50, progress_every=60)
    assert _snapshot(first, with_times=True) == _snapshot(second, with_times=True)
    day_start = datetime.combine(REPLAY_DAY, datetime.min.time(), live.MOSCOW)
    with psycopg.connect(first) as conn:
        low, high, n = conn.execute("SELECT min(created_at), max(updated_at), count(*) FROM interactions "
                                    "WHERE created_at >= %s", (day_start,)).fetchone()
        new = conn.execute("""SELECT min(t), max(t), count(*) FROM (
            SELECT registered_at AS t FROM customers WHERE registered_at >= %(day)s
            UNION ALL SELECT hired_at FROM employees WHERE hired_at >= %(day)s) x""",
                           {"day": day_start}).fetchone()
    assert n > 500
    assert day_start <= low and (high - day_start).total_seconds() <= 86400  # backdated, in the day
    # reference changes too, at simulated instants of the day (sign-ups and hires show them)
    assert stats.actions["customers.insert"] > 0 and stats.actions["customers.update"] > 0
    assert new[2] > 0 and day_start <= new[0] and (new[1] - day_start).total_seconds() <= 86400
    _assert_lifecycle_order(first)
    # operators' states over the replayed day: backdated, sound, and the same with the seed
    assert stats.actions["operator_states.insert"] > 0
    _assert_states_sound(first)
    with psycopg.connect(first) as a, psycopg.connect(second) as b:
        states = [c.execute("SELECT * FROM operator_states ORDER BY id").fetchall() for c in (a, b)]
    assert states[0] == states[1]


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
            OR status NOT IN ('new', 'assigned', 'in_progress', 'in_work', 'reopened', 'closed', 'abandoned')""",
    "abandoned contact answered, closed or transferred, or abandoned before it was created": """
        SELECT count(*) FROM interactions WHERE (status = 'abandoned') <> (abandoned_at IS NOT NULL)
            OR (status = 'abandoned' AND (operator_id IS NOT NULL OR first_response_at IS NOT NULL
                OR closed_at IS NOT NULL OR coalesce(resolved_on_first_contact, false)
                OR transfer_count > 0 OR abandoned_at <= created_at OR updated_at < abandoned_at))""",
    "transferred to another channel's queue, before the answer, or more than twice": """
        SELECT count(*) FROM interactions i LEFT JOIN queues q ON q.code = i.queue_code
        WHERE q.channel_code IS DISTINCT FROM i.channel_code OR i.transfer_count NOT BETWEEN 0 AND 2
            OR (i.transfer_count > 0 AND i.first_response_at IS NULL)""",
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


def test_live_abandons_and_transfers(fresh_crm) -> None:
    """Calls and chats abandoned in the queue (never answered), answered contacts transferred to
    another queue of their channel, and each transfer is one UPDATE of queue_code,
    transfer_count and updated_at (operator_id stays who answered)."""
    dsn = fresh_crm()
    b = dataclasses.replace(FAST, reference_change_share=0.0)  # operators keep their skill groups
    with psycopg.connect(dsn, autocommit=True) as conn:
        first = conn.execute("SELECT coalesce(max(id), 0) FROM interactions").fetchone()[0]
        conn.execute(AUDIT_UPDATES)
    live.run_live(dsn, rate=4000, max_changes=8000, seed=21, behaviour=b, start=START, progress_every=60)
    _assert_lifecycle_order(dsn)
    with psycopg.connect(dsn) as conn:
        abandoned = dict(conn.execute("""SELECT channel_code, count(*) FROM interactions
            WHERE id > %s AND status = 'abandoned' GROUP BY 1""", [first]).fetchall())
        assert set(abandoned) == {"call", "chat"} and abandoned["call"] > abandoned["chat"] > 0, abandoned
        routed = conn.execute("""SELECT i.id, i.channel_code, i.topic_code, i.queue_code, i.transfer_count,
                e.skill_group IN (SELECT skill_group FROM queues WHERE channel_code = i.channel_code)
            FROM interactions i LEFT JOIN employees e ON e.id = i.operator_id
            WHERE i.id > %s AND i.transfer_count > 0""", [first]).fetchall()
        assert len(routed) > 20 and {channel for _, channel, *_ in routed} <= {"call", "chat", "messenger"}
        assert any(count == 2 for *_, count, _ in routed)
        for iid, channel, topic, queue, count, operator_in_queue in routed:
            if count == 1:  # the routing rule's queue is where it came from
                assert queue != reference.queue_for(channel, topic), iid
            assert operator_in_queue, iid  # who answered it, in a queue of its channel
        untransferred = conn.execute("""SELECT count(*) FILTER (WHERE queue_code <> (%s::jsonb ->> (channel_code || ' ' || split_part(topic_code, '.', 1)))),
                count(*) FROM interactions WHERE id > %s AND transfer_count = 0""",
                                     [json.dumps({f"{c} {t}": reference.queue_for(c, t) for c in reference.CHANNEL_MIX
                                                  for t in reference.TOPIC_SKILL}), first]).fetchone()
        assert untransferred[0] == 0 and untransferred[1] > 1000
        # every transfer is one UPDATE that changes the queue and counts it, and nothing else but
        # updated_at
        changes = conn.execute("""SELECT old_row, new_row FROM hrdv_test_updates
            WHERE (new_row ->> 'transfer_count')::int > (old_row ->> 'transfer_count')::int""").fetchall()
        assert len(changes) >= len(routed)
        for old, new in changes:
            assert int(new["transfer_count"]) == int(old["transfer_count"]) + 1
            assert new["queue_code"] != old["queue_code"] and new["updated_at"] != old["updated_at"]
            assert {k for k in new if new[k] != old[k]} == {"queue_code", "transfer_count", "updated_at"}


# Every UPDATE of interactions, old and new row, for the transfer test.
AUDIT_UPDATES = """
CREATE TABLE hrdv_test_updates (seq bigserial PRIMARY KEY, old_row jsonb, new_row jsonb);
CREATE FUNCTION hrdv_test_updates() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO hrdv_test_updates (old_row, new_row) VALUES (to_jsonb(OLD), to_jsonb(NEW));
    RETURN NULL;
END $$;
CREATE TRIGGER hrdv_test_updates AFTER UPDATE ON interactions
    FOR EACH ROW EXECUTE FUNCTION hrdv_test_updates();
"""


def test_replay_abandons_within_seconds_to_minutes(fresh_crm) -> None:
    """Replayed (simulated) times: abandoned after creation, mostly within minutes, some of them
    within 5 s (the short abandons)."""
    dsn = fresh_crm()
    live.run_replay(dsn, REPLAY_DAY, speedup=math.inf, seed=9,
                    behaviour=bh.Behaviour(contacts_per_customer_day=0.5), changes_per_transaction=50,
                    progress_every=60)
    with psycopg.connect(dsn) as conn:
        waits = [row[0] for row in conn.execute(
            "SELECT extract(epoch FROM abandoned_at - created_at)::float8 FROM interactions "
            "WHERE status = 'abandoned'")]
    assert len(waits) > 20 and min(waits) > 0
    assert 0 < sum(w < 5 for w in waits) < len(waits) / 2
    assert sum(w < 600 for w in waits) / len(waits) > 0.9


def _assert_lifecycle_order(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        found = {name: conn.execute(query).fetchone()[0] for name, query in VIOLATIONS.items()}
    assert found == {name: 0 for name in VIOLATIONS}


# --- reference entities: customers, contact persons, employees, queues, branches, service areas --

def _reference_rows(dsn: str) -> dict[str, dict]:
    with psycopg.connect(dsn, row_factory=psycopg.rows.dict_row) as conn:
        return {table: {row[key]: row for row in conn.execute(f"SELECT {columns} FROM {table}")}
                for table, (key, columns) in REFERENCE_SNAPSHOT.items()}


@pytest.fixture(scope="module")
def reference_runs(crm_cluster) -> list[dict]:
    """Two live runs of 2 000 changes with the same seed, every kind of reference change
    frequent (REF_FAST), with the reference rows before and after each."""
    runs = []
    for name in ("crm_live_reference_a", "crm_live_reference_b"):
        dsn = copy_seed(crm_cluster, name)
        before = _reference_rows(dsn)
        with psycopg.connect(dsn) as conn:
            began = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        stats = live.run_live(dsn, rate=4000, max_changes=2000, seed=11, behaviour=REF_FAST,
                              start=START, progress_every=60)
        runs.append({"dsn": dsn, "before": before, "after": _reference_rows(dsn), "stats": stats,
                     "began": began})
    return runs


def _changed(before: dict, after: dict, table: str, *columns: str) -> list[tuple[dict, dict]]:
    """(old, new) of the rows of `table` in both snapshots that differ in one of `columns`."""
    old, new = before[table], after[table]
    return [(old[k], new[k]) for k in old.keys() & new.keys()
            if any(old[k][c] != new[k][c] for c in columns)]


def _reference_kinds(before: dict, after: dict) -> Counter:
    """How many rows each kind of reference change touched, from the rows themselves."""
    kinds: Counter = Counter()
    new_employees = [after["employees"][k] for k in after["employees"].keys() - before["employees"].keys()]
    kinds["customer_signup"] = len(after["customers"].keys() - before["customers"].keys())
    for kind, column in (("customer_tariff", "tariff_code"), ("customer_status", "status"),
                         ("customer_segment", "segment"), ("customer_move", "branch_code")):
        kinds[kind] = len(_changed(before, after, "customers", column))
    kinds["contact_consent"] = len(_changed(before, after, "contact_persons", "consent_sms", "consent_email"))
    kinds["contact_primary"] = len(_changed(before, after, "contact_persons", "is_primary"))
    kinds["contact_delete"] = len(before["contact_persons"].keys() - after["contact_persons"].keys())
    kinds["operator_hire"] = sum(e["role"] == "operator" for e in new_employees)
    kinds["engineer_hire"] = sum(e["role"] == "engineer" for e in new_employees)
    moved = _changed(before, after, "employees", "skill_group", "site", "shift", "service_area_code")
    kinds["operator_move"] = sum(old["role"] == "operator" for old, _ in moved)
    kinds["engineer_move"] = sum(old["role"] == "engineer" for old, _ in moved)
    kinds["queue_change"] = len(_changed(before, after, "queues", "skill_group", "routing_rule"))
    kinds["branch_rename"] = len(_changed(before, after, "branches", "name"))
    kinds["area_rename"] = len(_changed(before, after, "service_areas", "name"))
    kinds["area_move"] = len(_changed(before, after, "service_areas", "branch_code"))
    return kinds


def test_every_kind_of_reference_change_happens(reference_runs) -> None:
    run = reference_runs[0]
    kinds = _reference_kinds(run["before"], run["after"])
    print(f"\nreference changes in 2 000 live changes, rows per kind: {dict(kinds)}\n"
          f"{run['stats'].reference_summary()}")
    assert {kind: n for kind, n in kinds.items() if n == 0} == {}
    assert set(kinds) == set(bh.REFERENCE_CHANGE_KINDS)
    actions, rows = run["stats"].actions, run["after"]
    # Stats counts what the database shows (inserts and deletes exactly; a row may change twice)
    assert actions["customers.insert"] == kinds["customer_signup"]
    assert actions["contact_persons.insert"] == len(rows["contact_persons"].keys() - run["before"]["contact_persons"].keys())
    assert actions["contact_persons.delete"] == kinds["contact_delete"]
    assert actions["employees.insert"] == kinds["operator_hire"] + kinds["engineer_hire"]
    assert actions["customers.update"] >= sum(kinds[k] for k in kinds if k.startswith("customer_")) - kinds["customer_signup"]
    for table in ("queues", "branches", "service_areas", "employees", "contact_persons"):
        assert actions[f"{table}.update"] > 0, table
    assert actions["interactions.insert"] > 100 and actions["work_orders.insert"] > 0  # lifecycles go on


REFERENCE_VIOLATIONS = {
    "customer in a branch of another region": """SELECT count(*) FROM customers c
        JOIN branches b ON b.code = c.branch_code WHERE b.region_code <> c.region_code""",
    "customer without exactly one primary contact person": """SELECT count(*) FROM customers c
        WHERE (SELECT count(*) FILTER (WHERE is_primary) FROM contact_persons p WHERE p.customer_id = c.id) <> 1""",
    "e-mail consent without an e-mail": "SELECT count(*) FROM contact_persons WHERE consent_email AND email IS NULL",
    "status outside its set": "SELECT count(*) FROM customers WHERE status NOT IN ('active', 'suspended', 'closed')",
    "engineer outside their service area's region": """SELECT count(*) FROM employees e
        JOIN service_areas s ON s.code = e.service_area_code JOIN branches b ON b.code = s.branch_code
        WHERE b.region_code <> e.region_code""",
    "operator without skill group or engineer without service area": """SELECT count(*) FROM employees
        WHERE (role = 'operator' AND skill_group IS NULL) OR (role = 'engineer' AND service_area_code IS NULL)""",
    "queue whose skill group has no operator": """SELECT count(*) FROM queues q WHERE NOT EXISTS
        (SELECT 1 FROM employees e WHERE e.role = 'operator' AND e.skill_group = q.skill_group)""",
    "branch without service areas": """SELECT count(*) FROM branches b
        WHERE NOT EXISTS (SELECT 1 FROM service_areas s WHERE s.branch_code = b.code)""",
    "work order in a service area of another region than its interaction": """SELECT count(*)
        FROM work_orders w JOIN interactions i ON i.id = w.interaction_id
        JOIN service_areas s ON s.code = w.service_area_code JOIN branches b ON b.code = s.branch_code
        WHERE b.region_code <> i.region_code""",
}


def test_reference_changes_keep_the_crm_sound(reference_runs) -> None:
    run = reference_runs[0]
    with psycopg.connect(run["dsn"]) as conn:
        found = {name: conn.execute(query).fetchone()[0] for name, query in REFERENCE_VIOLATIONS.items()}
    assert found == {name: 0 for name in REFERENCE_VIOLATIONS}
    before, after = run["before"], run["after"]
    branch_region = {code: row["region_code"] for code, row in after["branches"].items()}
    for old, new in _changed(before, after, "customers", "branch_code", "region_code"):  # same region
        assert old["region_code"] == new["region_code"] == branch_region[new["branch_code"]]
    for old, new in _changed(before, after, "service_areas", "branch_code"):
        assert branch_region[old["branch_code"]] == branch_region[new["branch_code"]]
    for old, new in _changed(before, after, "customers", "status"):  # closed is for good
        assert (old["status"], new["status"]) in {("active", "suspended"), ("active", "closed"),
                                                  ("suspended", "active"), ("suspended", "closed")}
    _assert_lifecycle_order(run["dsn"])


def test_reference_changes_repeat_with_the_seed(reference_runs) -> None:
    first, second = reference_runs
    assert first["stats"].actions == second["stats"].actions
    assert first["after"] == second["after"]
    assert _snapshot(first["dsn"]) == _snapshot(second["dsn"])


def test_new_reference_rows_carry_the_crms_clock(reference_runs) -> None:
    run = reference_runs[0]
    with psycopg.connect(run["dsn"]) as conn:
        ended = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        customers = conn.execute("SELECT min(registered_at), max(registered_at) FROM customers "
                                 "WHERE id > %s", (max(run["before"]["customers"]),)).fetchone()
        hired = conn.execute("SELECT min(hired_at), max(hired_at) FROM employees WHERE id > %s",
                             (max(run["before"]["employees"]),)).fetchone()
    assert run["began"] <= customers[0] <= customers[1] <= ended
    assert run["began"] <= hired[0] <= hired[1] <= ended


def test_restart_keeps_the_reference_changes(reference_runs) -> None:
    """The stack re-applies sql/crm/reference_data.sql on every start: it must not undo the
    CRM's own changes to queues, branches and service areas."""
    from hrdv.crm import reference

    run = reference_runs[1]
    with psycopg.connect(run["dsn"], autocommit=True) as conn:
        reference.apply(conn)
    again = _reference_rows(run["dsn"])
    for table in ("queues", "branches", "service_areas"):
        assert again[table] == run["after"][table], table


def test_reference_changes_on_a_crm_with_customers_only(crm_cluster) -> None:
    """`hrdv up` without history: customers only (no branch, tariff, contact person or employee).
    Reference changes still find something to do and keep the CRM sound."""
    from hrdv import generator
    from hrdv.crm import reference
    from hrdv.stack import postgres

    dsn = postgres.recreate_database(crm_cluster, "crm_customers_only")
    with psycopg.connect(dsn, autocommit=True) as conn:
        reference.apply_schema_and_reference(conn)
        generator.seed_customers(conn, 300)
    stats = live.run_live(dsn, rate=4000, max_changes=1000, seed=2, behaviour=REF_FAST, start=START,
                          progress_every=60)
    assert stats.actions["customers.insert"] > 0 and stats.actions["employees.insert"] > 0
    assert stats.actions["contact_persons.update"] > 0  # of the contact persons sign-ups brought
    with psycopg.connect(dsn) as conn:
        found = {name: conn.execute(query).fetchone()[0] for name, query in REFERENCE_VIOLATIONS.items()
                 if "primary" not in name and "queue" not in name}  # seeded customers have none
    assert found == {name: 0 for name in found}


# --- operators' working states (operator_states) ---------------------------------------------

# 16:00 in Moscow, Saint Petersburg, Rostov and Kazan (UTC+3), less 0.4 s: the day shift's
# operators of most contact centres log in and, a moment later, out; the evening's log in.
# Durations one hour per second, breaks every 10 minutes: every state shows within a second.
SHIFT_CHANGE = datetime(2026, 11, 25, 12, 59, 59, 600000, tzinfo=timezone.utc)
STATES_FAST = dataclasses.replace(FAST, break_every_median_s=600 / 3600, break_median_s=60 / 3600)

STATE_VIOLATIONS = {
    "more than one open state": """SELECT count(*) FROM (SELECT employee_id FROM operator_states
        WHERE ended_at IS NULL GROUP BY 1 HAVING count(*) > 1) x""",
    "operator whose states end with a closed one": """SELECT count(*) FROM (SELECT employee_id
        FROM operator_states GROUP BY 1 HAVING count(*) FILTER (WHERE ended_at IS NULL) <> 1) x""",
    "interval that does not chain to the next (gap, overlap, or open before the last)": """
        SELECT count(*) FROM (SELECT ended_at, lead(started_at) OVER w AS next
            FROM operator_states WINDOW w AS (PARTITION BY employee_id ORDER BY started_at, id)) x
        WHERE next IS NOT NULL AND ended_at IS DISTINCT FROM next""",
    "state of someone who is not an operator": """SELECT count(*) FROM operator_states s
        JOIN employees e ON e.id = s.employee_id WHERE e.role <> 'operator'""",
    "busy with a contact not assigned to the operator": """SELECT count(*) FROM operator_states s
        LEFT JOIN interactions i ON i.id = s.interaction_id WHERE s.state = 'busy'
        AND (i.id IS NULL OR i.operator_id IS DISTINCT FROM s.employee_id)""",
    "busy or after-call work without its contact, or a contact in another state": """
        SELECT count(*) FROM operator_states
        WHERE (state IN ('busy', 'after_call_work')) <> (interaction_id IS NOT NULL)""",
    "after-call work not right after being busy with the same contact": """
        SELECT count(*) FROM (SELECT state, interaction_id, lag(state) OVER w AS before,
            lag(interaction_id) OVER w AS before_contact
            FROM operator_states WINDOW w AS (PARTITION BY employee_id ORDER BY started_at, id)) x
        WHERE state = 'after_call_work' AND before IS NOT NULL
            AND (before <> 'busy' OR before_contact IS DISTINCT FROM interaction_id)""",
    "logged in twice or out twice in a row": """
        SELECT count(*) FROM (SELECT state, lag(state) OVER w AS before FROM operator_states
            WINDOW w AS (PARTITION BY employee_id ORDER BY started_at, id)) x
        WHERE (state = 'logged_in' AND before IS NOT NULL AND before <> 'logged_out')
            OR (state = 'logged_out' AND before = 'logged_out')""",
}
STATE_SNAPSHOT = "id, employee_id, state, interaction_id, ended_at IS NULL"


@pytest.fixture(scope="module")
def state_runs(crm_cluster) -> list[dict]:
    """Two live runs of 4 000 changes with the same seed across a shift change (STATES_FAST)."""
    runs = []
    for name in ("crm_live_states_a", "crm_live_states_b"):
        dsn = copy_seed(crm_cluster, name)
        stats = live.run_live(dsn, rate=4000, max_changes=4000, seed=17, behaviour=STATES_FAST,
                              start=SHIFT_CHANGE, progress_every=60)
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(f"SELECT {STATE_SNAPSHOT} FROM operator_states ORDER BY id").fetchall()
        runs.append({"dsn": dsn, "stats": stats, "rows": rows})
    return runs


def test_operator_states_every_kind_and_sound(state_runs) -> None:
    run = state_runs[0]
    stats = run["stats"]
    print(f"\n{stats.summary()}; {stats.state_summary()}")
    with psycopg.connect(run["dsn"]) as conn:
        kinds = dict(conn.execute("SELECT state, count(*) FROM operator_states GROUP BY 1").fetchall())
        found = {name: conn.execute(query).fetchone()[0] for name, query in STATE_VIOLATIONS.items()}
    print(f"states: {kinds}")
    assert set(kinds) == {"logged_in", "ready", "busy", "after_call_work", "break", "logged_out"}
    assert found == {name: 0 for name in STATE_VIOLATIONS}
    # Stats counts them like any other table: one insert per state, one update per closed one
    assert stats.actions["operator_states.insert"] == sum(kinds.values())
    assert stats.actions["operator_states.update"] == sum(kinds.values()) - sum(
        1 for row in run["rows"] if row[4])
    _assert_lifecycle_order(run["dsn"])


def test_operator_states_repeat_with_the_seed(state_runs) -> None:
    first, second = state_runs
    assert first["stats"].actions == second["stats"].actions
    assert first["rows"] == second["rows"] and len(first["rows"]) > 100


def _assert_states_sound(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        found = {name: conn.execute(query).fetchone()[0] for name, query in STATE_VIOLATIONS.items()}
    assert found == {name: 0 for name in STATE_VIOLATIONS}


def test_operator_states_resume_on_a_second_run(state_runs) -> None:
    """A second run (as after a restart or a reconnection) takes every operator's open state
    from the CRM and goes on from it: the chains stay unbroken."""
    dsn = state_runs[1]["dsn"]
    stats = live.run_live(dsn, rate=4000, max_changes=1500, seed=18, behaviour=STATES_FAST,
                          start=SHIFT_CHANGE, progress_every=60)
    assert stats.actions["operator_states.insert"] > 0
    _assert_states_sound(dsn)
    _assert_lifecycle_order(dsn)

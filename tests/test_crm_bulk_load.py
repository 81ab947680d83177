"""The bulk initial load (hrdv/crm/bulk_load.py) on a PostgreSQL of its own: referential
integrity, lifecycle order, determinism."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Iterator

import psycopg
import pytest

from hrdv.crm import bulk_load, reference

AS_OF = datetime(2026, 11, 20, 9, tzinfo=timezone.utc)
CUSTOMERS = 20_000
# Rows with a NOT NULL (or non-null) reference that has no target.
ORPHANS = {
    "customer region": "SELECT count(*) FROM customers c LEFT JOIN regions r ON r.code = c.region_code WHERE r.code IS NULL",
    "customer branch in its region": "SELECT count(*) FROM customers c LEFT JOIN branches b ON b.code = c.branch_code AND b.region_code = c.region_code WHERE b.code IS NULL",
    "customer tariff": "SELECT count(*) FROM customers c LEFT JOIN tariffs t ON t.code = c.tariff_code WHERE t.code IS NULL",
    "contact customer": "SELECT count(*) FROM contact_persons p LEFT JOIN customers c ON c.id = p.customer_id WHERE c.id IS NULL",
    "customers without exactly one primary contact": "SELECT count(*) FROM customers c WHERE (SELECT count(*) FROM contact_persons p WHERE p.customer_id = c.id AND p.is_primary) <> 1",
    "interaction customer": "SELECT count(*) FROM interactions i LEFT JOIN customers c ON c.id = i.customer_id WHERE c.id IS NULL",
    "interaction region = customer's": "SELECT count(*) FROM interactions i JOIN customers c ON c.id = i.customer_id WHERE c.region_code <> i.region_code",
    "interaction channel/topic/queue": "SELECT count(*) FROM interactions i LEFT JOIN channels ch ON ch.code = i.channel_code LEFT JOIN topics t ON t.code = i.topic_code LEFT JOIN queues q ON q.code = i.queue_code AND q.channel_code = i.channel_code WHERE ch.code IS NULL OR t.code IS NULL OR q.code IS NULL",
    "interaction operator -> operator of the queue's skill group": "SELECT count(*) FROM interactions i JOIN queues q ON q.code = i.queue_code LEFT JOIN employees e ON e.id = i.operator_id AND e.role = 'operator' AND e.skill_group = q.skill_group WHERE i.operator_id IS NOT NULL AND e.id IS NULL AND i.transfer_count = 0",
    "transferred interaction operator -> operator of another queue of its channel": "SELECT count(*) FROM interactions i JOIN queues q ON q.code = i.queue_code LEFT JOIN employees e ON e.id = i.operator_id AND e.role = 'operator' AND e.skill_group IN (SELECT o.skill_group FROM queues o WHERE o.channel_code = i.channel_code AND (o.code <> i.queue_code OR i.transfer_count = 2)) WHERE i.transfer_count > 0 AND e.id IS NULL",
    "previous interaction: same customer and topic, earlier": "SELECT count(*) FROM interactions i LEFT JOIN interactions p ON p.id = i.previous_interaction_id AND p.customer_id = i.customer_id AND p.topic_code = i.topic_code AND p.created_at < i.created_at WHERE i.previous_interaction_id IS NOT NULL AND p.id IS NULL",
    "work order interaction and customer": "SELECT count(*) FROM work_orders w LEFT JOIN interactions i ON i.id = w.interaction_id AND i.customer_id = w.customer_id WHERE i.id IS NULL",
    "work order service area": "SELECT count(*) FROM work_orders w LEFT JOIN service_areas s ON s.code = w.service_area_code WHERE s.code IS NULL",
    "work order engineer": "SELECT count(*) FROM work_orders w LEFT JOIN employees e ON e.id = w.engineer_id AND e.role = 'engineer' WHERE w.engineer_id IS NOT NULL AND e.id IS NULL",
    "claim customer/interaction": "SELECT count(*) FROM claims c LEFT JOIN interactions i ON i.id = c.interaction_id AND i.customer_id = c.customer_id WHERE c.interaction_id IS NOT NULL AND i.id IS NULL",
    "employee region/area": "SELECT count(*) FROM employees e LEFT JOIN regions r ON r.code = e.region_code LEFT JOIN service_areas s ON s.code = e.service_area_code WHERE r.code IS NULL OR (e.service_area_code IS NOT NULL AND s.code IS NULL) OR (e.role = 'engineer') <> (e.service_area_code IS NOT NULL)",
}
LIFECYCLE = {
    "interaction before its customer": "SELECT count(*) FROM interactions i JOIN customers c ON c.id = i.customer_id WHERE i.created_at < c.registered_at",
    "interaction timestamps out of order or after as_of": "SELECT count(*) FROM interactions WHERE first_response_at < created_at OR closed_at < first_response_at OR updated_at < greatest(created_at, first_response_at, closed_at) OR updated_at > %(as_of)s OR sla_due_at <= created_at",
    "interaction status vs timestamps": "SELECT count(*) FROM interactions WHERE (status = 'closed') <> (closed_at IS NOT NULL) OR (status IN ('in_progress', 'closed')) <> (first_response_at IS NOT NULL) OR (status = 'new') <> (operator_id IS NULL AND status <> 'abandoned') OR (resolved_on_first_contact IS NULL) <> (closed_at IS NULL)",
    "abandoned contact answered, closed or transferred, abandoned before creation or after as_of": "SELECT count(*) FROM interactions WHERE (status = 'abandoned') <> (abandoned_at IS NOT NULL) OR (status = 'abandoned' AND (operator_id IS NOT NULL OR first_response_at IS NOT NULL OR closed_at IS NOT NULL OR resolved_on_first_contact IS NOT NULL OR transfer_count <> 0 OR reopen_count <> 0 OR abandoned_at <= created_at OR abandoned_at > %(as_of)s OR updated_at <> abandoned_at OR channel_code NOT IN ('call', 'chat')))",
    "transferred before the answer, more than twice or in a channel with one queue": "SELECT count(*) FROM interactions WHERE transfer_count NOT BETWEEN 0 AND 2 OR (transfer_count > 0 AND (first_response_at IS NULL OR channel_code NOT IN ('call', 'chat', 'messenger')))",
    "work order before its interaction's first response": "SELECT count(*) FROM work_orders w JOIN interactions i ON i.id = w.interaction_id WHERE i.first_response_at IS NULL OR w.created_at < i.first_response_at",
    "work order status vs timestamps": "SELECT count(*) FROM work_orders WHERE (status = 'done') <> (completed_at IS NOT NULL) OR (status = 'cancelled') <> (cancelled_at IS NOT NULL) OR (status = 'new') <> (assigned_at IS NULL AND status <> 'cancelled') OR (assigned_at IS NULL) <> (engineer_id IS NULL) OR updated_at > %(as_of)s",
    "claim status vs timestamps": "SELECT count(*) FROM claims c JOIN interactions i ON i.id = c.interaction_id WHERE c.created_at < i.created_at OR (c.status IN ('resolved', 'rejected')) <> (c.outcome IS NOT NULL) OR c.updated_at > %(as_of)s",
}


@pytest.fixture(scope="module")
def loaded(crm_postgres) -> Iterator[str]:
    with psycopg.connect(crm_postgres.pg_dsn("postgres"), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS crm_bulk_test")
        conn.execute("CREATE DATABASE crm_bulk_test")
    dsn = crm_postgres.pg_dsn("crm_bulk_test")
    with psycopg.connect(dsn, autocommit=True) as conn:
        reference.apply_schema_and_reference(conn)
    bulk_load.load(dsn, CUSTOMERS, seed=7, jobs=2, progress=False, as_of=AS_OF)
    yield dsn


def _fingerprint(dsn: str) -> dict[str, str]:
    """md5 of every loaded table's rows in id order."""
    with psycopg.connect(dsn) as conn:
        return {t: conn.execute(f"SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM {t} t"
                                ).fetchone()[0] for t in bulk_load.TABLES}


def test_volumes(loaded: str) -> None:
    with psycopg.connect(loaded) as conn:
        count = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                 for t in bulk_load.TABLES}
        assert count["customers"] == CUSTOMERS
        assert 1.3 * CUSTOMERS < count["contact_persons"] < 1.8 * CUSTOMERS
        assert count["employees"] == 40                          # 20 operators, 20 engineers
        assert 3_000 < count["interactions"] < 5_000             # 0.2 per customer-month
        assert 0 < count["work_orders"] < count["interactions"] and count["claims"] > 0
        repeats = conn.execute("SELECT avg((previous_interaction_id IS NOT NULL)::int) "
                               "FROM interactions").fetchone()[0]
        assert 0.1 < repeats < 0.3
        # every status occurs: the load leaves lifecycles running at as_of
        assert {r[0] for r in conn.execute("SELECT DISTINCT status FROM interactions")} == {
            "new", "assigned", "in_progress", "closed", "abandoned"}
        assert {r[0] for r in conn.execute("SELECT DISTINCT status FROM work_orders")} >= {
            "done", "cancelled", "in_progress"}
        # foreign keys and indexes are back and valid
        invalid = conn.execute("SELECT count(*) FROM pg_constraint WHERE NOT convalidated "
                               "AND conname NOT LIKE 'interactions_lifecycle%'").fetchone()[0]
        assert invalid == 0
        assert conn.execute("SELECT to_regnamespace('crm_bulk')").fetchone()[0] is None
        assert conn.execute("SELECT count(*) FROM pg_indexes WHERE indexname = "
                            "'interactions_created_at_idx'").fetchone()[0] == 1


def test_abandoned_and_transferred_shares(loaded: str) -> None:
    """The history has the live generator's shares: about 6 % of calls and 3 % of chats abandoned
    (some within 5 s), about 8 % of answered calls, chats and messenger contacts transferred
    (some twice), each to another queue of its channel than the routing rule's."""
    b = bulk_load.BEHAVIOUR
    with psycopg.connect(loaded) as conn:
        rows = conn.execute("""SELECT channel_code, count(*), count(*) FILTER (WHERE status = 'abandoned'),
                count(*) FILTER (WHERE first_response_at IS NOT NULL),
                count(*) FILTER (WHERE transfer_count > 0), count(*) FILTER (WHERE transfer_count = 2)
            FROM interactions GROUP BY 1""").fetchall()
        short = conn.execute("SELECT count(*) FILTER (WHERE abandoned_at < created_at + interval '5 s'), "
                             "count(*) FILTER (WHERE abandoned_at > created_at + interval '10 min') "
                             "FROM interactions WHERE status = 'abandoned'").fetchone()
        moved = conn.execute("SELECT channel_code, topic_code, queue_code FROM interactions "
                             "WHERE transfer_count = 1").fetchall()
    by_channel = {channel: figures for channel, *figures in rows}
    print(f"\nper channel (contacts, abandoned, answered, transferred, twice): {by_channel}")
    for channel, (total, abandoned, answered, transferred, _) in by_channel.items():
        assert abandoned / total == pytest.approx(b.abandon_share.get(channel, 0.0), abs=0.015), channel
        if channel not in b.transfer_share:
            assert transferred == 0, channel
    answered = sum(by_channel[c][2] for c in b.transfer_share)
    transferred = sum(by_channel[c][3] for c in b.transfer_share)
    assert transferred / answered == pytest.approx(0.08, abs=0.02)
    assert sum(by_channel[c][4] for c in b.transfer_share) > 0  # a few twice
    assert short[0] > 0 and short[1] < sum(f[1] for f in by_channel.values()) * 0.02
    assert moved and all(queue != reference.queue_for(channel, topic) for channel, topic, queue in moved)


@pytest.mark.parametrize("name", sorted(ORPHANS))
def test_referential_integrity(loaded: str, name: str) -> None:
    with psycopg.connect(loaded) as conn:
        assert conn.execute(ORPHANS[name]).fetchone()[0] == 0


@pytest.mark.parametrize("name", sorted(LIFECYCLE))
def test_lifecycle_order(loaded: str, name: str) -> None:
    with psycopg.connect(loaded) as conn:
        assert conn.execute(LIFECYCLE[name], {"as_of": AS_OF}).fetchone()[0] == 0


def test_same_seed_same_data_other_seed_other_data(loaded: str) -> None:
    first = _fingerprint(loaded)
    report = bulk_load.load(loaded, CUSTOMERS, seed=7, jobs=1, progress=False, as_of=AS_OF,
                            truncate=True, chunk=3_000)       # other chunking, one connection
    assert report.rows > CUSTOMERS
    assert _fingerprint(loaded) == first
    bulk_load.load(loaded, CUSTOMERS, seed=8, jobs=2, progress=False, as_of=AS_OF, truncate=True)
    other = _fingerprint(loaded)
    assert all(other[t] != first[t] for t in bulk_load.TABLES)


def test_refuses_to_load_on_top_of_data(loaded: str) -> None:
    with pytest.raises(RuntimeError, match="already has rows"):
        bulk_load.load(loaded, 10, seed=1, progress=False, as_of=AS_OF)

"""The CRM schema (sql/crm/schema.sql) and its reference data, on a PostgreSQL of their own."""
from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql

from hrdv import generator
from hrdv.crm import reference



def _fresh_db(settings, name: str) -> str:
    with psycopg.connect(settings.pg_dsn("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return settings.pg_dsn(name)


def test_schema_applies_on_top_of_the_skeleton_and_again(crm_postgres) -> None:
    """The skeleton's schema with data in it, then the full schema twice."""
    dsn = _fresh_db(crm_postgres, "crm_schema_test")
    old = Path(__file__).parent / "data" / "crm_schema_skeleton.sql"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(old.read_text())
        conn.execute("INSERT INTO regions (code, name, utc_offset) VALUES ('RU-MOW', 'Москва', 3)")
        generator.seed_customers(conn, 50)
        reference.apply_schema_and_reference(conn)
        reference.apply_schema_and_reference(conn)
        generator.seed_customers(conn, 60)   # the simple generator still works on top
        assert conn.execute("SELECT count(*) FROM customers").fetchone()[0] == 60
        status = conn.execute("SELECT DISTINCT status FROM customers").fetchall()
        assert status == [("active",)]
        columns = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'interactions'")}
        assert {"id", "customer_id", "channel_code", "region_code", "topic_code", "queue_code",
                "direction", "status", "operator_id", "subject", "created_at",
                "first_response_at", "closed_at", "resolved_on_first_contact", "updated_at",
                "previous_interaction_id", "reopen_count", "sla_due_at"} <= columns


def test_reference_data(crm_postgres) -> None:
    dsn = _fresh_db(crm_postgres, "crm_reference_test")
    with psycopg.connect(dsn, autocommit=True) as conn:
        reference.apply_schema_and_reference(conn)
        one = lambda q: conn.execute(q).fetchone()  # noqa: E731
        assert one("SELECT count(*) FROM federal_districts") == (8,)
        assert one("SELECT count(*), min(utc_offset), max(utc_offset) FROM regions") == (85, 2, 12)
        assert one("SELECT count(*) FROM regions WHERE federal_district_code IS NULL "
                   "OR code !~ '^RU-[A-Z]{2,3}$'") == (0,)
        offsets = dict(conn.execute("SELECT code, utc_offset FROM regions").fetchall())
        assert offsets["RU-KGD"] == 2 and offsets["RU-MOW"] == 3 and offsets["RU-SAM"] == 4
        assert offsets["RU-SVE"] == 5 and offsets["RU-OMS"] == 6 and offsets["RU-NVS"] == 7
        assert offsets["RU-IRK"] == 8 and offsets["RU-ZAB"] == 9 and offsets["RU-PRI"] == 10
        assert offsets["RU-MAG"] == 11 and offsets["RU-KAM"] == 12 and offsets["RU-CHU"] == 12
        assert one("SELECT count(*) FROM regions r WHERE NOT EXISTS "
                   "(SELECT FROM branches b WHERE b.region_code = r.code)") == (0,)
        assert one("SELECT count(*) FROM branches b WHERE NOT EXISTS "
                   "(SELECT FROM service_areas s WHERE s.branch_code = b.code)") == (0,)
        assert one("SELECT count(*) FROM channels") == (6,)
        parents = conn.execute("SELECT t.code, count(c.code) FROM topics t JOIN topics c "
                               "ON c.parent_code = t.code GROUP BY t.code").fetchall()
        assert len(parents) == 7 and all(2 <= n <= 4 for _, n in parents)
        # every (channel, topic) the routing rules produce is a queue
        queues = {r[0] for r in conn.execute("SELECT code FROM queues")}
        assert {reference.queue_for(c, t) for c in reference.CHANNEL_MIX
                for t in reference.TOPIC_MIX} <= queues
        assert one("SELECT count(*) FROM queues WHERE routing_rule IS NULL") == (0,)


# The lifecycle constraint as CRMs before abandoned contacts and transfers had it.
OLD_LIFECYCLE_CHECK = """ALTER TABLE interactions ADD CONSTRAINT interactions_lifecycle_check CHECK (
    (first_response_at IS NULL OR first_response_at >= created_at)
    AND (closed_at IS NULL OR closed_at >= created_at) AND reopen_count >= 0) NOT VALID"""
INTERACTION = """INSERT INTO interactions (id, customer_id, channel_code, region_code, topic_code, queue_code,
    status, created_at, updated_at) SELECT %s, c.id, 'call', c.region_code, 'internet.no_link', 'q_call_tech',
    'new', now() - interval '1 minute', now() - interval '1 minute' FROM customers c ORDER BY c.id LIMIT 1"""


def test_abandoned_contacts_and_transfers_upgrade_a_crm_in_place(crm_postgres) -> None:
    """A CRM from before interactions.abandoned_at and transfer_count (with its old lifecycle
    constraint and a row) gets both columns and the extended constraint from the schema; its
    old row reads transfer_count 0, and the constraint keeps abandoned contacts unanswered."""
    dsn = _fresh_db(crm_postgres, "crm_abandon_test")
    with psycopg.connect(dsn, autocommit=True) as conn:
        reference.apply_schema_and_reference(conn)
        conn.execute("ALTER TABLE interactions DROP CONSTRAINT interactions_lifecycle_check")
        conn.execute("ALTER TABLE interactions DROP COLUMN abandoned_at, DROP COLUMN transfer_count")
        conn.execute(OLD_LIFECYCLE_CHECK)
        generator.seed_customers(conn, 5)
        conn.execute(INTERACTION, [1])
        reference.apply_schema_and_reference(conn)
        reference.apply_schema_and_reference(conn)  # idempotent
        definition = conn.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                                  "WHERE conname = 'interactions_lifecycle_check'").fetchall()
        assert len(definition) == 1 and "abandoned_at" in definition[0][0]
        assert conn.execute("SELECT abandoned_at, transfer_count FROM interactions").fetchall() == [(None, 0)]
        assert conn.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 'interactions_open_idx'"
                            ).fetchone() == (0,)
        # abandoned: after creation, with its status, never answered, closed or transferred
        conn.execute("UPDATE interactions SET status = 'abandoned', abandoned_at = now(), updated_at = now()")
        refused = [
            "UPDATE interactions SET abandoned_at = created_at",
            "UPDATE interactions SET status = 'closed', closed_at = now()",
            "UPDATE interactions SET operator_id = 7",
            "UPDATE interactions SET first_response_at = now()",
            "UPDATE interactions SET transfer_count = 1",
            "UPDATE interactions SET resolved_on_first_contact = true",
            "UPDATE interactions SET abandoned_at = NULL",
        ]
        conn.execute(INTERACTION, [2])
        refused += ["UPDATE interactions SET abandoned_at = now() WHERE id = 2",
                    "UPDATE interactions SET status = 'abandoned' WHERE id = 2",
                    "UPDATE interactions SET transfer_count = -1 WHERE id = 2"]
        for statement in refused:
            try:
                conn.execute(statement)
            except psycopg.errors.CheckViolation:
                continue
            raise AssertionError(f"the lifecycle constraint let through: {statement}")
        conn.execute("UPDATE interactions SET transfer_count = transfer_count + 1, queue_code = 'q_call' WHERE id = 2")

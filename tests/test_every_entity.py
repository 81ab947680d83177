"""Every CRM entity end to end on the real stack: the live generator changes all of them (reference
changes raised, lifecycles an hour a minute: reassignments, postponements, cancellations, deletes,
incidents), every topic is delivered a second time, and then

- each staging table equals its CRM table row for row (the staged columns; deleted rows flagged);
- each validity history equals an independent reconstruction: an audit trigger installed in the
  CRM by this test records every row change in statement order, with its transaction's commit
  time, and the history must hold exactly those versions, valid from one commit to the next.

The entity list comes from hrdv/entities.py.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg import sql

from hrdv.crm import live
from hrdv.crm.behaviour import Behaviour, scaled
from hrdv.entities import ENTITIES, Entity
from hrdv.stack import faults
from hrdv_assets.cdc import STAGED
from recompute import assert_entity_staged, crm_entity_rows, stage
from resources.kafka import KafkaResource

pytestmark = pytest.mark.stack

AUDIT_SQL = """
CREATE TABLE IF NOT EXISTS hrdv_test_audit (
    seq bigserial PRIMARY KEY, tbl text NOT NULL, key text NOT NULL, deleted boolean NOT NULL, row jsonb);
CREATE OR REPLACE FUNCTION hrdv_test_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO hrdv_test_audit (tbl, key, deleted, row)
        VALUES (TG_TABLE_NAME, to_jsonb(OLD) ->> TG_ARGV[0], true, NULL);
    ELSE
        INSERT INTO hrdv_test_audit (tbl, key, deleted, row)
        VALUES (TG_TABLE_NAME, to_jsonb(NEW) ->> TG_ARGV[0], false, to_jsonb(NEW));
    END IF;
    RETURN NULL;
END $$;
"""


def _install_audit(conn: psycopg.Connection) -> int:
    """Audit triggers on every entity's table; returns the audit's first sequence number."""
    conn.execute(AUDIT_SQL)
    for entity in ENTITIES:
        conn.execute(sql.SQL(
            "CREATE OR REPLACE TRIGGER hrdv_test_audit AFTER INSERT OR UPDATE OR DELETE ON {} "
            "FOR EACH ROW EXECUTE FUNCTION hrdv_test_audit({})").format(
            sql.Identifier(entity.name), sql.Literal(entity.key)))
    return conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM hrdv_test_audit").fetchone()[0]


def _remove_audit(conn: psycopg.Connection) -> None:
    for entity in ENTITIES:
        conn.execute(sql.SQL("DROP TRIGGER IF EXISTS hrdv_test_audit ON {}").format(sql.Identifier(entity.name)))


def _reconstruction(crm: psycopg.Connection, entity: Entity, first_seq: int) -> dict[str, list[tuple]]:
    """Per key, the versions the audit saw: (commit time, deleted, attributes) in statement order."""
    columns = [c for c in entity.staged if c.name != entity.key]
    rows = crm.execute(
        "SELECT key, pg_xact_commit_timestamp(xmin), deleted, row FROM hrdv_test_audit "
        "WHERE tbl = %s AND seq >= %s ORDER BY seq", [entity.name, first_seq]).fetchall()
    versions: dict[str, list[tuple]] = defaultdict(list)
    for key, committed, deleted, row in rows:
        values = tuple(None if deleted else _as_text(row.get(c.name), c.type) for c in columns)
        versions[key].append((committed, deleted, values))
    return versions


def _as_text(value: object, type_: str) -> object:
    if value is None:
        return None
    if type_ in ("jsonb", "text"):
        return value if isinstance(value, str) else __import__("json").dumps(value, separators=(", ", ": "))
    return str(value) if not isinstance(value, bool) else value


def _history(hrdv: psycopg.Connection, entity: Entity, since: datetime) -> dict[str, list[tuple]]:
    columns = [c for c in entity.staged if c.name != entity.key]
    listed = sql.SQL(", ").join(
        sql.SQL("{}").format(sql.Identifier(c.name)) if c.type == "boolean"
        else sql.SQL("to_jsonb({})#>>'{{}}'").format(sql.Identifier(c.name)) for c in columns)
    rows = hrdv.execute(sql.SQL(
        "SELECT {key}::text, valid_from, valid_to, is_current, is_deleted, {listed} "
        "FROM staging.{table} WHERE valid_from >= %s ORDER BY {key}, lsn").format(
        key=sql.Identifier(entity.key), listed=listed, table=sql.Identifier(f"{entity.name}_history")),
        [since]).fetchall()
    history: dict[str, list[tuple]] = defaultdict(list)
    for key, valid_from, valid_to, current, deleted, *values in rows:
        history[key].append((valid_from, valid_to, current, deleted, tuple(values)))
    return history


def _assert_history_equals_reconstruction(crm, hrdv, entity: Entity, first_seq: int, since: datetime) -> int:
    expected = _reconstruction(crm, entity, first_seq)
    history = _history(hrdv, entity, since - timedelta(seconds=1))
    assert set(history) >= set(expected), f"{entity.name}: keys without history {sorted(set(expected) - set(history))[:5]}"
    for key, versions in expected.items():
        staged = history[key][-len(versions):]
        assert len(staged) == len(versions), f"{entity.name} {key}: {len(staged)} versions, CRM {len(versions)}"
        for (committed, deleted, values), (valid_from, _, _, is_deleted, staged_values) in zip(versions, staged):
            assert abs(valid_from - committed) < timedelta(milliseconds=1), (entity.name, key, valid_from, committed)
            assert is_deleted == deleted and (deleted or _normalised(staged_values) == _normalised(values)), \
                (entity.name, key, staged_values, values)
        chain = history[key]
        for earlier, later in zip(chain, chain[1:]):
            assert earlier[1] == later[0] and not earlier[2], (entity.name, key, earlier, later)
        assert chain[-1][1] is None and chain[-1][2], (entity.name, key, chain[-1])
    return sum(map(len, expected.values()))


def _normalised(values: tuple) -> tuple:
    """Text forms that compare across JSON and SQL (timestamps and numbers as datetimes/floats)."""
    out = []
    for value in values:
        if isinstance(value, str):
            try:
                out.append(datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc))
                continue
            except ValueError:
                pass
            try:
                out.append(float(value))
                continue
            except ValueError:
                pass
        out.append(value)
    return tuple(out)


def test_every_entity_is_staged_with_its_history(stack) -> None:
    settings = stack
    with psycopg.connect(settings.crm_dsn, autocommit=True) as conn:
        first_seq = _install_audit(conn)
        since = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    try:
        live.run_live(settings.crm_dsn, rate=500, max_changes=3000, seed=12,
                              behaviour=scaled(Behaviour(reference_change_share=0.3), 1 / 600),
                              progress_every=60)
    finally:
        with psycopg.connect(settings.crm_dsn, autocommit=True) as conn:
            _remove_audit(conn)
    topics = [staged.topic for staged in STAGED.values()]
    done = KafkaResource.of_stack(settings).buffer_completeness(
        topics, until=datetime.now(timezone.utc), wait_s=60)
    assert done.complete_until is not None, done.describe()
    redelivered = sum(faults.replay_topic(settings, table=entity.name) for entity in ENTITIES)
    assert redelivered > 0
    stage(settings, datetime(2000, 1, 1, tzinfo=timezone.utc), datetime.now(timezone.utc) + timedelta(minutes=1),
          entities=list(STAGED.values()))
    with psycopg.connect(settings.crm_dsn) as crm, psycopg.connect(settings.hrdv_dsn) as hrdv:
        crm.execute("SET TIME ZONE 'UTC'")
        hrdv.execute("SET TIME ZONE 'UTC'")
        rows = {e.name: assert_entity_staged(hrdv, e, crm_entity_rows(crm, e)) for e in ENTITIES}
        versions = {e.name: _assert_history_equals_reconstruction(crm, hrdv, e, first_seq, since)
                    for e in ENTITIES if e.history}
    print(f"staging equals the CRM: {rows}; history versions checked: {versions}")
    # Not vacuous: the entities this run changes hold rows. (Claims come late in a lifecycle and
    # operators' states need operators on shift at the hour the suite runs: a short run may have
    # neither; when it has, they are compared like the rest.)
    assert all(rows[name] for name in ("customers", "contact_persons", "employees", "interactions",
                                       "work_orders", "queues", "branches", "service_areas")), rows
    assert all(versions[name] > 0 for name in ("customers", "employees")), versions
    # abandoned contacts and transfers the run made are among them (compared column by column above)
    with psycopg.connect(settings.hrdv_dsn) as hrdv:
        abandoned, transferred = hrdv.execute(
            "SELECT count(*) FILTER (WHERE status = 'abandoned' AND abandoned_at IS NOT NULL), "
            "count(*) FILTER (WHERE transfer_count > 0) FROM staging.interactions "
            "WHERE NOT is_deleted AND committed_at >= %s", [since]).fetchone()
    assert abandoned > 0 and transferred > 0, (abandoned, transferred)


ABANDONED_AND_TRANSFERRED = """
INSERT INTO interactions (id, customer_id, channel_code, region_code, topic_code, queue_code, status,
                          created_at, updated_at)
SELECT %(id)s + k, c.id, ch, c.region_code, 'internet.no_link', 'q_' || ch || '_tech', 'new',
       now() - interval '2 minutes', now() - interval '2 minutes'
FROM (SELECT id, region_code FROM customers ORDER BY id LIMIT 1) c,
     (VALUES (0, 'call'), (1, 'chat')) AS x(k, ch)"""


def test_abandoned_and_transferred_interactions_reach_the_buffer_and_staging(stack) -> None:
    """A call abandoned in the queue and a chat answered then transferred twice: every version
    reaches the buffer with abandoned_at and transfer_count, and staging holds the CRM's rows."""
    settings, staged = stack, STAGED["interactions"]
    with psycopg.connect(settings.crm_dsn, autocommit=True) as conn:
        first = conn.execute("SELECT coalesce(max(id), 0) + 100000 FROM interactions").fetchone()[0]
        conn.execute(ABANDONED_AND_TRANSFERRED, {"id": first})
        conn.execute("UPDATE interactions SET status = 'abandoned', abandoned_at = now() - interval '1 minute', "
                     "updated_at = now() WHERE id = %s", [first])
        chat = first + 1
        conn.execute("UPDATE interactions SET status = 'in_progress', operator_id = 1, "
                     "first_response_at = now() - interval '1 minute', updated_at = now() WHERE id = %s", [chat])
        for queue in ("q_chat_billing", "q_chat"):
            conn.execute("UPDATE interactions SET queue_code = %s, transfer_count = transfer_count + 1, "
                         "updated_at = now() WHERE id = %s", [queue, chat])
    moment = _staged_now(settings, [staged.topic])
    stage(settings, moment - timedelta(minutes=5), moment + timedelta(minutes=1), entities=[staged])
    from hrdv import clickhouse

    with clickhouse.session(settings.clickhouse_dsn) as client:
        versions = client.query(
            "SELECT id, status, abandoned_at IS NOT NULL, queue_code, transfer_count FROM hrdv.interactions_buffer "
            "WHERE id IN {ids:Array(Int64)} ORDER BY id, lsn", parameters={"ids": [first, chat]}).result_rows
    assert [v for v in versions if v[0] == first] == [(first, "new", False, "q_call_tech", 0),
                                                     (first, "abandoned", True, "q_call_tech", 0)]
    assert [v[3:] for v in versions if v[0] == chat] == [("q_chat_tech", 0), ("q_chat_tech", 0),
                                                         ("q_chat_billing", 1), ("q_chat", 2)]
    columns = "id, status, abandoned_at, operator_id, first_response_at, closed_at, queue_code, transfer_count"
    with psycopg.connect(settings.crm_dsn) as crm, psycopg.connect(settings.hrdv_dsn) as hrdv:
        source = crm.execute(f"SELECT {columns} FROM interactions WHERE id IN (%s, %s) ORDER BY id",
                             [first, chat]).fetchall()
        assert hrdv.execute(f"SELECT {columns} FROM staging.interactions WHERE id IN (%s, %s) ORDER BY id",
                            [first, chat]).fetchall() == source
    assert source[0][1:4] == ("abandoned", source[0][2], None) and source[0][2] is not None
    assert source[1][6:] == ("q_chat", 2)


WORK_ORDER_SQL = """
INSERT INTO work_orders (id, interaction_id, customer_id, type, priority, service_area_code, status,
                         sla_due_at, created_at, updated_at)
SELECT %(id)s, i.id, i.customer_id, 'repair', 2, (SELECT code FROM service_areas ORDER BY code LIMIT 1),
       'new', now() + interval '1 day', now() - interval '5 minutes', now()
FROM interactions AS i ORDER BY i.id DESC LIMIT 1"""


def _staged_now(settings, topics: list[str]) -> datetime:
    """Waits until every change committed so far is in the buffers; returns that moment."""
    moment = datetime.now(timezone.utc)
    done = KafkaResource.of_stack(settings).buffer_completeness(topics, until=moment, wait_s=60)
    assert done.complete_until is not None, done.describe()
    return moment


def test_late_changes_of_a_work_order_list_the_windows_they_alter(stack) -> None:
    """A work order created with a business time 5 minutes back (its creation window already
    run), then deleted: both changes list that window, as interactions' late changes do."""
    settings, staged = stack, STAGED["work_orders"]
    created_window = None
    with psycopg.connect(settings.crm_dsn, autocommit=True) as conn:
        work_order = conn.execute("SELECT coalesce(max(id), 0) + 1000 FROM work_orders").fetchone()[0]
        conn.execute(WORK_ORDER_SQL, {"id": work_order})
        created = conn.execute("SELECT created_at FROM work_orders WHERE id = %s", [work_order]).fetchone()[0]
    try:
        start = _staged_now(settings, [staged.topic]).replace(second=0, microsecond=0)
        late = stage(settings, start - timedelta(minutes=1), datetime.now(timezone.utc) + timedelta(minutes=1),
                     entities=[staged])["work_orders"]
        created_window = created.astimezone(timezone.utc).replace(second=0, microsecond=0)
        assert created_window.isoformat() in late.windows, (created_window, late)
        assert created_window.isoformat() in late.kpi, (created_window, late)  # work_orders_created
    finally:
        with psycopg.connect(settings.crm_dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM work_orders WHERE id = %s", [work_order])
    moment = _staged_now(settings, [staged.topic])
    late = stage(settings, moment - timedelta(minutes=1), moment + timedelta(minutes=1), entities=[staged])
    assert created_window.isoformat() in late["work_orders"].windows, late
    assert created_window.isoformat() in late["work_orders"].kpi, late
    with psycopg.connect(settings.hrdv_dsn) as conn:
        assert conn.execute("SELECT is_deleted FROM staging.work_orders WHERE id = %s",
                            [work_order]).fetchone() == (True,)

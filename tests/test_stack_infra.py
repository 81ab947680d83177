"""Real-service tests of hrdv.stack: PostgreSQL, the Kafka broker, Connect and the connector.

They share the suite's stack (the `stack` fixture in tests/conftest.py: its own HRDV_HOME and
ports, away from a dev stack).
"""
from __future__ import annotations

import json
import sys
import time
import uuid

import psycopg
import pytest
import requests
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from hrdv import settings as settings_module
from hrdv.settings import Settings
from hrdv.stack import connect, kafka, postgres, process


def test_spawn_and_stop_leave_nothing_behind(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HRDV_HOME", str(tmp_path))
    settings = settings_module.load()
    pid = process.spawn("sleeper", [sys.executable, "-c", "import time; print('hi', flush=True); "
                                    "time.sleep(60)"], settings)
    assert process.pid_of("sleeper", settings) == pid
    assert process.stop("sleeper", settings, timeout=5)
    assert not process.is_running("sleeper", settings)
    assert not process.pid_path("sleeper", settings).exists()
    assert "hi" in process.log_path("sleeper", settings).read_text()
    with pytest.raises(process.StackError, match="sleeper.log"):
        process.wait_for_port(1, 0.3, "nothing", log=process.log_path("sleeper", settings))


@pytest.mark.stack
def test_postgres_up_and_bootstrap_idempotent(stack: Settings) -> None:
    postgres.start(stack)  # second start: already running, bootstrap again
    postgres.bootstrap(stack)
    health = postgres.health(stack)
    assert health["up"] and health["version"].startswith("15")
    with psycopg.connect(stack.crm_dsn) as conn:
        dbs = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
        assert {"crm", "hrdv", "dagster"} <= dbs
        # Debezium's own login streams; the owner does not (tests/test_roles.py has the rest).
        assert conn.execute("SELECT rolreplication FROM pg_roles WHERE rolname = %s",
                            [stack.debezium.user]).fetchone()[0]
        assert conn.execute("SELECT wal_level FROM (SELECT current_setting('wal_level') AS "
                            "wal_level) s").fetchone()[0] == "logical"


@pytest.mark.stack
def test_broker_and_connect_up(stack: Settings) -> None:
    health = kafka.health(stack)
    assert health["broker"]["up"], health
    assert health["connect"]["up"] and health["connect"]["version"] == "4.3.1", health
    plugins = requests.get(f"{stack.connect_url}/connector-plugins", timeout=10).json()
    assert any(p["class"].endswith("PostgresConnector") for p in plugins)


@pytest.mark.stack
def test_connector_registered_and_streaming(stack: Settings) -> None:
    connect.register_connector(stack)
    connect.register_connector(stack)  # idempotent: second PUT updates in place
    status = connect.connector_health(stack)
    assert status["connector"]["state"] == "RUNNING"
    assert [t["state"] for t in status["tasks"]] == ["RUNNING"]
    config = requests.get(connect._url(stack, "/config"), timeout=10).json()
    assert config["database.user"] == stack.debezium.user
    for password in (stack.pg_password, stack.debezium.password):
        assert password not in json.dumps(config)  # only the ${file:...} reference
    slots = {s["slot_name"]: s for s in postgres.health(stack)["slots"]}
    assert slots[stack.slot_name]["active"]


# Codes and ids of its own, removed afterwards: the suite's other tests share this CRM, and the
# generator numbers new rows from max(id) + 1.
TEST_ID = 10**12 + 1
SETUP_SQL = """
    INSERT INTO regions VALUES ('ZZ-TEST', 'Тестовый край', 5) ON CONFLICT DO NOTHING;
    INSERT INTO channels VALUES ('zz-test', 'Тест') ON CONFLICT DO NOTHING;
    INSERT INTO topics (code, name) VALUES ('zz-test', 'Тест') ON CONFLICT DO NOTHING;
    INSERT INTO queues VALUES ('zz-test', 'Тест', 'zz-test') ON CONFLICT DO NOTHING;
    INSERT INTO customers (id, full_name, region_code, registered_at)
        VALUES (1000000000001, 'Тест', 'ZZ-TEST', now()) ON CONFLICT DO NOTHING;"""
TEARDOWN_SQL = """
    DELETE FROM interactions WHERE id = 1000000000001; DELETE FROM customers WHERE id = 1000000000001;
    DELETE FROM queues WHERE code = 'zz-test'; DELETE FROM topics WHERE code = 'zz-test';
    DELETE FROM channels WHERE code = 'zz-test'; DELETE FROM regions WHERE code = 'ZZ-TEST';"""


@pytest.mark.stack
def test_insert_reaches_topic(stack: Settings) -> None:
    connect.register_connector(stack)
    with psycopg.connect(stack.crm_dsn, autocommit=True) as conn:
        conn.execute(TEARDOWN_SQL)
        conn.execute(SETUP_SQL)
        start = _end_offset(stack, stack.topic("interactions"))
        try:
            conn.execute("""
                INSERT INTO interactions (id, customer_id, channel_code, region_code, topic_code,
                                          queue_code, subject, created_at, updated_at)
                VALUES (%s, %s, 'zz-test', 'ZZ-TEST', 'zz-test', 'zz-test', 'Проверка', now(),
                        now())""", [TEST_ID, TEST_ID])
            key = json.dumps({"id": TEST_ID}, separators=(",", ":"))
            value = _find_message(stack, stack.topic("interactions"), key, start)
        finally:
            conn.execute(TEARDOWN_SQL)
    assert value["op"] == "c" and value["after"]["subject"] == "Проверка"


def _end_offset(settings: Settings, topic: str) -> int:
    """Offset the next message of partition 0 will get (0 before Debezium created the topic)."""
    admin = AdminClient(settings.kafka_client("reader"))
    if topic not in admin.list_topics(timeout=10).topics:
        return 0
    consumer = Consumer(settings.kafka_client("reader", **{"group.id": "unused"}))
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        consumer.close()


def _find_message(settings: Settings, topic: str, key: str, start: int,
                  timeout: float = 30) -> dict:
    """The value of the first message with `key` at or after `start` in partition 0 of `topic`
    (Debezium's topics have one partition here), waiting for Debezium to create the topic."""
    deadline = time.monotonic() + timeout
    admin = AdminClient(settings.kafka_client("reader"))
    while topic not in admin.list_topics(timeout=10).topics and time.monotonic() < deadline:
        time.sleep(0.2)
    consumer = Consumer(settings.kafka_client("reader", **{
        "group.id": f"test-{uuid.uuid4()}", "enable.auto.commit": False}))
    try:
        consumer.assign([TopicPartition(topic, 0, start)])
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error() and msg.key() == key.encode():
                return json.loads(msg.value())
    finally:
        consumer.close()
    raise AssertionError(f"no message with key {key} in {topic} after offset {start} "
                         f"within {timeout} s")


@pytest.mark.stack
def test_heartbeat_keeps_an_idle_slot_moving(stack: Settings) -> None:
    """WAL written outside the captured tables (here 8 MB in the warehouse database) holds no
    change for Debezium; without its heartbeat row the slot would never confirm past it and would
    retain that WAL for as long as the CRM stays idle. With the heartbeat it confirms within
    seconds."""
    connect.register_connector(stack)
    with psycopg.connect(stack.hrdv_admin_dsn, autocommit=True) as conn:
        before = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        conn.execute("CREATE TABLE public.wal_filler AS "
                     "SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 40000) g")
        conn.execute("DROP TABLE public.wal_filler")
        written = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        size = conn.execute("SELECT pg_wal_lsn_diff(%s, %s)", [written, before]).fetchone()[0]
    assert size > 5e6, f"only {size} bytes of WAL written"
    deadline = time.monotonic() + 30
    with psycopg.connect(stack.crm_dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            moved = conn.execute(
                "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots "
                "WHERE slot_name = %s", [written, stack.slot_name]).fetchone()[0]
            if moved:
                return
            time.sleep(0.5)
    raise AssertionError(f"slot {stack.slot_name} did not confirm past {written} in 30 s")


# --- what Debezium captures: every entity of hrdv/entities.py, never personal data ----------------
def test_connector_config_follows_the_entities() -> None:
    """table.include.list and column.exclude.list come from hrdv.entities, not from the file."""
    from hrdv import entities

    config = connect.connector_config(settings_module.load())
    assert config["table.include.list"].split(",") == entities.captured_tables() == connect.captured_tables()
    assert config["column.exclude.list"].split(",") == entities.excluded_columns()
    assert {"public.customers.full_name", "public.contact_persons.full_name",
            "public.contact_persons.phone", "public.contact_persons.email"} <= set(entities.excluded_columns())
    assert config["signal.data.collection"] == connect.SIGNAL_TABLE
    assert "table.include.list" not in json.loads(connect.CONFIG_TEMPLATE.read_text())


def test_new_tables_are_those_never_sent() -> None:
    captured = ["public.a", "public.b", "public.c", "public.debezium_heartbeat"]
    assert connect.new_tables(captured, None) == []  # a new connector: the initial snapshot reads all
    assert connect.new_tables(captured, ["public.b", "public.debezium_heartbeat"]) == ["public.a", "public.c"]
    assert connect.new_tables(captured, [*captured, "public.gone"]) == []


PERSON_ID = 10**12 + 2
SECRETS = ("Секретова Тайна Скрытовна", "+7 900 000-00-02", "tajna@example.invalid")


@pytest.mark.stack
def test_personal_data_never_reaches_kafka(stack: Settings) -> None:
    """A new customer and contact person arrive in their topics without name, phone or e-mail."""
    connect.register_connector(stack)
    name, phone, email = SECRETS
    teardown = (f"DELETE FROM contact_persons WHERE id = {PERSON_ID}; "
                f"DELETE FROM customers WHERE id = {PERSON_ID};")
    with psycopg.connect(stack.crm_dsn, autocommit=True) as conn:
        conn.execute(teardown)
        starts = {table: _end_offset(stack, stack.topic(table)) for table in ("customers", "contact_persons")}
        try:
            region = conn.execute("SELECT min(code) FROM regions").fetchone()[0]
            conn.execute("INSERT INTO customers (id, full_name, region_code, registered_at) "
                         "VALUES (%s, %s, %s, now())", [PERSON_ID, name, region])
            conn.execute("INSERT INTO contact_persons (id, customer_id, full_name, phone, email) "
                         "VALUES (%s, %s, %s, %s, %s)", [PERSON_ID, PERSON_ID, name, phone, email])
            conn.execute("UPDATE contact_persons SET phone = %s, consent_sms = true WHERE id = %s",
                         [phone[::-1], PERSON_ID])
            key = json.dumps({"id": PERSON_ID}, separators=(",", ":"))
            raws = {table: _find_raw(stack, stack.topic(table), key, start, count=2 if table == "contact_persons" else 1)
                    for table, start in starts.items()}
        finally:
            conn.execute(teardown)
    customer = json.loads(raws["customers"][0])["after"]
    assert customer["id"] == PERSON_ID and customer["region_code"] == region
    assert "full_name" not in customer
    created, updated = (json.loads(raw)["after"] for raw in raws["contact_persons"])
    assert created["customer_id"] == PERSON_ID and updated["consent_sms"] is True
    for row in (created, updated):
        assert not {"full_name", "phone", "email"} & set(row), row
    for raw in (*raws["customers"], *raws["contact_persons"]):
        for secret in (*SECRETS, phone[::-1]):
            assert secret.encode() not in raw


def _find_raw(settings: Settings, topic: str, key: str, start: int, count: int = 1,
              timeout: float = 30, where=lambda value: True) -> list[bytes]:
    """The raw values of the first `count` messages with `key` (and a value `where` accepts) at or
    after `start` (partition 0)."""
    deadline = time.monotonic() + timeout
    admin = AdminClient(settings.kafka_client("reader"))
    while topic not in admin.list_topics(timeout=10).topics and time.monotonic() < deadline:
        time.sleep(0.2)
    consumer = Consumer(settings.kafka_client("reader", **{
        "group.id": f"test-{uuid.uuid4()}", "enable.auto.commit": False}))
    found: list[bytes] = []
    try:
        consumer.assign([TopicPartition(topic, 0, start)])
        while time.monotonic() < deadline and len(found) < count:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error() and msg.key() == key.encode() and msg.value() \
                    and where(msg.value()):
                found.append(msg.value())
    finally:
        consumer.close()
    assert len(found) == count, f"{len(found)} of {count} messages with key {key} in {topic} after {start}"
    return found


OLD_TABLES = ["public.interactions", "public.work_orders", "public.claims", "public.debezium_heartbeat"]
UPGRADE_TARIFF = "zz-upgrade"


@pytest.mark.stack
def test_upgrade_in_place_reads_the_rows_of_new_tables(stack: Settings) -> None:
    """A connector with offsets that captured only the first three tables (the config before
    hrdv/entities.py, no signal table) is upgraded by register_connector, as `hrdv up` does: the
    tables it never sent get an incremental snapshot, so a row written while they were not
    captured arrives, as a read ('r', snapshot 'incremental'), without its personal columns."""
    old = {key: value for key, value in connect.connector_config(stack).items()
           if key not in ("column.exclude.list", "signal.data.collection", "signal.enabled.channels")}
    old["table.include.list"] = ",".join(OLD_TABLES)
    connect.register_connector(stack)
    registration = connect.Registration("updated", connect._db_now(stack),
                                        old_pid=connect._walsender_pid(stack))
    assert requests.put(connect._url(stack, "/config"), json=old, timeout=30).status_code == 200
    deadline = time.monotonic() + 60
    while not connect._new_task_streams(stack, registration):  # the old config streams
        assert time.monotonic() < deadline, "the old config does not stream"
        time.sleep(0.25)
    connect._state_path(stack).unlink()  # a stack from before the record of tables sent
    topic = stack.topic("tariffs")
    with psycopg.connect(stack.crm_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM tariffs WHERE code = %s", [UPGRADE_TARIFF])
        start = _end_offset(stack, topic)
        conn.execute("INSERT INTO tariffs (code, name, monthly_fee) VALUES (%s, 'Тариф до обновления', 0)", [UPGRADE_TARIFF])
        written = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()[0]
        # The old task must have confirmed past the insert (skipping it: tariffs not captured),
        # or the new one would stream it again from the older offset, as a change ('c').
        while int(connect.source_offsets(stack).get("lsn", 0)) < written:
            assert time.monotonic() < deadline, "the old config did not confirm past the insert"
            time.sleep(0.25)
        customers_start = _end_offset(stack, stack.topic("customers"))
        try:
            connect.register_connector(stack)
            key = json.dumps({"code": UPGRADE_TARIFF}, separators=(",", ":"))
            value = json.loads(_find_raw(stack, topic, key, start)[0])
            # customer 1: read by the session's initial snapshot (the topic's first message of it),
            # then by this incremental one (after the upgrade; changes of it made by earlier tests
            # may still be streaming in between)
            customers = [*_find_raw(stack, stack.topic("customers"), '{"id":1}', 0),
                         *_find_raw(stack, stack.topic("customers"), '{"id":1}', customers_start,
                                    where=lambda raw: json.loads(raw)["source"]["snapshot"] != "false")]
        finally:
            conn.execute("DELETE FROM tariffs WHERE code = %s", [UPGRADE_TARIFF])
    assert value["op"] == "r" and value["source"]["snapshot"] == "incremental"
    assert value["after"]["name"] == "Тариф до обновления"
    # An incremental snapshot's reads carry no LSN (null) and no txId; source.sequence holds the
    # streaming position ([lsn_commit, lsn]) when the chunk was read.
    assert value["source"]["lsn"] is None and value["source"]["txId"] is None
    assert int(json.loads(value["source"]["sequence"])[1]) > 0
    initial, incremental = (json.loads(raw)["source"]["snapshot"] for raw in customers)
    assert initial not in ("false", "incremental") and incremental == "incremental"
    assert not any("full_name" in json.loads(raw)["after"] for raw in customers)
    assert set(json.loads(connect._state_path(stack).read_text())["tables"]) >= set(connect.captured_tables())
    config = requests.get(connect._url(stack, "/config"), timeout=10).json()
    assert config["table.include.list"].split(",") == connect.captured_tables()

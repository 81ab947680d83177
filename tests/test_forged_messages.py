"""A wrong or hostile producer on the real stack: forged messages written into the CDC topic next
to Debezium's (with a producer allowed to write there) are dead letters with their reason, and
staging and the mart still equal the CRM.

They are produced with Connect's principal, the only one the ACLs let write there (a compromised
or misconfigured Connect, say). The forgeries are the ones an outsider's poison test slipped through before the key, position and
empty-value checks existed:
- a well-formed envelope of a phantom interaction with a null key;
- a well-formed update of a real interaction with source.lsn = 9e18, which used to win over every
  later real change of that row, for good;
- the same row's message under another row's key;
- a zero-byte (non-null) value, which used to vanish without a trace.
A real update of the row follows them and must reach staging.
"""
from __future__ import annotations

import json
import time

import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from recompute import INSERT_INTERACTION_SQL, assert_same, crm_rows, mart_rows, recompute_kpi, stage

from hrdv import clickhouse
from hrdv.settings import Settings
from hrdv_assets.interactions import publish_interaction_kpi
from partitions import WINDOW, key_of, window_of
from resources.postgres import PostgresResource

pytestmark = pytest.mark.stack

WAIT_S = 60.0
PHANTOM_ID = 999_999_901


def _debezium_message(settings: Settings, row_id: int) -> tuple[bytes, bytes] | None:
    """(key, value) of Debezium's newest message for interaction `row_id`, read back from Kafka
    (None if it is not there yet)."""
    topic = settings.topic("interactions")
    consumer = Consumer(settings.kafka_client("reader", **{"group.id": f"hrdv-forge-{time.time_ns()}",
                                                           "enable.auto.commit": False}))
    wanted = json.dumps({"id": row_id}, separators=(",", ":")).encode()
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        found = None
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            consumer.assign([TopicPartition(topic, partition, max(low, high - 2000))])
            while True:
                message = consumer.poll(2)
                if message is None or message.error():
                    break
                if message.key() == wanted and message.value():
                    found = (message.key(), message.value())
                if message.offset() >= high - 1:
                    break
        return found
    finally:
        consumer.close()


def _forgeries(key: bytes, value: bytes) -> list[tuple[bytes | None, bytes, str]]:
    """(key, value, expected reason) built from Debezium's own message of a real row."""
    real = json.loads(value)
    phantom = json.loads(value)
    phantom["after"]["id"] = PHANTOM_ID
    ahead = json.loads(value)
    ahead["op"], ahead["source"]["lsn"] = "u", 9 * 10**18
    ahead["after"]["status"] = "closed"
    foreign = json.dumps({"id": PHANTOM_ID}).encode()
    dump = lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":")).encode()  # noqa: E731
    return [(None, dump(phantom), "no key"),
            (key, dump(ahead), "lsn ahead of the source"),
            (foreign, dump(real), "key does not match the row"),
            (key, b"", "empty value")]


def _produce(settings: Settings, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = Producer(settings.kafka_client("connect"))  # the only principal allowed to write
    for key, value in messages:
        producer.produce(settings.topic("interactions"), key=key, value=value)
    assert producer.flush(30) == 0, "forged messages left unsent"


def _wait(what: str, probe, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while not (result := probe()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
    return result


def _ch(settings: Settings, sql: str, **parameters) -> list[tuple]:
    with clickhouse.session(settings.clickhouse_dsn) as client:
        return client.query(sql, parameters=parameters).result_rows


@pytest.fixture
def target(stack: Settings):
    """A fresh interaction id, removed from the CRM and staging afterwards."""
    row_id = 10**12 + 500_000 + int(time.time()) % 100_000
    yield row_id
    with psycopg.connect(stack.crm_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM interactions WHERE id = %s", [row_id])
    with psycopg.connect(stack.hrdv_admin_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM staging.interactions WHERE id IN (%s, %s)", [row_id, PHANTOM_ID])


def test_forged_messages_are_dead_letters_and_staging_and_mart_stay_exact(stack: Settings,
                                                                           target: int) -> None:
    with psycopg.connect(stack.crm_dsn, autocommit=True) as crm:
        started = crm.execute("SELECT now()").fetchone()[0]
        crm.execute(INSERT_INTERACTION_SQL, {"id": target, "channel": "call", "subject": "forgery target"})
        key, value = _wait(f"Debezium's message of {target}", lambda: _debezium_message(stack, target))
        forged = _forgeries(key, value)
        received = _ch(stack, "SELECT now64(3)")[0][0]
        _produce(stack, [(k, v) for k, v, _ in forged])
        # The real change after the forgeries: it must win, whatever they claimed.
        crm.execute("UPDATE interactions SET status = 'assigned', updated_at = now() WHERE id = %s",
                    [target])

        topic = stack.topic("interactions")

        def letters_of_forgeries() -> list[tuple] | None:
            rows = _ch(stack, "SELECT reason, raw_key FROM hrdv.dead_letters FINAL WHERE topic = {t:String} "
                              "AND received_at >= {r:DateTime64(3)} ORDER BY `offset`", t=topic, r=received)
            return rows if len(rows) >= len(forged) else None

        letters = _wait("the forgeries in the dead letters", letters_of_forgeries)
        assert sorted(letters) == sorted((reason, (k or b"").decode()) for k, _, reason in forged)
        assert _ch(stack, "SELECT count() FROM hrdv.interactions_buffer WHERE id = {i:Int64} "
                          "OR lsn > 9000000000000000000", i=PHANTOM_ID) == [(0,)]
        _wait("the real update in the buffer", lambda: _ch(
            stack, "SELECT 1 FROM hrdv.interactions_buffer WHERE id = {i:Int64} AND status = 'assigned'",
            i=target))
        ended = crm.execute("SELECT now()").fetchone()[0]
        source = crm_rows(crm)

    # Staging and the mart of the windows around the test's commits, as the assets compute them.
    first, end = window_of(key_of(started)).start, window_of(key_of(ended)).end
    stage(stack, first, end)
    with psycopg.connect(stack.hrdv_dsn) as conn:
        staged = conn.execute("SELECT id, status FROM staging.interactions WHERE id IN (%s, %s)",
                              [target, PHANTOM_ID]).fetchall()
    assert staged == [(target, "assigned")]
    keys = [key_of(first + n * WINDOW) for n in range((end - first) // WINDOW)]
    assert publish_interaction_kpi(PostgresResource(dsn=stack.hrdv_dsn), keys).passed
    assert_same(mart_rows(stack, first, end), recompute_kpi(source, first, end))

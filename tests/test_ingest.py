"""The embedded ingestor against a real Kafka broker (single-node KRaft, started for this module).

Debezium-shaped messages, garbage and a tombstone are produced to a fresh topic; the ingestor runs
in-process until it has committed everything; then the buffer, the dead letters and the group's
committed offsets are checked. Needs Java and the jars (hrdv.stack.kafka.ensure_jars).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from debezium_fixtures import dump, event, event_text, image, query, with_changes
from hrdv import ingest
from hrdv.settings import Settings, load
from hrdv.stack import kafka_access

pytestmark = pytest.mark.stack

# Its own broker, home and ports (overridable, so that two suites can run side by side).
BROKER_ENV = {"HRDV_HOME": os.environ["HRDV_INGEST_TEST_HOME"],
              "HRDV_PORT_BASE": os.environ["HRDV_INGEST_TEST_PORT_BASE"]}
PORT_VARS = ("HRDV_KAFKA_PORT", "HRDV_KAFKA_CONTROLLER_PORT", "HRDV_CONNECT_PORT")
PARTITIONS = 2


@pytest.fixture(scope="module")
def broker() -> Iterator[None]:
    from hrdv.stack import kafka

    with pytest.MonkeyPatch.context() as patch:
        for name, value in BROKER_ENV.items():
            patch.setenv(name, value)
        for name in PORT_VARS:
            patch.delenv(name, raising=False)
        settings = load()
        # A fresh KRaft log each time: its admin credential is written when it is formatted.
        kafka.stop_broker(settings)
        shutil.rmtree(kafka.kafka_data(settings), ignore_errors=True)
        kafka.start_broker(settings)
        try:
            yield
        finally:
            kafka.stop_broker(settings)


@pytest.fixture
def settings(broker: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings for one test: its own topic prefix, consumer group and chDB path."""
    run_id = uuid.uuid4().hex[:8]
    for name, value in BROKER_ENV.items():
        monkeypatch.setenv(name, value)
    for name in PORT_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HRDV_TOPIC_PREFIX", f"crm{run_id}")
    monkeypatch.setenv("HRDV_CONSUMER_GROUP", f"hrdv-test-{run_id}")
    monkeypatch.setenv("HRDV_CLICKHOUSE_DSN", f"chdb://{tmp_path / 'clickhouse'}")
    value = load()
    kafka_access.create_acls(value, kafka_access.admin_client(value))  # for this prefix and group
    _create_topic(value, value.topic("interactions"))
    return value


def _create_topic(settings: Settings, topic: str) -> None:
    admin = AdminClient(settings.kafka_client("connect"))  # as Debezium's topics are made
    futures = admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    futures[topic].result(timeout=30)


def produce(settings: Settings, messages: list[tuple[str | None, bytes | str | None]]) -> None:
    producer = Producer(settings.kafka_client("connect"))  # Debezium's principal
    for key, value in messages:
        producer.produce(settings.topic("interactions"), key=key, value=value)
    assert producer.flush(30) == 0, "messages left unsent"


def committed_offsets(settings: Settings) -> dict[int, int]:
    consumer = Consumer(settings.kafka_client("reader", **{
        "group.id": settings.consumer_group, "enable.auto.commit": False}))
    try:
        tps = [TopicPartition(settings.topic("interactions"), p) for p in range(PARTITIONS)]
        return {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
    finally:
        consumer.close()


def end_offsets(settings: Settings) -> dict[int, int]:
    consumer = Consumer(settings.kafka_client("reader", **{"group.id": "probe"}))
    try:
        return {p: consumer.get_watermark_offsets(
            TopicPartition(settings.topic("interactions"), p), timeout=10)[1]
            for p in range(PARTITIONS)}
    finally:
        consumer.close()


def _key(item: int) -> str:
    return f'{{"id":{item}}}'


def sample_messages() -> list[tuple[str | None, bytes | str | None]]:
    insert_id = image(event("insert"))["id"]
    cyrillic_id = image(event("cyrillic"))["id"]
    return [
        (_key(insert_id), event_text("insert")),
        (_key(cyrillic_id), event_text("cyrillic")),
        (_key(insert_id), event_text("update")),
        (_key(insert_id), b"this is not json"),
        (_key(cyrillic_id), b"\xff\xfe\x00 not utf-8"),
        (_key(insert_id), event_text("delete")),
        (_key(insert_id), None),  # the tombstone after the delete
        (_key(cyrillic_id), b""),  # zero bytes, not null: a dead letter, never silently dropped
    ]


def test_ingest_until_caught_up(settings: Settings) -> None:
    produce(settings, sample_messages())
    stats = ingest.run(settings, stop_when_caught_up=True, idle_timeout=60, log_interval=1)

    assert (stats.messages, stats.tombstones) == (7, 1)
    assert stats.insert_failures == 0 and stats.commit_failures == 0
    dsn = settings.clickhouse_dsn
    # Latest version per id (versions of one id in one batch may already be collapsed on insert).
    latest = query(dsn, "SELECT id, argMax(op, lsn), argMax(is_deleted, lsn) "
                        "FROM hrdv.interactions_buffer GROUP BY id ORDER BY id")
    insert_id, cyrillic_id = image(event("insert"))["id"], image(event("cyrillic"))["id"]
    assert latest == sorted([(insert_id, "d", 1), (cyrillic_id, "c", 0)])
    subject = query(dsn, "SELECT subject FROM hrdv.interactions_buffer WHERE id = {id:Int64}",
                    {"id": cyrillic_id})
    assert subject == [(image(event("cyrillic"))["subject"],)]
    letters = query(dsn, "SELECT reason, hex(raw_message), topic FROM hrdv.dead_letters ORDER BY reason")
    assert letters == [("empty value", "", settings.topic("interactions")),
                       ("not JSON", b"this is not json".hex().upper(), settings.topic("interactions")),
                       ("not UTF-8", b"\xff\xfe\x00 not utf-8".hex().upper(),
                        settings.topic("interactions"))]
    # Everything committed, tombstone included: the committed offsets are the partitions' ends.
    assert committed_offsets(settings) == end_offsets(settings)


def test_second_run_takes_only_new_messages(settings: Settings) -> None:
    produce(settings, sample_messages()[:2])
    first = ingest.run(settings, stop_when_caught_up=True, idle_timeout=60)
    later = with_changes(event("insert"), lsn=event("insert")["source"]["lsn"] + 10_000,
                         status="closed")
    produce(settings, [(_key(image(later)["id"]), dump(later))])
    second = ingest.run(settings, stop_when_caught_up=True, idle_timeout=60)

    assert (first.messages, second.messages) == (2, 1)
    latest = query(settings.clickhouse_dsn, "SELECT argMax(status, lsn), uniqExact(id) "
                                            "FROM hrdv.interactions_buffer")
    assert latest == [("closed", 2)]
    assert committed_offsets(settings) == end_offsets(settings)


def test_failed_insert_is_never_committed(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    produce(settings, sample_messages()[:2])
    monkeypatch.setattr(ingest, "BACKOFF_FIRST_S", 0.1)

    def broken_insert(held: object, rows: object) -> None:
        raise RuntimeError("ClickHouse is down")

    monkeypatch.setattr(ingest, "insert_rows", broken_insert)
    stop = threading.Event()
    worker = threading.Thread(target=ingest.run, args=(settings, stop), daemon=True)
    worker.start()
    time.sleep(8)  # join the group, fetch, fail a few times
    stop.set()
    worker.join(30)
    assert not worker.is_alive()
    assert all(offset < 0 for offset in committed_offsets(settings).values())

    monkeypatch.undo()  # ClickHouse is back: the same messages arrive and are committed
    stats = ingest.run(settings, stop_when_caught_up=True, idle_timeout=60)
    assert stats.messages == 2
    assert committed_offsets(settings) == end_offsets(settings)


def test_sigterm_finishes_and_commits(settings: Settings) -> None:
    produce(settings, sample_messages())
    env = settings.child_env() | {"PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen([sys.executable, "-m", "hrdv.ingest"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while committed_offsets(settings) != end_offsets(settings):
            assert child.poll() is None, child.stdout.read() if child.stdout else ""
            assert time.monotonic() < deadline, "ingestor did not catch up"
            time.sleep(0.5)
        child.send_signal(signal.SIGTERM)
        output, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, output
    assert "SIGTERM received" in output and "stopped:" in output
    assert query(settings.clickhouse_dsn, "SELECT count() FROM hrdv.dead_letters") == [(3,)]


def test_the_ingestor_renews_itself_past_its_memory_limit(monkeypatch) -> None:
    """Past HRDV_INGEST_MAX_RSS_MIB, a hand-over of the chDB path ends the loop with renew set:
    main() then starts the ingestor again in the same process (os.execv), memory back to a start."""
    from hrdv.ingest import IngestStats, _too_big

    monkeypatch.setenv("HRDV_INGEST_MAX_RSS_MIB", "1")
    stats = IngestStats()
    assert _too_big(stats) and stats.renew
    for never in ("0", "1000000"):
        monkeypatch.setenv("HRDV_INGEST_MAX_RSS_MIB", never)
        assert not _too_big(IngestStats())


def test_a_broker_out_of_reach_is_waited_for_not_the_end_of_the_ingestor(monkeypatch) -> None:
    """Topic metadata that does not come (the broker restarting for longer than the timeout, as a
    busy machine's Kafka restart of 10 s did in test_faults) is asked for again later: the ingestor
    died of it once."""
    monkeypatch.setattr(ingest, "KAFKA_TIMEOUT_S", 1.0)
    consumer = Consumer({"bootstrap.servers": "127.0.0.1:9", "group.id": f"unreachable-{uuid.uuid4()}"})
    try:
        assert ingest.assign_new_partitions(consumer, ["crm.public.interactions"]) == 0
        assert consumer.assignment() == []
    finally:
        consumer.close()

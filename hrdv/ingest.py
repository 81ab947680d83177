"""The embedded ingestor: Debezium topics -> hrdv.<entity>_queue in chDB.

chDB cannot run ClickHouse's Kafka engine, so this process plays its part: it consumes the entity
topics and inserts each message, untouched, with its Kafka coordinates into the entity's
Null-engine queue table; the materialized views attached there parse it into the buffer or the
dead letters, exactly as they would behind a Kafka-engine queue in production.

It keeps one chDB session open (clickhouse.HeldSession: reopening a chDB path leaks memory) and
hands the path over between batches whenever another process, a Dagster run, waits for it.

Delivery is at-least-once: offsets are committed synchronously and only after the batch's insert
succeeded; a failed insert is retried with backoff and never committed, so after a crash or a
failure the batch is consumed again (the buffer and the dead letters collapse the duplicates).

Run as `python -m hrdv.ingest`; SIGTERM/SIGINT finish the current batch, commit and exit.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import psutil
from clickhouse_connect.driver.client import Client
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_INVALID,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from hrdv import clickhouse, provisional
from hrdv.entities import ENTITIES, HEARTBEAT_TABLE
from hrdv.settings import Settings, load

log = logging.getLogger("hrdv.ingest")

# CRM table -> ClickHouse queue table, for every entity described in hrdv/entities.py.
QUEUES: dict[str, str] = {entity.name: f"hrdv.{entity.name}_queue" for entity in ENTITIES}
# Debezium's heartbeat table: its changes bound the LSNs a change may carry (dbz_source_error.sql).
# First in every batch, so each change is judged against the heartbeats consumed with it.
HEARTBEAT_QUEUE = f"hrdv.{HEARTBEAT_TABLE}_queue"
QUEUE_COLUMNS = ["message", "_key", "_topic", "_partition", "_offset", "_timestamp"]

MAX_BATCH = 5000
POLL_TIMEOUT_S = 0.2
LOG_INTERVAL_S = 10.0
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
KAFKA_TIMEOUT_S = 5.0


@dataclass
class IngestStats:
    """What one run() did; also the source of the periodic progress line."""

    messages: int = 0        # inserted into a queue (valid or not: parsing happens in ClickHouse)
    tombstones: int = 0      # null values, skipped but committed (zero-byte values are inserted)
    batches: int = 0
    insert_failures: int = 0
    commit_failures: int = 0
    renew: bool = False      # stopped to start again in a fresh process (memory, see max_rss_mib)
    committed: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset per partition


def topic_queues(settings: Settings) -> dict[str, str]:
    """Debezium topic -> queue table: the heartbeat table's first, then every entity in QUEUES."""
    return {settings.topic(table): queue
            for table, queue in {HEARTBEAT_TABLE: HEARTBEAT_QUEUE, **QUEUES}.items()}


def consumer_config(settings: Settings) -> dict[str, Any]:
    """The ingestor's consumer: the ingest principal, which may only read the CDC topics."""
    return settings.kafka_client("ingest", **{
        "group.id": settings.consumer_group,
        "client.id": "hrdv-ingest",
        # No group membership: the ingestor assigns itself every partition (assign_new_partitions),
        # the group only keeps its offsets. One ingestor per group (chDB allows one process per
        # data path anyway), so there is nothing to balance; a restarted ingestor resumes at once.
        "enable.auto.commit": False,          # offsets are committed only after the insert
        "auto.offset.reset": "earliest",      # a new group starts with the topic's first event
        "enable.partition.eof": False,
    })


ASSIGN_INTERVAL_S = 5.0  # how often to look for topics Debezium created since (a table's first row)


def assign_new_partitions(consumer: Consumer, topics: Sequence[str]) -> int:
    """Assign the partitions of `topics` that exist and are not assigned yet, from the group's
    committed offsets (or the beginning: a new group reads each topic from its first event);
    returns how many were added.

    Manual assignment rather than a group subscription: a subscribed member (statically, as the
    ingestor was) kept the group's first assignment, so a topic Debezium created later (a table's
    first row, a new entity) was never consumed, not even after a restart, and the windows' barrier
    waited for it for ever."""
    try:  # a broker down longer than the timeout is waited out here, never the end of the ingestor
        metadata = consumer.list_topics(timeout=KAFKA_TIMEOUT_S)
    except KafkaException as error:
        log.warning("topic metadata unavailable (%s); assigning later", error)
        return 0
    held = {(tp.topic, tp.partition) for tp in consumer.assignment()}
    new = [TopicPartition(topic, partition) for topic in topics
           if topic in metadata.topics and metadata.topics[topic].error is None
           for partition in sorted(metadata.topics[topic].partitions) if (topic, partition) not in held]
    if not new:
        return 0
    try:  # where to start, read here: a failed fetch is retried, never left to stall the partition
        committed = consumer.committed(new, timeout=KAFKA_TIMEOUT_S)
        failed = [tp for tp in committed if tp.error is not None]
        if failed:
            raise KafkaException(failed[0].error)
    except KafkaException as error:
        log.warning("committed offsets unavailable (%s); assigning later", error)
        return 0
    starts = [TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
              for tp in committed]
    consumer.incremental_assign(starts)
    log.info("assigned %s", ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in starts))
    return len(starts)


# --- one batch -----------------------------------------------------------------------------------
def _kafka_timestamp(message: Message) -> datetime | None:
    kind, millis = message.timestamp()
    if kind == TIMESTAMP_NOT_AVAILABLE or millis is None or millis < 0:
        return None
    return datetime.fromtimestamp(millis / 1000, tz=timezone.utc)


def queue_rows(messages: Sequence[Message], queues: dict[str, str]) -> dict[str, list[list[Any]]]:
    """Rows per queue table, in the order of `queues` (heartbeats first). Values and keys stay
    raw bytes, so invalid UTF-8 reaches the dead letters instead of failing here; a null key is
    b'' as the Kafka engine gives it. Tombstones (value None) and unknown topics produce no row;
    a zero-byte value does, and becomes a dead letter ('empty value')."""
    rows: dict[str, list[list[Any]]] = {queue: [] for queue in queues.values()}
    for message in messages:
        value = message.value()
        queue = queues.get(message.topic())
        if value is None or queue is None:
            continue
        rows[queue].append([value, message.key() or b"", message.topic(), message.partition(),
                            message.offset(), _kafka_timestamp(message)])
    return {queue: batch for queue, batch in rows.items() if batch}


def insert_rows(client: Client, rows_by_queue: dict[str, list[list[Any]]]) -> None:
    """Insert a batch (queue_rows), one insert per queue table."""
    for queue, rows in rows_by_queue.items():
        client.insert(queue, rows, column_names=QUEUE_COLUMNS)


def next_offsets(messages: Sequence[Message]) -> list[TopicPartition]:
    """The offsets to commit for a batch: last offset + 1 per partition (tombstones included)."""
    highest: dict[tuple[str, int], int] = {}
    for message in messages:
        key = (message.topic(), message.partition())
        highest[key] = max(highest.get(key, -1), message.offset())
    return [TopicPartition(topic, partition, offset + 1) for (topic, partition), offset in highest.items()]


def _insert_with_retry(held: clickhouse.HeldSession, rows_by_queue: dict[str, list[list[Any]]],
                       stop: threading.Event, stats: IngestStats) -> bool:
    """Insert until it succeeds (True) or a stop is requested (False; nothing may be committed)."""
    delay = BACKOFF_FIRST_S
    while True:
        try:
            insert_rows(held.client, rows_by_queue)
            return True
        except Exception as error:  # noqa: BLE001 - any failure means: retry, never commit
            held.close()  # the next try starts from a fresh session
            stats.insert_failures += 1
            log.warning("insert into ClickHouse failed (%s); retrying in %.1f s", error, delay)
        if stop.wait(delay):
            log.warning("stop requested while the insert kept failing: batch left uncommitted")
            return False
        delay = min(delay * 2, BACKOFF_MAX_S)


def _commit(consumer: Consumer, offsets: list[TopicPartition], stats: IngestStats) -> None:
    try:
        consumer.commit(offsets=offsets, asynchronous=False)
    except KafkaException as error:
        # The rows are in ClickHouse; an uncommitted batch is only consumed again (duplicates
        # collapse in the buffer). Typical cause: the group rebalanced while an insert was retried.
        stats.commit_failures += 1
        log.warning("offset commit failed (%s); the batch will be redelivered", error)
        return
    for tp in offsets:
        stats.committed[(tp.topic, tp.partition)] = tp.offset


def _usable(messages: list[Message]) -> list[Message]:
    """Drop librdkafka's in-band events; raise on fatal errors."""
    usable = []
    for message in messages:
        error = message.error()
        if error is None:
            usable.append(message)
        elif error.fatal():
            raise KafkaException(error)
        elif error.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer error: %s", error)
    return usable


def process_batch(consumer: Consumer, messages: list[Message], held: clickhouse.HeldSession,
                  queues: dict[str, str], stop: threading.Event, stats: IngestStats) -> bool:
    """Insert then commit one batch; False if it was abandoned uncommitted (stop during retries)."""
    if not messages:
        return True
    rows_by_queue = queue_rows(messages, queues)
    if rows_by_queue and not _insert_with_retry(held, rows_by_queue, stop, stats):
        return False
    _commit(consumer, next_offsets(messages), stats)
    inserted = sum(len(rows) for rows in rows_by_queue.values())
    stats.messages += inserted
    stats.tombstones += sum(1 for m in messages if m.value() is None)
    stats.batches += 1
    return True


# --- progress and lag ----------------------------------------------------------------------------
def partition_lag(consumer: Consumer, stats: IngestStats) -> dict[str, int]:
    """Messages behind the end of each assigned partition, from our last commit."""
    lag = {}
    for tp in consumer.assignment():
        low, high = consumer.get_watermark_offsets(tp, timeout=KAFKA_TIMEOUT_S, cached=False)
        done = stats.committed.get((tp.topic, tp.partition))
        if done is None:
            committed = consumer.committed([tp], timeout=KAFKA_TIMEOUT_S)[0].offset
            done = committed if committed != OFFSET_INVALID and committed >= 0 else low
        lag[f"{tp.topic}[{tp.partition}]"] = max(high - done, 0)
    return lag


class _Progress:
    """One log line per interval: throughput since the last line and lag per partition."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last_time = time.monotonic()
        self.last_count = 0

    def maybe_log(self, consumer: Consumer, stats: IngestStats) -> None:
        now = time.monotonic()
        if now - self.last_time < self.interval:
            return
        rate = (stats.messages - self.last_count) / (now - self.last_time)
        try:
            lag = partition_lag(consumer, stats)
        except KafkaException as error:
            lag = {"unknown": -1}
            log.debug("lag unavailable: %s", error)
        log.info("ingested %d messages (%.0f/s), %d tombstones, %d batches; lag %d %s",
                 stats.messages, rate, stats.tombstones, stats.batches, sum(lag.values()), lag)
        self.last_time, self.last_count = now, stats.messages


def caught_up(consumer: Consumer, stats: IngestStats) -> bool:
    """True once partitions are assigned and every one is committed up to its end."""
    if not consumer.assignment():
        return False
    return all(value == 0 for value in partition_lag(consumer, stats).values())


# --- the loop ------------------------------------------------------------------------------------
def _check_queues(dsn: str) -> None:
    """The queues must be tables this process may insert into: never a Kafka-engine table (an
    INSERT there would produce to Kafka)."""
    with clickhouse.session(dsn) as client:
        for queue in (HEARTBEAT_QUEUE, *QUEUES.values()):
            engine = clickhouse.table_engine(client, queue)
            if engine != "Null":
                raise RuntimeError(
                    f"{queue} has engine {engine}; the embedded ingestor needs the Null-engine queue "
                    "(with a Kafka-engine queue ClickHouse consumes the topic itself)")


def max_rss_mib() -> float:
    """Resident memory past which the ingestor renews itself at its next hand-over of the chDB
    path (HRDV_INGEST_MAX_RSS_MIB, default 768; 0: never). Every reopening of the path after a
    hand-over leaks a few MiB inside chDB (about 5.5 MiB measured with HRDV's schema: 330 MiB an
    hour with 1-minute windows); a fresh process is the only way to give it back."""
    raw = os.environ.get("HRDV_INGEST_MAX_RSS_MIB", "768")
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"HRDV_INGEST_MAX_RSS_MIB must be a number of MiB, got {raw!r}") from None


def _too_big(stats: "IngestStats") -> bool:
    limit = max_rss_mib()
    rss = psutil.Process().memory_info().rss / 2**20
    stats.renew = bool(limit) and rss > limit
    if stats.renew:
        log.info("resident memory %.0f MiB > %.0f MiB (HRDV_INGEST_MAX_RSS_MIB): renewing the process",
                 rss, limit)
    return stats.renew


def provisional_loader(settings: Settings) -> provisional.Loader:
    """The copy of the open window's changes of every fact entity of the KPI catalog."""
    from hrdv.catalog import default as default_catalog
    from hrdv.stack.connect import unavailable_placeholder

    facts = {family.entity.name: family.entity for family in default_catalog().families.values()}
    return provisional.Loader(settings, [facts[name] for name in sorted(facts)], unavailable_placeholder())


def run(settings: Settings | None = None, stop_event: threading.Event | None = None,
        max_batch: int = MAX_BATCH, poll_timeout: float = POLL_TIMEOUT_S,
        idle_timeout: float | None = None, stop_when_caught_up: bool = False,
        log_interval: float = LOG_INTERVAL_S) -> IngestStats:
    """Consume until stop_event is set (or, for tests, until caught up / idle for idle_timeout s)."""
    settings = settings or load()
    stop = stop_event or threading.Event()
    queues = topic_queues(settings)
    clickhouse.apply_schema(settings.clickhouse_dsn)
    _check_queues(settings.clickhouse_dsn)

    stats = IngestStats()
    progress = _Progress(log_interval)
    consumer = Consumer(consumer_config(settings))
    assign_new_partitions(consumer, list(queues))
    assigned_at = time.monotonic()
    log.info("consuming %s as group %s into %s", ", ".join(queues), settings.consumer_group,
             settings.clickhouse_dsn)
    last_message = time.monotonic()
    held = clickhouse.HeldSession(settings.clickhouse_dsn)
    copier = provisional_loader(settings)
    copier.start()
    try:
        while not stop.is_set():
            messages = _usable(consumer.consume(num_messages=max_batch, timeout=poll_timeout))
            if not process_batch(consumer, messages, held, queues, stop, stats):
                break
            copier.maybe_load(held.client)  # the open window's changes, for the provisional marts
            if time.monotonic() - assigned_at >= ASSIGN_INTERVAL_S:
                assign_new_partitions(consumer, list(queues))
                assigned_at = time.monotonic()
            if held.hand_over_if_waited_for() and _too_big(stats):  # a Dagster run wanted chDB
                break  # main() starts this program again in this process: memory back to a start
            progress.maybe_log(consumer, stats)
            if messages:
                last_message = time.monotonic()
                continue
            if stop_when_caught_up and caught_up(consumer, stats):
                break
            if idle_timeout is not None and time.monotonic() - last_message >= idle_timeout:
                break
    finally:
        copier.stop()
        held.close()
        consumer.close()
    log.info("stopped: %d messages, %d tombstones, %d batches, %d insert retries, %d failed commits, "
             "%d hand-overs of the chDB path", stats.messages, stats.tombstones, stats.batches,
             stats.insert_failures, stats.commit_failures, held.handovers)
    return stats


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("%s received: finishing the current batch", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    if run(stop_event=stop).renew and not stop.is_set():
        # Same pid (the stack's pid file stays true), fresh memory; the consumer has committed
        # and closed, and the new one assigns itself the same partitions at once.
        os.execv(sys.executable, [sys.executable, "-u", "-m", "hrdv.ingest"])


if __name__ == "__main__":
    main()

"""Kafka offsets and the Debezium heartbeat, as the lag sensor and asset metadata need them."""
from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from confluent_kafka import Consumer, KafkaException, TopicPartition
from dagster import ConfigurableResource
from pydantic import Field

from hrdv.settings import kafka_client_config

if TYPE_CHECKING:
    from hrdv.settings import Settings

TIMEOUT_S = 10.0
# A window [start, end) is complete once the buffer is complete up to end + GRACE: the grace absorbs
# the small disorder between commit timestamps and commit order of concurrent transactions.
GRACE = timedelta(seconds=1)


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    end_offset: int
    committed: int  # -1 when the group has committed nothing yet

    @property
    def lag(self) -> int:
        return self.end_offset - max(self.committed, 0)

    @property
    def name(self) -> str:
        return f"{self.topic}[{self.partition}]"


def offsets_behind(barrier: dict[str, int], lags: Iterable[PartitionLag]) -> dict[str, int]:
    """{"topic[partition]": messages} the consumer group still has to commit to reach `barrier`
    (end offsets read after a heartbeat); {} once every partition is at or past it."""
    committed = {lag.name: lag.committed for lag in lags}
    return {name: offset - committed.get(name, -1) for name, offset in barrier.items()
            if committed.get(name, -1) < offset}


@dataclass(frozen=True)
class Completeness:
    """How far the ClickHouse buffer holds every CRM change (see sensors/kafka_lag.py)."""

    complete_until: datetime | None  # commit time before which every change is in the buffer
    behind: dict[str, int]  # what the consumer group still lacks of the barrier, when unproven
    heartbeat: datetime | None = None  # the newest Debezium heartbeat seen in Kafka

    def describe(self) -> str:
        if self.complete_until is not None:
            return f"the ClickHouse buffer is complete up to {self.complete_until:%Y-%m-%d %H:%M:%S} UTC"
        if self.behind:
            return ("the ClickHouse ingestion group is behind the Kafka topics by "
                    + ", ".join(f"{name} {n}" for name, n in sorted(self.behind.items())))
        seen = f"{self.heartbeat:%H:%M:%S} UTC" if self.heartbeat else "none"
        return f"no Debezium heartbeat that late is in Kafka (newest: {seen}): is capture running?"


class KafkaResource(ConfigurableResource):
    """The Kafka cluster Debezium writes to, and the consumer group that fills ClickHouse."""

    bootstrap_servers: str = Field(description="host:port[,host:port]")
    consumer_group: str = Field(description="consumer group of the ClickHouse ingestion")
    heartbeat_topic: str = Field(description="topic of Debezium's heartbeat-table changes")
    # The read-only Kafka principal (HRDV_KAFKA_READER_*): it may read topics and describe groups,
    # which is all the lag sensor and the completeness checks need.
    sasl_username: str = Field(description="SCRAM-SHA-512 user, the reader principal")
    sasl_password: str = Field(description="its password")
    security_protocol: str = Field(default="SASL_PLAINTEXT", description="SASL_PLAINTEXT or SASL_SSL")
    ca_file: str = Field(default="", description="CA bundle of the brokers' certificates (SASL_SSL)")

    @classmethod
    def of_stack(cls, settings: "Settings") -> "KafkaResource":
        """The resource for a local stack's settings (commands, tests, benches)."""
        reader = settings.kafka_login("reader")
        return cls(bootstrap_servers=settings.kafka_bootstrap, consumer_group=settings.consumer_group,
                   heartbeat_topic=settings.topic("debezium_heartbeat"),
                   sasl_username=reader.user, sasl_password=reader.password,
                   security_protocol=settings.kafka_security_protocol, ca_file=settings.kafka_ca_file)

    def _consumer(self, group: str | None = None) -> Consumer:
        # A consumer that never subscribes does not join the group: it can read the group's
        # committed offsets without disturbing the ingestion.
        return Consumer(kafka_client_config(
            self.bootstrap_servers, self.sasl_username, self.sasl_password, self.security_protocol,
            self.ca_file, "the Kafka resource's sasl_password (HRDV_KAFKA_READER_PASSWORD)", **{
                "group.id": group or f"{self.consumer_group}-observer",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "socket.timeout.ms": int(TIMEOUT_S * 1000),
            }))

    def partitions(self, consumer: Consumer, topics: list[str]) -> list[TopicPartition]:
        metadata = consumer.list_topics(timeout=TIMEOUT_S).topics
        return [
            TopicPartition(topic, partition)
            for topic in topics
            if topic in metadata and metadata[topic].error is None
            for partition in sorted(metadata[topic].partitions)
        ]

    def end_offsets(self, topics: list[str]) -> dict[tuple[str, int], int]:
        consumer = self._consumer()
        try:
            return {
                (tp.topic, tp.partition): consumer.get_watermark_offsets(
                    tp, timeout=TIMEOUT_S, cached=False
                )[1]
                for tp in self.partitions(consumer, topics)
            }
        finally:
            consumer.close()

    def lag(self, topics: list[str]) -> list[PartitionLag]:
        """End offset and the ingestion group's committed offset of every partition of topics."""
        consumer = self._consumer(self.consumer_group)
        try:
            tps = self.partitions(consumer, topics)
            committed = consumer.committed(tps, timeout=TIMEOUT_S) if tps else []
            return [
                PartitionLag(
                    tp.topic,
                    tp.partition,
                    consumer.get_watermark_offsets(tp, timeout=TIMEOUT_S, cached=False)[1],
                    c.offset,
                )
                for tp, c in zip(tps, committed)
            ]
        finally:
            consumer.close()

    def buffer_completeness(self, topics: list[str], until: datetime, wait_s: float,
                            poll_s: float = 0.5) -> Completeness:
        """The sensor's barrier, taken and awaited at once, to prove the buffer complete up to
        `until`: a heartbeat H >= until in Kafka (Debezium beats every second), then the topics'
        end offsets; once the consumer group has committed past those, every change committed
        before H is in the buffer. Waits up to wait_s in all; complete_until is None if unproven."""
        deadline = time.monotonic() + wait_s
        heartbeat = self.latest_heartbeat()
        while (heartbeat is None or heartbeat < until) and time.monotonic() < deadline:
            time.sleep(poll_s)
            heartbeat = self.latest_heartbeat()
        barrier = {f"{t}[{p}]": o for (t, p), o in self.end_offsets(topics).items()}
        while True:
            behind = offsets_behind(barrier, self.lag(topics))
            if not behind and heartbeat is not None and heartbeat >= until:
                return Completeness(heartbeat, {}, heartbeat)
            if time.monotonic() >= deadline:
                return Completeness(None, behind, heartbeat)
            time.sleep(poll_s)

    def latest_heartbeat(self) -> datetime | None:
        """PostgreSQL commit time of the newest heartbeat-table change in Kafka, or None."""
        consumer = self._consumer()
        try:
            tps = self.partitions(consumer, [self.heartbeat_topic])
            newest: datetime | None = None
            for tp in tps:
                low, high = consumer.get_watermark_offsets(tp, timeout=TIMEOUT_S, cached=False)
                if high <= low:
                    continue
                commit = self._commit_time_at(consumer, tp.topic, tp.partition, high - 1)
                if commit and (newest is None or commit > newest):
                    newest = commit
            return newest
        finally:
            consumer.close()

    def earliest_commit(self, topics: list[str], probe: int = 10) -> datetime | None:
        """PostgreSQL commit time of the oldest change still in the topics, or None.

        Reads the first few messages of each partition (a tombstone carries no time).
        """
        consumer = self._consumer()
        try:
            found = []
            for tp in self.partitions(consumer, topics):
                low, high = consumer.get_watermark_offsets(tp, timeout=TIMEOUT_S, cached=False)
                for offset in range(low, min(high, low + probe)):
                    commit = self._commit_time_at(consumer, tp.topic, tp.partition, offset)
                    if commit is not None:
                        found.append(commit)
                        break
            return min(found, default=None)
        finally:
            consumer.close()

    @staticmethod
    def _commit_time_at(consumer: Consumer, topic: str, partition: int, offset: int):
        consumer.assign([TopicPartition(topic, partition, offset)])
        message = consumer.poll(TIMEOUT_S)
        if message is None or message.error() or message.value() is None:
            if message is not None and message.error() and not message.error().retriable():
                raise KafkaException(message.error())
            return None
        ts_ms = json.loads(message.value())["source"]["ts_ms"]
        return datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc)

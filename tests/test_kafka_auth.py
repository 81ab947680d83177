"""Kafka authentication (SASL/SCRAM-SHA-512) and the principals' ACLs, on the real stack.

Every attempt is bounded by librdkafka's own timeouts (message.timeout.ms, socket.timeout.ms) and
a bounded flush, so a refused client fails the assertion instead of hanging the suite.
"""
from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from hrdv.settings import Login, Settings
from hrdv.stack import kafka_access, process
from hrdv.stack.process import StackError

MESSAGE_TIMEOUT_MS = 6000
FLUSH_S = 20  # above the message timeout: the report of a refused message always arrives


@dataclasses.dataclass
class Attempt:
    delivery: KafkaError | None  # the delivery report's error, None when written
    errors: list[KafkaError]     # what the client reported asynchronously (error_cb)
    seconds: float

    def error_names(self) -> set[str]:
        return {error.name() for error in self.errors}


def _produce(config: dict[str, Any], topic: str, value: bytes) -> Attempt:
    errors: list[KafkaError] = []
    reports: list[KafkaError | None] = []
    producer = Producer({**config, "error_cb": errors.append, "log_level": 0,
                         "message.timeout.ms": MESSAGE_TIMEOUT_MS, "socket.timeout.ms": 5000})
    began = time.monotonic()
    producer.produce(topic, value=value, on_delivery=lambda error, _msg: reports.append(error))
    assert producer.flush(FLUSH_S) == 0, "a message is still queued after the bounded flush"
    return Attempt(reports[0], errors, time.monotonic() - began)


def _end_offset(settings: Settings, topic: str) -> int | None:
    """The topic's high watermark; None while it does not exist (a refused write must not
    create it either)."""
    if topic not in kafka_access.admin_client(settings).list_topics(timeout=10).topics:
        return None
    consumer = Consumer(settings.kafka_client("reader", **{"group.id": f"test-{uuid.uuid4()}"}))
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)[1]
    finally:
        consumer.close()


# --- the ACLs as data (no broker) ------------------------------------------------------------------
def test_only_connect_may_write_the_cdc_topics(tmp_path, monkeypatch) -> None:
    from hrdv.settings import load

    monkeypatch.setenv("HRDV_HOME", str(tmp_path))
    settings = load()
    writes = {(b.principal, b.name, b.resource_pattern_type.name)
              for b in kafka_access.acl_bindings(settings) if b.operation.name == "WRITE"}
    connect = f"User:{settings.kafka_login('connect').user}"
    assert {principal for principal, _, _ in writes} == {connect}
    assert (connect, f"{settings.topic_prefix}.", "PREFIXED") in writes
    assert (connect, kafka_access.heartbeat_topic(settings), "LITERAL") in writes
    assert all(b.name != "*" or b.operation.name == "DESCRIBE"
               for b in kafka_access.acl_bindings(settings)), "no wildcard beyond DESCRIBE"


# --- on the stack ----------------------------------------------------------------------------------
@pytest.mark.stack
def test_anonymous_producer_is_refused(stack: Settings) -> None:
    """No SASL at all: the broker closes the connection at the handshake; nothing is written."""
    topic = stack.topic("interactions")
    before = _end_offset(stack, topic)
    attempt = _produce({"bootstrap.servers": stack.kafka_bootstrap}, topic, b"anonymous")
    assert attempt.delivery is not None and attempt.delivery.code() == KafkaError._MSG_TIMED_OUT
    assert attempt.seconds < FLUSH_S
    assert "_ALL_BROKERS_DOWN" in attempt.error_names() or "_TRANSPORT" in attempt.error_names()
    assert "during SASL handshake" in process.log_path("kafka", stack).read_text()
    assert _end_offset(stack, topic) == before


@pytest.mark.stack
def test_producer_with_a_wrong_password_fails_authentication(stack: Settings) -> None:
    topic = stack.topic("interactions")
    before = _end_offset(stack, topic)
    config = stack.kafka_client("connect", **{"sasl.password": "not-the-password"})
    attempt = _produce(config, topic, b"forged")
    assert "_AUTHENTICATION" in attempt.error_names(), attempt.errors
    assert attempt.delivery is not None
    assert _end_offset(stack, topic) == before


@pytest.mark.parametrize("principal", ["ingest", "reader"])
@pytest.mark.stack
def test_consumers_principals_cannot_write(stack: Settings, principal: str) -> None:
    topic = stack.topic("interactions")
    before = _end_offset(stack, topic)
    attempt = _produce(stack.kafka_client(principal), topic, b"not yours to write")
    assert attempt.delivery is not None
    assert attempt.delivery.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, attempt.delivery
    assert _end_offset(stack, topic) == before


@pytest.mark.stack
def test_connect_writes_under_the_cdc_prefix_and_the_reader_reads_it(stack: Settings) -> None:
    """A scratch topic under the prefix (never the real CDC topic), deleted afterwards."""
    topic = f"{stack.topic_prefix}.auth_probe_{uuid.uuid4().hex[:8]}"
    try:
        attempt = _produce(stack.kafka_client("connect"), topic, b"probe")
        assert attempt.delivery is None, attempt.delivery
        consumer = Consumer(stack.kafka_client("reader", **{"group.id": f"test-{uuid.uuid4()}"}))
        try:
            consumer.assign([TopicPartition(topic, 0, 0)])
            message = consumer.poll(15)
        finally:
            consumer.close()
        assert message is not None and not message.error() and message.value() == b"probe"
    finally:
        admin = kafka_access.admin_client(stack)  # held: its futures die with it
        admin.delete_topics([topic])[topic].result(timeout=30)


@pytest.mark.stack
def test_reader_cannot_join_the_ingestion_group(stack: Settings) -> None:
    """It may read the group's offsets (lag), not take the ingestor's partitions."""
    consumer = Consumer(stack.kafka_client("reader", **{
        "group.id": stack.consumer_group, "log_level": 0, "enable.auto.commit": False}))
    try:
        consumer.subscribe([stack.topic("debezium_heartbeat")])  # exists: Debezium beats
        deadline = time.monotonic() + 20
        errors: list[KafkaError] = []
        while time.monotonic() < deadline:
            message = consumer.poll(1)
            if message is not None and message.error():
                errors.append(message.error())
                if errors[-1].code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
                    break
            assert message is None or message.error(), "the reader consumed as the ingestion group"
    finally:
        consumer.close()
    assert errors and errors[-1].code() == KafkaError.GROUP_AUTHORIZATION_FAILED, errors


@pytest.mark.stack
def test_a_wrong_admin_password_names_the_principal_and_its_source(stack: Settings) -> None:
    admin = stack.kafka_login("admin")
    wrong = dataclasses.replace(stack, kafka_logins={**stack.kafka_logins,
                                                     "admin": Login(admin.user, "wrong")})
    with pytest.raises(StackError) as failure:
        kafka_access.ensure_access(wrong, timeout=15)
    message = str(failure.value)
    assert admin.user in message and "HRDV_KAFKA_ADMIN_PASSWORD" in message
    assert "wrong" not in message.replace("wrong admin", "")


# --- TLS: a broker of its own with HRDV_KAFKA_SECURITY_PROTOCOL=SASL_SSL ---------------------------
@pytest.mark.stack
def test_sasl_ssl_broker(tmp_path, monkeypatch) -> None:
    """The embedded broker's self-signed certificate: the principals work over TLS with it as
    their CA; a client that trusts other CAs fails the handshake. (Connect over TLS is not
    covered here: its truststore lines are rendered the same way but no worker is started.)"""
    import os

    from hrdv.settings import load
    from hrdv.stack import kafka

    monkeypatch.setenv("HRDV_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HRDV_PORT_BASE", os.environ["HRDV_TLS_TEST_PORT_BASE"])
    monkeypatch.setenv("HRDV_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    for name in ("HRDV_KAFKA_PORT", "HRDV_KAFKA_CONTROLLER_PORT", "HRDV_KAFKA_CA_FILE"):
        monkeypatch.delenv(name, raising=False)
    settings = load()
    kafka.start_broker(settings)  # principals and ACLs are created over TLS, by the admin
    try:
        topic = f"{settings.topic_prefix}.tls_probe"
        assert _produce(settings.kafka_client("connect"), topic, b"over tls").delivery is None
        consumer = Consumer(settings.kafka_client("reader", **{"group.id": "tls-test"}))
        try:
            consumer.assign([TopicPartition(topic, 0, 0)])
            message = consumer.poll(15)
        finally:
            consumer.close()
        assert message is not None and message.value() == b"over tls"
        untrusting = settings.kafka_client("connect", **{
            "ssl.ca.location": "/etc/ssl/certs/ca-certificates.crt"})
        attempt = _produce(untrusting, topic, b"x")
        assert attempt.delivery is not None and "_SSL" in attempt.error_names()
    finally:
        kafka.stop_broker(settings)

"""Kafka principals and their ACLs, made idempotent and applied on every broker start.

The admin principal (a super user, bootstrapped into the metadata log when the storage is
formatted) upserts the SCRAM credentials of the other principals, so a password changed in
secrets.env takes effect at the next start, and creates their ACLs (creating an existing ACL is
a no-op). Everything goes through confluent_kafka's Admin API.

Who may do what (User:<name> of each principal, see hrdv/settings.py):
- connect: write (and create) the CDC topics `<prefix>.*` and Debezium's heartbeat topic; read,
  write and create its internal topics `<connector>-connect-*`; use its worker group.
- ingest: read the CDC topics; use the ingestion consumer group.
- reader: read the CDC and heartbeat topics, describe every topic and group (committed offsets
  of the ingestion group, lag, completeness), never write or join a group's assignment.
- admin, controller: super users (super.users in stack/kafka-server.properties.tmpl).
Anything else, an anonymous client included, is refused (allow.everyone.if.no.acl.found=false).
"""
from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from hrdv.settings import Settings
from hrdv.stack.process import StackError

SCRAM_ITERATIONS = 8192
# The principals the stack creates with SCRAM (admin is bootstrapped; controller uses PLAIN).
CREATED = ("connect", "ingest", "reader")

Op = AclOperation
TOPIC, GROUP = ResourceType.TOPIC, ResourceType.GROUP
LITERAL, PREFIXED = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED


def heartbeat_topic(settings: Settings) -> str:
    """Debezium's own heartbeat topic (heartbeat.interval.ms), beside the table topics."""
    return f"__debezium-heartbeat.{settings.topic_prefix}"


def cdc_prefix(settings: Settings) -> str:
    """Every table topic of the connector starts with this (settings.topic(...))."""
    return f"{settings.topic_prefix}."


def connect_internal_prefix(settings: Settings) -> str:
    """Connect's config/offset/status topics: <connector>-connect-{configs,offsets,status}."""
    return f"{settings.connector_name}-connect-"


def connect_group(settings: Settings) -> str:
    return f"{settings.connector_name}-connect"


def _grant(principal: str, kind: ResourceType, name: str, pattern: ResourcePatternType,
           *operations: AclOperation) -> list[AclBinding]:
    return [AclBinding(kind, name, pattern, f"User:{principal}", "*", operation,
                       AclPermissionType.ALLOW) for operation in operations]


def acl_bindings(settings: Settings) -> list[AclBinding]:
    """The ACLs of the connect, ingest and reader principals for these settings."""
    connect = settings.kafka_login("connect").user
    ingest = settings.kafka_login("ingest").user
    reader = settings.kafka_login("reader").user
    return [
        # CREATE: Debezium's topics are created on first write (auto.create.topics.enable).
        *_grant(connect, TOPIC, cdc_prefix(settings), PREFIXED, Op.WRITE, Op.CREATE, Op.DESCRIBE),
        *_grant(connect, TOPIC, heartbeat_topic(settings), LITERAL, Op.WRITE, Op.CREATE, Op.DESCRIBE),
        # DESCRIBE_CONFIGS: the worker checks its internal topics are compacted.
        *_grant(connect, TOPIC, connect_internal_prefix(settings), PREFIXED, Op.READ, Op.WRITE,
                Op.CREATE, Op.DESCRIBE, Op.DESCRIBE_CONFIGS),
        *_grant(connect, GROUP, connect_group(settings), LITERAL, Op.READ),
        *_grant(ingest, TOPIC, cdc_prefix(settings), PREFIXED, Op.READ, Op.DESCRIBE),
        *_grant(ingest, GROUP, settings.consumer_group, LITERAL, Op.READ),
        *_grant(reader, TOPIC, cdc_prefix(settings), PREFIXED, Op.READ),
        *_grant(reader, TOPIC, heartbeat_topic(settings), LITERAL, Op.READ),
        *_grant(reader, TOPIC, "*", LITERAL, Op.DESCRIBE),
        # DESCRIBE on groups: committed offsets (OffsetFetch) and the coordinator lookup that
        # any librdkafka consumer with a group.id makes, without the right to join or commit.
        *_grant(reader, GROUP, "*", LITERAL, Op.DESCRIBE),
    ]


class _Errors:
    """Collects librdkafka's asynchronous errors (an authentication failure is reported only
    there; the request itself just times out)."""

    def __init__(self) -> None:
        self.seen: list[KafkaError] = []

    def __call__(self, error: KafkaError) -> None:
        self.seen.append(error)

    def authentication(self) -> KafkaError | None:
        return next((e for e in self.seen if e.code() == KafkaError._AUTHENTICATION), None)


def auth_failure_message(settings: Settings, principal: str, detail: object) -> str:
    """What to say when a principal cannot log in: who, where, and where its password is from."""
    return (f"kafka: principal {settings.kafka_login(principal).user!r} ({principal}) failed to "
            f"authenticate at {settings.kafka_bootstrap}: {detail}. Its password comes from "
            f"{settings.kafka_password_source(principal)}. The admin's credential is written when the "
            f"broker's storage is formatted: a broker formatted before authentication or with "
            f"another admin password needs its data ({settings.home / 'kafka'}) removed, or the "
            f"old password back.")


def admin_client(settings: Settings, errors: _Errors | None = None, **extra: Any) -> AdminClient:
    """An AdminClient logged in as the admin principal."""
    return AdminClient(settings.kafka_client("admin", error_cb=errors or _Errors(), **extra))


def _wait_for_login(settings: Settings, admin: AdminClient, errors: _Errors,
                    timeout: float) -> None:
    """Until the admin can list topics; fail fast, with a clear message, on bad credentials."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin.list_topics(timeout=2)
            return
        except KafkaException as exc:
            admin.poll(0.5)  # serves error_cb, where librdkafka reports a failed login
            failure = errors.authentication()
            if failure is not None:
                raise StackError(auth_failure_message(settings, "admin", failure.str())) from None
            if time.monotonic() > deadline:
                raise StackError(f"kafka: the admin principal could not reach "
                                 f"{settings.kafka_bootstrap} within {timeout:.0f} s: {exc}") from None


def upsert_users(settings: Settings, admin: AdminClient, timeout: float = 30) -> None:
    """Create or update the SCRAM-SHA-512 credentials of the connect, ingest and reader principals."""
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    upserts = [UserScramCredentialUpsertion(settings.kafka_login(name).user, info,
                                            settings.kafka_login(name).password.encode())
               for name in CREATED]
    for user, future in admin.alter_user_scram_credentials(upserts, request_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            raise StackError(f"kafka: could not set the SCRAM credentials of {user}: {exc}") from None


def create_acls(settings: Settings, admin: AdminClient, timeout: float = 30) -> None:
    """Create the principals' ACLs for these settings (idempotent)."""
    for binding, future in admin.create_acls(acl_bindings(settings),
                                             request_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            raise StackError(f"kafka: could not create ACL {binding}: {exc}") from None


def ensure_access(settings: Settings, timeout: float = 60) -> float:
    """Principals and ACLs for these settings, on a running broker; returns the seconds it took."""
    began = time.monotonic()
    errors = _Errors()
    admin = admin_client(settings, errors)
    _wait_for_login(settings, admin, errors, timeout)
    upsert_users(settings, admin)
    create_acls(settings, admin)
    return time.monotonic() - began

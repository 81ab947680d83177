"""Debezium change events for the ClickHouse tests, and a fresh embedded ClickHouse per test.

Captured messages from the real connector (tests/data/debezium/<name>.json, each
{"key": str|null, "value": str|null}) are preferred; without them the events are built exactly
like Debezium's JsonConverter output with schemas.enable=false (see STACK-NOTES).
"""
from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any


from hrdv import clickhouse
from hrdv.ingest import QUEUE_COLUMNS

DATA_DIR = Path(__file__).resolve().parent / "data" / "debezium"
TOPIC = "crm.public.interactions"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

BASE_ROW: dict[str, Any] = {
    "id": 1001,
    "customer_id": 501,
    "channel_code": "call",
    "region_code": "RU-MOW",
    "topic_code": "billing",
    "queue_code": "call-general",
    "direction": "inbound",
    "status": "new",
    "operator_id": None,
    "subject": "Billing question",
    "created_at": "2026-01-02T00:04:05.123456Z",
    "first_response_at": None,
    "closed_at": None,
    "resolved_on_first_contact": None,
    "updated_at": "2026-01-02T00:04:05.123456Z",
}


def envelope(op: str, row: dict[str, Any] | None, lsn: int, commit_ms: int = 1767312245123,
             before: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Debezium value for public.interactions: `row` is `after` (None for deletes)."""
    return {
        "before": before,
        "after": row,
        "source": {
            "version": "3.7.0.Final", "connector": "postgresql", "name": "crm",
            "ts_ms": commit_ms, "snapshot": "false", "db": "crm",
            "sequence": f'["{lsn - 8}","{lsn}"]', "ts_us": commit_ms * 1000,
            "ts_ns": commit_ms * 1_000_000, "schema": "public", "table": "interactions",
            "txId": 771, "lsn": lsn, "xmin": None,
        },
        "transaction": None,
        "op": op,
        "ts_ms": commit_ms + 40,
        "ts_us": (commit_ms + 40) * 1000,
        "ts_ns": (commit_ms + 40) * 1_000_000,
    }


def _synthetic(name: str) -> str | None:
    if name == "insert":
        return dump(envelope("c", BASE_ROW, lsn=26_000_100))
    if name == "update":
        row = BASE_ROW | {"status": "assigned", "operator_id": 42,
                          "first_response_at": "2026-01-02T00:06:00.5Z",
                          "updated_at": "2026-01-02T00:06:00.500000Z"}
        return dump(envelope("u", row, lsn=26_000_200, commit_ms=1767312360500))
    if name == "update_null":
        row = BASE_ROW | {"subject": None, "status": "in_progress",
                          "updated_at": "2026-01-02T00:07:00Z"}
        return dump(envelope("u", row, lsn=26_000_300, commit_ms=1767312420000))
    if name == "cyrillic":
        row = BASE_ROW | {"id": 1002, "subject": "Не работает интернет — «срочно», ёжик"}
        return dump(envelope("c", row, lsn=26_000_400))
    if name == "delete":
        return dump(envelope("d", None, lsn=26_000_500, commit_ms=1767312480000,
                             before={"id": BASE_ROW["id"]}))
    if name == "tombstone":
        return None
    raise KeyError(name)


def event_text(name: str) -> str | None:
    """The value of event `name`: captured from the real connector if present, else synthetic."""
    captured = DATA_DIR / f"{name}.json"
    if captured.is_file():
        return json.loads(captured.read_text(encoding="utf-8"))["value"]
    return _synthetic(name)


def event_key(name: str) -> str:
    """The Kafka key of event `name`: captured if present, else Debezium's ('' for null)."""
    captured = DATA_DIR / f"{name}.json"
    if captured.is_file():
        return json.loads(captured.read_text(encoding="utf-8"))["key"] or ""
    return debezium_key(_synthetic(name)).decode()


def event(name: str) -> dict[str, Any]:
    text = event_text(name)
    assert text is not None, f"event {name} has no value"
    return json.loads(text)


def is_captured(name: str) -> bool:
    return (DATA_DIR / f"{name}.json").is_file()


def dump(value: dict[str, Any]) -> str:
    # Debezium writes Cyrillic unescaped, so do we.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def image(value: dict[str, Any]) -> dict[str, Any]:
    return value["before"] if value["op"] == "d" else value["after"]


def with_changes(value: dict[str, Any], lsn: int | None = None, **row: Any) -> dict[str, Any]:
    """A copy of an event with another lsn and/or row columns (to build versions of one id)."""
    changed = copy.deepcopy(value)
    if lsn is not None:
        changed["source"]["lsn"] = lsn
    image(changed).update(row)
    return changed


def micros(iso: str | None) -> int | None:
    """Debezium's ISO timestamp as microseconds since the epoch (what the buffer should hold)."""
    if iso is None:
        return None
    parsed = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return (parsed - EPOCH) // timedelta(microseconds=1)


# --- embedded ClickHouse -------------------------------------------------------------------------
def debezium_key(message: str | bytes | None) -> bytes:
    """The key Debezium gives a message: {"id":<the row image's id>} (JsonConverter without
    schemas), or b'' (null) when the message has no such image."""
    try:
        value = json.loads(message or b"")
        return dump({"id": image(value)["id"]}).encode()
    except (ValueError, TypeError, KeyError, AttributeError):
        return b""


def queue_rows(messages: Sequence[str | bytes | None], first_offset: int = 0, partition: int = 0,
               topic: str = TOPIC, keys: Sequence[bytes | None] | None = None) -> list[list[Any]]:
    """Rows for hrdv.interactions_queue as the ingestor inserts them (None = b'', a zero-byte
    value); keys default to Debezium's (debezium_key), None or b'' is a null key."""
    rows = []
    for index, message in enumerate(messages):
        raw = message.encode() if isinstance(message, str) else (message or b"")
        key = debezium_key(message) if keys is None else (keys[index] or b"")
        stamp = datetime(2026, 1, 2, 0, 4, 6, tzinfo=timezone.utc)
        rows.append([raw, key, topic, partition, first_offset + index, stamp])
    return rows


def insert_messages(dsn: str, messages: Sequence[str | bytes | None], first_offset: int = 0,
                    keys: Sequence[bytes | None] | None = None) -> None:
    with clickhouse.session(dsn) as client:
        client.insert("hrdv.interactions_queue", queue_rows(messages, first_offset, keys=keys),
                      column_names=QUEUE_COLUMNS)


def query(dsn: str, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple]:
    with clickhouse.session(dsn) as client:
        return client.query(sql, parameters=parameters).result_rows


def query_dicts(dsn: str, sql: str, parameters: dict[str, Any] | None = None) -> list[dict]:
    with clickhouse.session(dsn) as client:
        result = client.query(sql, parameters=parameters)
        return [dict(zip(result.column_names, row)) for row in result.result_rows]

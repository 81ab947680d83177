"""Capture real Debezium messages as test fixtures: python -m hrdv.stack.capture OUTDIR

Against a running stack (PostgreSQL + broker + Connect with the connector registered), this
writes a known sequence of changes into crm.public.interactions, reads back exactly the messages
they produced (key and value as the raw strings on the wire) and saves one JSON file per case:

  insert.json       op "c"                    update.json   op "u", status -> closed, closed_at set
  update_null.json  op "u", operator_id NULL  cyrillic.json op "c" with a Cyrillic subject
  delete.json       op "d", before = key only tombstone.json same key, value null
  heartbeat_table.json  a change of public.debezium_heartbeat (Debezium's heartbeat action query)

Each file is {"key": <str|null>, "value": <str|null>}. Fixed ids and timestamps keep the files
stable between runs (only lsn, txId and ts_* differ). The rows it writes are deleted again at the
end (reference rows only if this run created them), so the CRM is left as it was found.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from hrdv.settings import Settings, load

ID_MAIN, ID_CYRILLIC = 990_001, 990_002

# Reference rows the interactions need (FKs). Only the ones this run creates are removed again.
REFERENCE_ROWS: list[tuple[str, str, tuple]] = [
    ("regions", "INSERT INTO regions (code, name, utc_offset) VALUES (%s, %s, %s)",
     ("RU-SPE", "Санкт-Петербург", 3)),
    ("channels", "INSERT INTO channels (code, name) VALUES (%s, %s)", ("call", "Звонок")),
    ("topics", "INSERT INTO topics (code, name) VALUES (%s, %s)", ("billing", "Начисления и оплата")),
    ("queues", "INSERT INTO queues (code, name, channel_code) VALUES (%s, %s, %s)",
     ("l1-call", "Первая линия", "call")),
    ("customers", "INSERT INTO customers (id, full_name, region_code, registered_at) "
                  "VALUES (%s, %s, %s, %s)",
     (990001, "Иванова Мария Петровна", "RU-SPE", "2025-03-01 09:00:00+03")),
]


INSERT_SQL = """
INSERT INTO interactions (id, customer_id, channel_code, region_code, topic_code, queue_code,
                          status, operator_id, subject, created_at, updated_at)
VALUES (%(id)s, 990001, 'call', 'RU-SPE', 'billing', 'l1-call', 'new', 4711, %(subject)s,
        '2026-11-24 10:15:00.123456+03', '2026-11-24 10:15:00.123456+03')
"""

# Each statement is its own transaction, so each yields exactly one message.
STEPS: list[tuple[str, str, dict]] = [
    ("insert", INSERT_SQL, {"id": ID_MAIN, "subject": "Billing question"}),
    ("update", """UPDATE interactions SET status = 'closed', first_response_at =
                  '2026-11-24 10:16:30+03', closed_at = '2026-11-24 10:21:05.5+03',
                  resolved_on_first_contact = true, updated_at = '2026-11-24 10:21:05.5+03'
                  WHERE id = %(id)s""", {"id": ID_MAIN}),
    ("update_null", """UPDATE interactions SET operator_id = NULL,
                       updated_at = '2026-11-24 10:22:00+03' WHERE id = %(id)s""", {"id": ID_MAIN}),
    ("cyrillic", INSERT_SQL, {"id": ID_CYRILLIC,
                              "subject": "Не проходит оплата — «списали дважды», ёлки!"}),
    ("delete", "DELETE FROM interactions WHERE id = %(id)s", {"id": ID_MAIN}),
]
# The delete is followed by a tombstone: same key, null value.
NAMES = [name for name, _, _ in STEPS] + ["tombstone"]


def _high_watermark(settings: Settings, topic: str) -> int:
    """Where new messages of `topic` will start (0 if Debezium has not created it yet)."""
    admin = AdminClient(settings.kafka_client("reader"))
    if topic not in admin.list_topics(timeout=10).topics:
        return 0
    consumer = _consumer(settings)
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)[1]
    finally:
        consumer.close()


def _consumer(settings: Settings) -> Consumer:
    return Consumer(settings.kafka_client("reader", **{
        "group.id": f"hrdv-capture-{time.time_ns()}", "enable.auto.commit": False}))


def _write_changes(settings: Settings) -> list[tuple[str, object]]:
    """Run the steps; returns the reference rows this run created, as (table, key)."""
    created = []
    with psycopg.connect(settings.crm_dsn, autocommit=True) as conn:
        for table, statement, params in REFERENCE_ROWS:
            if conn.execute(f"{statement} ON CONFLICT DO NOTHING RETURNING 1", params).fetchone():
                created.append((table, params[0]))
        for _, statement, params in STEPS:
            conn.execute(statement, params)
    return created


def _clean_up(settings: Settings, created: list[tuple[str, object]]) -> None:
    """Leave the CRM as found: the generator numbers new customers and interactions from
    max(id) + 1, so a stray row with a large id would skew everything it writes afterwards."""
    with psycopg.connect(settings.crm_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM interactions WHERE id IN (%s, %s)", [ID_MAIN, ID_CYRILLIC])
        for table, key in reversed(created):
            column = "id" if table == "customers" else "code"
            conn.execute(sql.SQL("DELETE FROM {} WHERE {} = %s").format(
                sql.Identifier(table), sql.Identifier(column)), [key])


def _read(settings: Settings, topic: str, start: int, count: int, timeout: float = 60) -> list:
    """`count` messages of `topic` from offset `start`, waiting for the topic to appear."""
    deadline = time.monotonic() + timeout
    admin = AdminClient(settings.kafka_client("reader"))
    while topic not in admin.list_topics(timeout=10).topics:
        if time.monotonic() > deadline:
            raise SystemExit(f"capture: topic {topic} did not appear within {timeout:.0f} s")
        time.sleep(0.2)
    consumer = _consumer(settings)
    consumer.assign([TopicPartition(topic, 0, start)])
    messages = []
    try:
        while len(messages) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                messages.append(msg)
    finally:
        consumer.close()
    if len(messages) < count:
        raise SystemExit(f"capture: got {len(messages)} of {count} messages from {topic}")
    return messages


def _raw(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8")


def _save(outdir: Path, name: str, msg) -> None:
    payload = {"key": _raw(msg.key()), "value": _raw(msg.value())}
    (outdir / f"{name}.json").write_text(json.dumps(payload, ensure_ascii=False, indent=2) + "\n")


def capture(settings: Settings, outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    data_topic, beat_topic = settings.topic("interactions"), settings.topic("debezium_heartbeat")
    with psycopg.connect(settings.crm_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM interactions WHERE id IN (%s, %s)", [ID_MAIN, ID_CYRILLIC])
    time.sleep(2)  # let the clean-up's own messages land before the start offset is taken
    start = _high_watermark(settings, data_topic)
    beat_start = _high_watermark(settings, beat_topic)
    created = _write_changes(settings)
    try:
        for name, msg in zip(NAMES, _read(settings, data_topic, start, len(NAMES))):
            _save(outdir, name, msg)
        # The heartbeat query runs every heartbeat.interval.ms: a change arrives within ~1 s.
        _save(outdir, "heartbeat_table", _read(settings, beat_topic, beat_start, 1)[0])
    finally:
        _clean_up(settings, created)
    _check(outdir)
    print(f"capture: wrote {len(NAMES) + 1} files to {outdir}")


def _check(outdir: Path) -> None:
    """Fail loudly if the messages are not the cases their file names promise."""
    ops = {name: json.loads(json.loads((outdir / f"{name}.json").read_text())["value"] or "null")
           for name in NAMES}
    expected = {"insert": "c", "update": "u", "update_null": "u", "cyrillic": "c", "delete": "d"}
    for name, op in expected.items():
        if ops[name]["op"] != op:
            raise SystemExit(f"capture: {name}.json has op {ops[name]['op']!r}, expected {op!r}")
    if ops["tombstone"] is not None:
        raise SystemExit("capture: tombstone.json has a value")


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m hrdv.stack.capture OUTDIR  (e.g. tests/data/debezium)")
    capture(load(), Path(argv[0]))


if __name__ == "__main__":
    main(sys.argv[1:])

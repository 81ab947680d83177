"""Messages that are not valid Debezium events land in hrdv.dead_letters, byte for byte, with a
reason; valid messages of the same batch still reach the buffer (chDB only)."""
from __future__ import annotations

import copy

import pytest

from debezium_fixtures import (
    TOPIC,
    dump,
    event,
    event_text,
    image,
    insert_messages,
    is_captured,
    query,
)
from hrdv import clickhouse


def _without(value: dict, *path: str) -> dict:
    broken = copy.deepcopy(value)
    target = broken
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return broken


def _replace(value: dict, path: tuple[str, ...], new: object) -> dict:
    broken = copy.deepcopy(value)
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return broken


def bad_messages() -> list[tuple[bytes, str]]:
    """(raw message, expected reason) for each kind of rejection."""
    good = event("insert")
    cases: list[tuple[bytes | str, str]] = [
        (b"\xff\xfe{\"op\": \"c\"}", "not UTF-8"),
        ("this is not json {", "not JSON"),
        ("[1, 2, 3]", "not a JSON object"),
        ('{"ts_ms": 1767312245123}', "no op"),  # valid JSON, no envelope (a heartbeat)
        (dump(_replace(good, ("op",), "x")), "unknown op"),
        (dump(_without(good, "source", "lsn")), "no source.lsn"),
        (dump(_replace(good, ("source", "ts_ms"), "yesterday")), "no source.ts_ms"),
        (event_text("heartbeat_table") if is_captured("heartbeat_table")
         else dump(_replace(good, ("source", "table"), "debezium_heartbeat")), "wrong source.table"),
        (dump(_replace(good, ("after",), None)), "row image missing"),
        (dump(_replace(good, ("after", "id"), "1001")), "key id missing or not an integer"),
        (dump(_without(good, "after", "id")), "key id missing or not an integer"),
        (dump(_replace(good, ("after", "id"), 1.5)), "key id missing or not an integer"),
    ]
    return [(raw.encode() if isinstance(raw, str) else raw, reason) for raw, reason in cases]


def test_invalid_messages_are_dead_lettered_and_valid_ones_kept(dsn: str) -> None:
    bad = bad_messages()
    valid = [event_text("insert"), event_text("cyrillic")]
    # One batch: valid, bad..., tombstone, valid. Offsets are the positions in this list.
    batch: list[bytes | str | None] = [valid[0], *(raw for raw, _ in bad), None, valid[1]]
    insert_messages(dsn, batch, first_offset=100)

    letters = query(dsn, "SELECT topic, `partition`, `offset`, reason, hex(raw_message), "
                         "kafka_timestamp IS NOT NULL FROM hrdv.dead_letters ORDER BY `offset`")
    expected = [(TOPIC, 0, 101 + i, reason, raw.hex().upper(), True) for i, (raw, reason) in enumerate(bad)]
    assert letters == expected

    kept = query(dsn, "SELECT id, _offset FROM hrdv.interactions_buffer ORDER BY _offset")
    ids = [image(event("insert"))["id"], image(event("cyrillic"))["id"]]
    assert kept == [(ids[0], 100), (ids[1], 100 + len(batch) - 1)]


def test_redelivered_dead_letter_is_kept_once(dsn: str) -> None:
    insert_messages(dsn, [b"garbage"], first_offset=5)
    insert_messages(dsn, [b"garbage"], first_offset=5)
    assert query(dsn, "SELECT count() FROM hrdv.dead_letters FINAL") == [(1,)]


@pytest.mark.parametrize("name", ["insert", "update", "update_null", "cyrillic", "delete"])
def test_envelope_check_accepts_real_events(dsn: str, name: str) -> None:
    with clickhouse.session(dsn) as client:
        reason = client.query("SELECT dbz_envelope_error({m:String}, 'interactions')",
                              parameters={"m": event_text(name)}).result_rows
    assert reason == [("",)]


def test_kafka_engine_ddl_parses(dsn: str) -> None:
    """The production queue's DDL, after template substitution, is valid ClickHouse SQL.

    chDB cannot run a Kafka table, so the statement is only parsed (formatQuery), never executed.
    """
    parameters = clickhouse.kafka_parameters(
        {"broker_list": "kafka-1:9092,kafka-2:9092", "topic": TOPIC, "group": "hrdv-clickhouse"})
    ddl = clickhouse.render_sql("interactions_queue.kafka.sql", parameters)
    with clickhouse.session(dsn) as client:
        formatted = client.query("SELECT formatQuery({q:String})", parameters={"q": ddl}).result_rows[0][0]
    assert "ENGINE = Kafka" in formatted
    assert "kafka_broker_list = 'kafka-1:9092,kafka-2:9092'" in formatted
    assert "kafka_format = 'RawBLOB'" in formatted
    assert "${" not in formatted


def test_kafka_engine_template_needs_all_parameters() -> None:
    with pytest.raises(ValueError, match="group"):
        clickhouse.kafka_parameters({"broker_list": "k:9092", "topic": TOPIC})
    with pytest.raises(KeyError, match="kafka_"):
        clickhouse.render_sql("interactions_queue.kafka.sql", {})


def test_template_values_are_escaped() -> None:
    ddl = clickhouse.render_sql("interactions_queue.kafka.sql", clickhouse.kafka_parameters(
        {"broker_list": "k:9092", "topic": "t", "group": "it's"}))
    assert "kafka_group_name = 'it\\'s'" in ddl


def test_dead_letters_of_a_window_are_counted_by_reason(dsn: str) -> None:
    """What the staging asset reports and checks: a window's dead letters of its topic."""
    from datetime import datetime, timedelta, timezone

    from hrdv.sql import sql_text
    from hrdv_assets.cdc import ch_time

    insert_messages(dsn, [b"garbage", b"more garbage", b'{"no": "envelope"}', event_text("insert")])
    insert_messages(dsn, [b"garbage"], first_offset=0)  # redelivered: still one dead letter
    now = datetime.now(timezone.utc)
    window = {"window_start": ch_time(now - timedelta(minutes=5)), "window_end": ch_time(now + timedelta(minutes=1))}
    with clickhouse.session(dsn) as client:
        counted = dict(client.query(sql_text("clickhouse/queries/dead_letters_in_window.sql"),
                                    parameters={**window, "topic": TOPIC}).result_rows)
        other_topic = client.query(sql_text("clickhouse/queries/dead_letters_in_window.sql"),
                                   parameters={**window, "topic": "crm.public.other"}).result_rows
        earlier = client.query(sql_text("clickhouse/queries/dead_letters_in_window.sql"),
                               parameters={"window_start": ch_time(now - timedelta(hours=2)),
                                           "window_end": ch_time(now - timedelta(hours=1)), "topic": TOPIC}).result_rows
    assert counted == {"not JSON": 2, "no op": 1}
    assert other_topic == [] and earlier == []

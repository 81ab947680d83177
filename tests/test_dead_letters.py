"""Messages that are not valid Debezium events land in hrdv.dead_letters, byte for byte, with a
reason; valid messages of the same batch still reach the buffer (chDB only)."""
from __future__ import annotations

import copy
import json

import pytest
from click.testing import CliRunner, Result

from debezium_fixtures import (
    TOPIC,
    dump,
    debezium_key,
    event,
    event_key,
    event_text,
    image,
    insert_messages,
    is_captured,
    queue_rows,
    query,
    with_changes,
)
from hrdv import clickhouse, entity_sql
from hrdv.ingest import QUEUE_COLUMNS


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


def bad_messages() -> list[tuple[bytes, str, bytes | None]]:
    """(raw message, expected reason, Kafka key; None: Debezium's key for it) for each kind of
    rejection."""
    good = event("insert")
    cases: list[tuple[bytes | str, str] | tuple[bytes | str, str, bytes]] = [
        (b"", "empty value"),  # zero bytes, not null: a tombstone never reaches the queue
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
        # A row column of the wrong JSON type: JSONExtract would have made it NULL or converted it.
        (dump(_replace(good, ("after", "customer_id"), "abc")), "wrong type: customer_id"),
        (dump(_replace(good, ("after", "customer_id"), "12")), "wrong type: customer_id"),
        (dump(_replace(good, ("after", "operator_id"), 1.5)), "wrong type: operator_id"),
        (dump(_replace(good, ("after", "operator_id"), 2**40)), "wrong type: operator_id"),
        (dump(_replace(good, ("after", "status"), 5)), "wrong type: status"),
        (dump(_replace(good, ("after", "subject"), {"text": "x"})), "wrong type: subject"),
        (dump(_replace(good, ("after", "channel_detail"), ["ivr"])), "wrong type: channel_detail"),
        (dump(_replace(good, ("after", "created_at"), 123)), "wrong type: created_at"),
        (dump(_replace(good, ("after", "updated_at"), "yesterday noon")), "wrong type: updated_at"),
        (dump(_replace(good, ("after", "resolved_on_first_contact"), "yes")),
         "wrong type: resolved_on_first_contact"),
        # A wrong or hostile producer: images that contradict op, keys that are not the row's.
        (dump(_replace(good, ("before",), image(good))), "op disagrees with its images"),
        (dump(_replace(event("delete"), ("after",), image(good))), "op disagrees with its images"),
        (dump(good), "no key", b""),
        (dump(good), "key not a JSON object", b"1001"),
        (dump(good), "key does not match the row", b'{"id":999999901}'),
        (dump(good), "key does not match the row", b'{"id":%d,"x":1}' % image(good)["id"]),
        (dump(good), "key does not match the row", b'{"customer_id":%d}' % image(good)["customer_id"]),
        (dump(_replace(good, ("source", "ts_ms"), 4_102_444_800_000)), "commit time in the future"),
    ]
    return [(raw.encode() if isinstance(raw, str) else raw, reason, key)
            for raw, reason, key in (case + (None,) if len(case) == 2 else case for case in cases)]


def test_invalid_messages_are_dead_lettered_and_valid_ones_kept(dsn: str) -> None:
    bad = bad_messages()
    valid = [event_text("insert"), event_text("cyrillic")]
    # One batch: valid, bad..., valid. Offsets are the positions in this list.
    batch: list[bytes | str | None] = [valid[0], *(raw for raw, _, _ in bad), valid[1]]
    keys = [debezium_key(valid[0]), *(debezium_key(raw) if key is None else key for raw, _, key in bad),
            debezium_key(valid[1])]
    insert_messages(dsn, batch, first_offset=100, keys=keys)

    letters = query(dsn, "SELECT topic, `partition`, `offset`, reason, hex(raw_message), hex(raw_key), "
                         "kafka_timestamp IS NOT NULL FROM hrdv.dead_letters ORDER BY `offset`")
    expected = [(TOPIC, 0, 101 + i, reason, raw.hex().upper(), keys[1 + i].hex().upper(), True)
                for i, (raw, reason, _) in enumerate(bad)]
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
        reason = client.query("SELECT dbz_envelope_error({m:String}, {k:String}, dbz_row_image({m:String}, 'id'), "
                              "'interactions', 'id', 'Int64'), "
                              "interactions_message_error({m:String}, {k:String}, dbz_row_image({m:String}, 'id'))",
                              parameters={"m": event_text(name), "k": event_key(name)}).result_rows
    assert reason == [("", "")]


def test_right_types_and_nulls_pass_the_row_check(dsn: str) -> None:
    """Every column at a value of its type, or null, or absent (channel_detail before CRM
    migration 001): nothing is rejected, and the types' edges are accepted."""
    good = event("insert")
    edges = {"customer_id": -(2**63), "operator_id": 2**31 - 1, "resolved_on_first_contact": False,
             "closed_at": "2026-01-02T00:04:05Z", "channel_detail": "ivr", "subject": ""}
    nulls = {column: None for column in image(good) if column != "id"}
    variants = [good, with_changes(good, **edges), with_changes(good, **nulls),
                _without(good, "after", "subject")]
    messages = [dump(with_changes(value, id=n + 1)) for n, value in enumerate(variants)]
    insert_messages(dsn, messages)
    assert query(dsn, "SELECT count() FROM hrdv.dead_letters") == [(0,)]
    assert query(dsn, "SELECT count() FROM hrdv.interactions_buffer") == [(len(messages),)]


def test_oversized_message_is_dead_lettered_before_parsing(dsn: str) -> None:
    """Longer than the limit: 'oversized', whatever else is wrong with it (not even parsed)."""
    text = event_text("insert")
    limit = len(text.encode()) - 1
    clickhouse.apply_schema(dsn, max_bytes=limit)
    insert_messages(dsn, [text, "x" * (limit + 1), "x" * limit, event_text("cyrillic")[:limit]])
    letters = query(dsn, "SELECT `offset`, reason FROM hrdv.dead_letters ORDER BY `offset`")
    assert letters[:2] == [(0, "oversized"), (1, "oversized")]
    assert letters[2] == (2, "not JSON")  # at the limit: checked further
    assert query(dsn, "SELECT count() FROM hrdv.interactions_buffer") == [(0,)]


def test_limit_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("HRDV_MAX_MESSAGE_BYTES", "2048")
    assert clickhouse.max_message_bytes() == 2048
    monkeypatch.setenv("HRDV_MAX_MESSAGE_BYTES", "1 MiB")
    with pytest.raises(ValueError, match="HRDV_MAX_MESSAGE_BYTES"):
        clickhouse.max_message_bytes()
    monkeypatch.delenv("HRDV_MAX_MESSAGE_BYTES")
    assert clickhouse.max_message_bytes() == 1 << 20


SASL = {"security_protocol": "sasl_ssl", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "hrdv-ingest", "sasl_password": "secret"}


KAFKA = {"broker_list": "kafka-1:9092,kafka-2:9092", "topic_prefix": "crm", "group": "hrdv-clickhouse", **SASL}


def _kafka_queues(kafka: dict) -> dict[str, str]:
    """The Kafka-engine queue DDL of every topic, as apply_schema would run it on a server."""
    statements = clickhouse.schema_statements(kafka, clickhouse.schema_parameters(kafka))
    return {label.split("_queue")[0]: ddl for label, ddl in statements if label.endswith("_queue (kafka)")}


def test_kafka_engine_ddl_parses(dsn: str) -> None:
    """The production queues' DDL, one per entity topic and the heartbeat's, after template
    substitution, is valid ClickHouse SQL.

    chDB cannot run a Kafka table, so the statement is only parsed (formatQuery), never executed.
    """
    from hrdv.entities import ENTITIES, HEARTBEAT_TABLE

    queues = _kafka_queues(KAFKA)
    assert set(queues) == {HEARTBEAT_TABLE, *(e.name for e in ENTITIES)}
    for table, ddl in queues.items():
        with clickhouse.session(dsn) as client:
            formatted = client.query("SELECT formatQuery({q:String})", parameters={"q": ddl}).result_rows[0][0]
        assert "ENGINE = Kafka" in formatted
        assert "kafka_broker_list = 'kafka-1:9092,kafka-2:9092'" in formatted
        assert f"kafka_topic_list = 'crm.public.{table}'" in formatted
        assert "kafka_format = 'RawBLOB'" in formatted
        assert "kafka_security_protocol = 'sasl_ssl'" in formatted
        assert "kafka_sasl_mechanism = 'SCRAM-SHA-512'" in formatted
        assert "kafka_sasl_username = 'hrdv-ingest'" in formatted
        assert "${" not in formatted


def test_kafka_engine_settings_come_from_the_stack_settings() -> None:
    """The production queue logs in as the ingest principal, with the same HRDV_KAFKA_* names."""
    from hrdv.settings import load

    settings = load()
    kafka = clickhouse.kafka_engine(settings)
    ingest = settings.kafka_login("ingest")
    assert kafka["sasl_username"] == ingest.user and kafka["sasl_password"] == ingest.password
    assert kafka["security_protocol"] == settings.kafka_security_protocol.lower()
    ddl = _kafka_queues(kafka)["interactions"]
    assert f"kafka_topic_list = '{settings.topic('interactions')}'" in ddl
    assert f"kafka_sasl_username = '{ingest.user}'" in ddl


def test_kafka_engine_template_needs_all_parameters() -> None:
    with pytest.raises(ValueError, match="group"):
        clickhouse.kafka_parameters({"broker_list": "k:9092", "topic_prefix": "crm", **SASL})
    with pytest.raises(ValueError, match="sasl_password"):
        clickhouse.kafka_parameters({**KAFKA, "sasl_password": ""})


def test_template_values_are_escaped() -> None:
    ddl = _kafka_queues({**KAFKA, "group": "it's"})["interactions"]
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
    query = sql_text("clickhouse/queries/dead_letters_by_window.sql")
    with clickhouse.session(dsn) as client:
        rows = client.query(query, parameters={**window, "topics": [TOPIC], "window_minutes": 60}).result_rows
        other_topic = client.query(query, parameters={**window, "topics": ["crm.public.other"],
                                                      "window_minutes": 60}).result_rows
        earlier = client.query(query, parameters={"window_start": ch_time(now - timedelta(hours=2)),
                                                  "window_end": ch_time(now - timedelta(hours=1)),
                                                  "topics": [TOPIC], "window_minutes": 60}).result_rows
    counted: dict[str, int] = {}
    for _, _, reason, messages in rows:  # one or two hourly windows
        counted[reason] = counted.get(reason, 0) + messages
    assert counted == {"not JSON": 2, "no op": 1}
    assert other_topic == [] and earlier == []


# --- replay ----------------------------------------------------------------------------------------
def _cli(dsn: str, monkeypatch, *args: str) -> Result:
    from hrdv.dead_letters import dead_letters

    monkeypatch.setenv("HRDV_CLICKHOUSE_DSN", dsn)
    return CliRunner().invoke(dead_letters, list(args), catch_exceptions=False)


def _dead_letters(dsn: str) -> list[tuple]:
    return query(dsn, "SELECT `offset`, reason, raw_message FROM hrdv.dead_letters FINAL ORDER BY `offset`")


def _buffer(dsn: str) -> list[tuple]:
    return query(dsn, "SELECT id, _offset, lsn FROM hrdv.interactions_buffer ORDER BY id, _offset")


def _rejected_then_fixed(dsn: str) -> list[str]:
    """Dead letters of a rule since relaxed: two events rejected as 'oversized' under a lowered
    limit (offsets 0, 1), one under a rule that no longer exists ('retired rule', offset 3, put
    there directly), and one still bad (offset 2). Returns the three good messages."""
    good = [dump(with_changes(event("insert"), id=11, lsn=900)), dump(with_changes(event("insert"), id=12, lsn=901)),
            dump(with_changes(event("insert"), id=13, lsn=902))]
    clickhouse.apply_schema(dsn, max_bytes=100)
    insert_messages(dsn, [good[0], good[1], "not json, never will be"])
    with clickhouse.session(dsn) as client:
        client.insert("hrdv.dead_letters", [[TOPIC, 0, 3, None, "retired rule", good[2].encode(), b'{"id":13}']],
                      column_names=["topic", "partition", "offset", "kafka_timestamp", "reason", "raw_message",
                                    "raw_key"])
    clickhouse.apply_schema(dsn)  # the fix: the default limit again
    return good


def test_replay_after_a_fix_parses_each_message_once_and_keeps_the_bad(dsn: str, monkeypatch) -> None:
    _rejected_then_fixed(dsn)
    before = _dead_letters(dsn)
    assert [(o, r) for o, r, _ in before] == [(0, "oversized"), (1, "oversized"), (2, "not JSON"),
                                              (3, "retired rule")]

    dry = _cli(dsn, monkeypatch, "replay", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"{TOPIC}: would replay 4 dead letter(s)" in dry.output
    assert _dead_letters(dsn) == before and _buffer(dsn) == []  # a dry run changes nothing

    done = _cli(dsn, monkeypatch, "replay")
    assert done.exit_code == 0, done.output
    assert "replayed 4 dead letter(s): 3 parsed into hrdv.interactions_buffer, 1 still failing" in done.output
    assert "not JSON" in done.output
    # Parsed once each, with their original Kafka coordinates; the bad one stays as it was.
    assert _buffer(dsn) == [(11, 0, 900), (12, 1, 901), (13, 3, 902)]
    assert _dead_letters(dsn) == [before[2]]
    log = query(dsn, "SELECT `offset`, previous_reason, outcome, reason FROM hrdv.dead_letter_replays "
                     "ORDER BY `offset`")
    assert log == [(0, "oversized", "parsed", ""), (1, "oversized", "parsed", ""),
                   (2, "not JSON", "still failing", "not JSON"), (3, "retired rule", "parsed", "")]

    again = _cli(dsn, monkeypatch, "replay")
    assert "replayed 1 dead letter(s): 0 parsed into hrdv.interactions_buffer, 1 still failing" in again.output
    assert _buffer(dsn) == [(11, 0, 900), (12, 1, 901), (13, 3, 902)]
    assert _dead_letters(dsn) == [before[2]]


def test_replay_takes_only_the_selected_dead_letters(dsn: str, monkeypatch) -> None:
    _rejected_then_fixed(dsn)
    result = _cli(dsn, monkeypatch, "replay", "--reason", "retired rule", "--topic", TOPIC)
    assert "replayed 1 dead letter(s): 1 parsed" in result.output
    assert [(o, r) for o, r, _ in _dead_letters(dsn)] == [(0, "oversized"), (1, "oversized"), (2, "not JSON")]
    later = _cli(dsn, monkeypatch, "replay", "--since", "2999-01-01")
    assert "replayed 0 dead letter(s)" in later.output
    assert len(_dead_letters(dsn)) == 3


def test_replay_rejects_wrong_arguments(dsn: str, monkeypatch) -> None:
    since = _cli(dsn, monkeypatch, "replay", "--since", "last tuesday")
    assert since.exit_code == 2 and "not an ISO date or time" in since.output
    topic = _cli(dsn, monkeypatch, "replay", "--topic", "crm.public.nope")
    assert topic.exit_code == 2 and "not a topic HRDV parses; known: " in topic.output and TOPIC in topic.output
    _rejected_then_fixed(dsn)
    for command in ("replay", "list"):
        reason = _cli(dsn, monkeypatch, command, "--reason", "nonexistent")
        assert reason.exit_code == 2, reason.output
        assert "has reason 'nonexistent'; reasons there are: 'oversized' (2), 'not JSON' (1), " \
               "'retired rule' (1)" in reason.output
    assert len(_dead_letters(dsn)) == 4


def test_list_shows_the_messages_with_filters_and_a_limit(dsn: str, monkeypatch) -> None:
    assert "no dead letters match" in _cli(dsn, monkeypatch, "list").output
    insert_messages(dsn, [b"\xff\xfe broken\n", "not json {", "x" * 500, event_text("insert")],
                    keys=[b'{"id":1}', None, b"k", b""])
    output = _cli(dsn, monkeypatch, "list").output
    assert "4 dead letter(s) match" in output
    lines = {int(line.split()[4]): line for line in output.splitlines()[3:]}  # by offset
    assert set(lines) == {0, 1, 2, 3}
    assert "not UTF-8" in lines[0] and '{"id":1} / \ufffd broken\\n' in lines[0]  # escaped
    assert "(null key) / not json {" in lines[1] and " 10 " in lines[1]  # size in bytes
    assert lines[2].endswith("x" * 80 + "…")  # a safe preview, cut short
    assert "no key" in lines[3]
    only = _cli(dsn, monkeypatch, "list", "--reason", "not JSON", "--topic", TOPIC).output
    assert "2 dead letter(s) match" in only and "not json {" in only and "broken" not in only
    newest = _cli(dsn, monkeypatch, "list", "--limit", "2").output
    assert "4 dead letter(s) match in" in newest and "the newest 2:" in newest
    assert _cli(dsn, monkeypatch, "list", "--limit", "0").exit_code == 2


def test_summary_shows_counts_by_reason_with_a_sample(dsn: str, monkeypatch) -> None:
    assert "no dead letters" in _cli(dsn, monkeypatch, "summary").output
    insert_messages(dsn, [b"\xff\xfe broken", "not json {", "not json either {"])
    output = _cli(dsn, monkeypatch, "summary").output
    assert "3 dead letter(s)" in output
    lines = output.splitlines()
    not_json = next(line for line in lines if " not JSON " in line)
    assert not_json.startswith(TOPIC) and " 2 " in not_json
    assert any("offset 1: 'not json {'" in line for line in lines)  # the oldest as the sample
    assert any("\ufffd broken" in line for line in lines)  # not UTF-8, shown replaced


# Objects as a schema before the intake created them: parsing views reading the queue directly.
OLD_SCHEMA = [
    "CREATE DATABASE hrdv",
    "CREATE TABLE hrdv.interactions_queue (message String, _topic LowCardinality(String), "
    "_partition UInt64, _offset UInt64, _timestamp Nullable(DateTime)) ENGINE = Null",
    # The buffer of that time: ORDER BY id (merged an id's versions), without channel_detail.
    dict(entity_sql.clickhouse_tables())["interactions_buffer"].replace("ORDER BY (id, lsn)", "ORDER BY id")
    .replace("    channel_detail Nullable(String),\n", ""),
    "INSERT INTO hrdv.interactions_buffer (id, status, op, lsn, committed_at, is_deleted) "
    "VALUES (7, 'new', 'c', 100, now64(3), 0)",
    "CREATE MATERIALIZED VIEW hrdv.interactions_buffer_mv TO hrdv.interactions_buffer AS "
    "SELECT JSONExtractInt(message, 'after', 'id') AS id, 0 AS lsn, _offset FROM hrdv.interactions_queue "
    "WHERE isValidJSON(message)",
    "CREATE TABLE hrdv.dead_letters (topic LowCardinality(String), `partition` UInt64, `offset` UInt64, "
    "kafka_timestamp Nullable(DateTime('UTC')), reason LowCardinality(String), raw_message String, "
    "received_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree(received_at) "
    "ORDER BY (topic, `partition`, `offset`)",
    "CREATE MATERIALIZED VIEW hrdv.interactions_dead_letters_mv TO hrdv.dead_letters AS "
    "SELECT _topic AS topic, _partition AS `partition`, _offset AS `offset`, 'old' AS reason, "
    "message AS raw_message FROM hrdv.interactions_queue WHERE NOT isValidJSON(message)",
]


def test_a_schema_from_before_the_intake_is_migrated(tmp_path) -> None:
    """apply_schema on a data path made by the old schema re-creates the views on the intake
    path, moves the buffer's rows to the (id, lsn) layout and adds channel_detail: each message
    then lands once, checked by today's rules, and nothing buffered before is lost."""
    dsn = f"chdb://{tmp_path / 'clickhouse'}"
    with clickhouse.session(dsn) as client:
        for statement in OLD_SCHEMA:
            client.command(statement)
    clickhouse.apply_schema(dsn)
    bad = dump(_replace(event("insert"), ("after", "customer_id"), "abc"))
    insert_messages(dsn, [event_text("insert"), "garbage", bad])
    assert query(dsn, "SELECT id, _offset FROM hrdv.interactions_buffer WHERE id != 7") == [
        (image(event("insert"))["id"], 0)]
    assert query(dsn, "SELECT id, status, lsn FROM hrdv.interactions_buffer WHERE id = 7") == [(7, "new", 100)]
    assert query(dsn, "SELECT sorting_key FROM system.tables WHERE database = 'hrdv' "
                      "AND name IN ('interactions_buffer', 'interactions_buffer_ordered_by_id')") == [("id, lsn",)]
    assert query(dsn, "SELECT `offset`, reason FROM hrdv.dead_letters ORDER BY `offset`") == [
        (1, "not JSON"), (2, "wrong type: customer_id")]
    sources = query(dsn, "SELECT name, arrayJoin(dependencies_table) FROM system.tables "
                         "WHERE database = 'hrdv' AND name IN ('interactions_queue', 'interactions_intake', "
                         "'interactions_checked') ORDER BY 1, 2")
    assert sources == [("interactions_checked", "interactions_buffer_mv"),
                       ("interactions_checked", "interactions_dead_letters_mv"),
                       ("interactions_intake", "interactions_checked_mv"),
                       ("interactions_queue", "interactions_intake_mv")]
    assert ("channel_detail",) in query(dsn, "SELECT name FROM system.columns WHERE database = 'hrdv' "
                                             "AND table = 'interactions_buffer'")


def _insert_heartbeat(dsn: str, lsn: int, commit_ms: int, offset: int) -> None:
    beat = json.loads(event_text("heartbeat_table")) if is_captured("heartbeat_table") else \
        _replace(event("insert"), ("source", "table"), "debezium_heartbeat")
    beat = _replace(_replace(beat, ("source", "lsn"), lsn), ("source", "ts_ms"), commit_ms)
    beat = _replace(beat, ("after",), {"id": 1, "ts": "2026-11-24T20:41:29.151208Z"})
    with clickhouse.session(dsn) as client:
        client.insert("hrdv.debezium_heartbeat_queue",
                      queue_rows([dump(beat)], first_offset=offset, topic="crm.public.debezium_heartbeat"),
                      column_names=QUEUE_COLUMNS)


def test_an_lsn_beyond_the_source_is_a_dead_letter(dsn: str) -> None:
    """A change's LSN may pass the newest heartbeat's only by the WAL the source can have written
    since (64 MiB + 1 GiB per second of commit time): a forged LSN far beyond it would otherwise
    win over every real later change of its row, for good."""
    good = event("insert")
    commit_ms, lsn = good["source"]["ts_ms"], good["source"]["lsn"]
    forged = dump(with_changes(good, lsn=9 * 10**18))
    insert_messages(dsn, [forged], first_offset=0)  # no heartbeat yet: the LSN is not judged
    assert query(dsn, "SELECT count() FROM hrdv.interactions_buffer") == [(1,)]

    _insert_heartbeat(dsn, lsn, commit_ms, offset=0)
    cases = [
        (dump(with_changes(good, lsn=9 * 10**18)), "lsn ahead of the source"),
        (dump(with_changes(good, lsn=lsn + (64 << 20) + 1)), "lsn ahead of the source"),
        (dump(with_changes(good, lsn=lsn + (64 << 20))), ""),  # the slack
        (dump(with_changes(good, lsn=lsn - 1000)), ""),  # streamed before the heartbeat was consumed
        # committed an hour after the newest heartbeat (capture was down): 3.6 TB of WAL allowed
        (dump(_replace(with_changes(good, lsn=lsn + (500 << 30)), ("source", "ts_ms"), commit_ms + 3_600_000)), ""),
    ]
    insert_messages(dsn, [raw for raw, _ in cases], first_offset=10)
    letters = dict(query(dsn, "SELECT `offset`, reason FROM hrdv.dead_letters FINAL"))
    assert [letters.get(10 + i, "") for i in range(len(cases))] == [reason for _, reason in cases]

    # A heartbeat is judged by the same rule: a forged one cannot lift the bound far.
    _insert_heartbeat(dsn, 9 * 10**18, commit_ms + 1000, offset=1)
    assert query(dsn, "SELECT reason FROM hrdv.dead_letters FINAL WHERE topic = 'crm.public.debezium_heartbeat'") \
        == [("lsn ahead of the source",)]
    assert query(dsn, "SELECT count(), max(lsn) FROM hrdv.source_heartbeats") == [(1, lsn)]

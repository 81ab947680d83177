"""Every entity of hrdv/entities.py gets the whole chain, from its description alone: queue,
checks, buffer, dead letters, staging DDL, the ingestor's topic map and the Dagster assets. The
entity list is read from the descriptions, never written out here."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from hrdv import clickhouse, entity_sql
from hrdv.entities import ENTITIES, HEARTBEAT_TABLE, Column, Entity, captured_tables, excluded_columns
from hrdv.ingest import QUEUE_COLUMNS, QUEUES, topic_queues
from hrdv.settings import load

SAMPLE = {"bigint": 42, "integer": 7, "smallint": 3, "text": "x", "jsonb": '{"channels": ["call"]}',
          "boolean": True, "timestamptz": "2026-11-26T10:00:00.123456Z"}
# A value of the wrong JSON type for each column type (what the row check must refuse).
WRONG = {"bigint": "12", "integer": 1.5, "smallint": 1 << 20, "text": 5, "jsonb": {"a": 1},
         "boolean": "yes", "timestamptz": "yesterday noon"}


def _value(column: Column, table: dict) -> object:
    return "12.50" if column.numeric_scale is not None else table[column.type]


def _key_value(entity: Entity) -> object:
    return 42 if entity.key_is_integer else "K-42"


def _event(entity: Entity, op: str = "c", lsn: int = 1000, **after: object) -> dict:
    row = {c.name: _value(c, SAMPLE) for c in entity.staged} | {entity.key: _key_value(entity)} | after
    now_ms = int(datetime.now(timezone.utc).timestamp() * 1000)
    return {"before": None, "after": row, "op": op,
            "source": {"lsn": lsn, "ts_ms": now_ms, "table": entity.name, "schema": "public"}}


def _insert(dsn: str, entity: Entity, messages: list[tuple[str, bytes]], first_offset: int = 0) -> None:
    topic = load().topic(entity.name)
    stamp = datetime(2026, 1, 2, 0, 4, 6, tzinfo=timezone.utc)
    rows = [[value.encode(), key, topic, 0, first_offset + i, stamp] for i, (value, key) in enumerate(messages)]
    with clickhouse.session(dsn) as client:
        client.insert(f"hrdv.{entity.name}_queue", rows, column_names=QUEUE_COLUMNS)


def _key_of(entity: Entity) -> bytes:
    return json.dumps({entity.key: _key_value(entity)}, separators=(",", ":")).encode()


def test_every_entity_is_captured_mapped_and_staged() -> None:
    """One list: capture, the ingestor's topics, ClickHouse and PostgreSQL DDL and Dagster."""
    from hrdv.definitions import STAGED, defs

    names = [entity.name for entity in ENTITIES]
    assert captured_tables() == [f"public.{name}" for name in names] + [f"public.{HEARTBEAT_TABLE}"]
    assert list(QUEUES) == names
    assert set(topic_queues(load()).values()) == {*QUEUES.values(), f"hrdv.{HEARTBEAT_TABLE}_queue"}
    staging = dict(entity_sql.staging_ddl())
    assert {f"staging.{name}" for name in names} <= set(staging)
    assert {f"staging.{e.name}_history" for e in ENTITIES if e.history} == \
        {label for label in staging if label.endswith("_history")}
    assert list(STAGED) == names
    keys = defs.get_repository_def().asset_graph.get_all_asset_keys()
    for staged in STAGED.values():
        assert {staged.topic_key, staged.buffer_key, staged.staging_key} <= keys
        assert staged.history_key is None or staged.history_key in keys


def test_personal_data_is_never_captured_or_staged() -> None:
    personal = {(e.name, c.name) for e in ENTITIES for c in e.columns if c.personal}
    assert personal >= {("customers", "full_name"), ("contact_persons", "phone"), ("contact_persons", "email")}
    assert sorted(excluded_columns()) == sorted(f"public.{t}.{c}" for t, c in personal)
    for _, ddl in [*entity_sql.staging_ddl(), *entity_sql.clickhouse_tables()]:
        for table, column in personal:
            assert not (f"staging.{table} " in ddl and f" {column} " in ddl), (table, column)


@pytest.mark.parametrize("entity", ENTITIES, ids=lambda e: e.name)
def test_each_topic_parses_and_dead_letters_with_coordinates(dsn: str, entity: Entity) -> None:
    """A valid change reaches the entity's buffer with every column; a wrong type, a foreign key
    and garbage become dead letters with the topic's coordinates and their reason."""
    column = next(c for c in entity.staged if c.name != entity.key)
    wrong_value = "1e99" if column.numeric_scale is not None else WRONG[column.type]
    good = _event(entity)
    messages = [(json.dumps(good), _key_of(entity)),
                (json.dumps(_event(entity, lsn=1001, **{column.name: wrong_value})), _key_of(entity)),
                (json.dumps(good), b'{"' + entity.key.encode() + b'":"other"}'),
                ("not json {", b"")]
    _insert(dsn, entity, messages, first_offset=10)
    with clickhouse.session(dsn) as client:
        buffered = client.query(f"SELECT * FROM hrdv.{entity.name}_buffer").named_results()
        buffered = list(buffered)
        letters = client.query("SELECT topic, `partition`, `offset`, reason FROM hrdv.dead_letters FINAL "
                               "ORDER BY `offset`").result_rows
    assert len(buffered) == 1 and buffered[0][entity.key] == _key_value(entity)
    assert buffered[0]["lsn"] == 1000 and buffered[0]["_offset"] == 10
    for c in entity.staged:
        assert buffered[0][c.name] is not None, f"{entity.name}.{c.name} was not parsed"
    topic = load().topic(entity.name)
    assert letters == [(topic, 0, 11, f"wrong type: {column.name}"),
                       (topic, 0, 12, "key does not match the row"),
                       (topic, 0, 13, "not JSON")]


@pytest.mark.parametrize("entity", [e for e in ENTITIES if not e.key_is_integer][:1], ids=lambda e: e.name)
def test_a_text_key_delete_keeps_the_key(dsn: str, entity: Entity) -> None:
    """A delete of a code-keyed row carries its key alone (dbz_row_image with the key column)."""
    before = {entity.key: "K-42"}
    delete = {"before": before, "after": None, "op": "d",
              "source": {"lsn": 2000, "ts_ms": int(datetime.now(timezone.utc).timestamp() * 1000),
                         "table": entity.name}}
    _insert(dsn, entity, [(json.dumps(_event(entity)), _key_of(entity)), (json.dumps(delete), _key_of(entity))])
    with clickhouse.session(dsn) as client:
        rows = client.query(f"SELECT {entity.key}, is_deleted, lsn FROM hrdv.{entity.name}_buffer ORDER BY lsn").result_rows
    assert rows == [("K-42", 0, 1000), ("K-42", 1, 2000)]


def test_an_incremental_snapshot_row_takes_its_read_position(dsn: str) -> None:
    """Rows of an incremental snapshot (requested by `hrdv up` for tables added to the capture)
    carry no source.lsn: the stream position they were read at (source.sequence) orders them;
    without either the message is a dead letter."""
    entity = ENTITIES[0]
    read = _event(entity, op="r")
    read["source"] |= {"lsn": None, "snapshot": "incremental", "sequence": '["100","2000"]'}
    broken = _event(entity, op="r")
    broken["source"]["lsn"] = None
    _insert(dsn, entity, [(json.dumps(read), _key_of(entity)), (json.dumps(broken), _key_of(entity))])
    with clickhouse.session(dsn) as client:
        rows = client.query(f"SELECT op, lsn FROM hrdv.{entity.name}_buffer").result_rows
        letters = client.query("SELECT `offset`, reason FROM hrdv.dead_letters FINAL").result_rows
    assert rows == [("r", 2000)] and letters == [(1, "no source.lsn")]

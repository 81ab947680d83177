"""Every entity of hrdv/entities.py gets the whole chain, from its description alone: queue,
checks, buffer, dead letters, staging DDL, the ingestor's topic map and the Dagster assets. The
entity list is read from the descriptions, never written out here."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

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


def test_interactions_describe_abandoned_contacts_and_transfers() -> None:
    from hrdv.entities import INTERACTIONS

    columns = {c.name: c for c in INTERACTIONS.staged}
    assert columns["abandoned_at"].type == "timestamptz" and columns["abandoned_at"].default is None
    assert columns["transfer_count"].type == "integer" and columns["transfer_count"].default == "0"
    assert "abandoned" in INTERACTIONS.statuses and "abandoned_at" in INTERACTIONS.lifecycle
    for name in ("abandoned_at", "transfer_count"):
        assert columns[name].description
        assert f"ADD COLUMN IF NOT EXISTS {name} " in dict(entity_sql.clickhouse_tables())["interactions_buffer (columns)"]
        assert f"ADD COLUMN IF NOT EXISTS {name} " in dict(entity_sql.staging_ddl())["staging.interactions"]


def _buffer_rows(dsn: str, where: str = "1") -> list[tuple]:
    with clickhouse.session(dsn) as client:
        return client.query(f"SELECT id, abandoned_at, transfer_count FROM hrdv.interactions_buffer "
                            f"WHERE {where} ORDER BY lsn").result_rows


def test_events_from_before_a_column_with_a_crm_default_take_it(dsn: str) -> None:
    """interactions.transfer_count came with DEFAULT 0: the CRM reads its older rows as 0, so an
    event without the field (sent before the column existed) is buffered with 0, not NULL; an
    absent abandoned_at (no default) stays NULL, a delete keeps its key alone."""
    from hrdv.entities import INTERACTIONS

    before = _event(INTERACTIONS, lsn=1000)
    for name in ("abandoned_at", "transfer_count"):
        del before["after"][name]
    after = _event(INTERACTIONS, lsn=1001, transfer_count=2, abandoned_at="2026-11-26T10:00:07.5Z")
    delete = {"before": {"id": 42}, "after": None, "op": "d", "source": dict(after["source"], lsn=1002)}
    _insert(dsn, INTERACTIONS, [(json.dumps(m), _key_of(INTERACTIONS)) for m in (before, after, delete)])
    rows = _buffer_rows(dsn)
    assert [(r[0], r[2]) for r in rows] == [(42, 0), (42, 2), (42, None)]
    assert rows[0][1] is None and rows[1][1].replace(tzinfo=None) == datetime(2026, 11, 26, 10, 0, 7, 500000)


def test_a_buffer_from_before_the_columns_gains_them_in_place(dsn: str) -> None:
    """A buffer created before abandoned_at and transfer_count: apply_schema adds both, and the
    versions it holds read transfer_count 0 (the CRM's default) and abandoned_at NULL."""
    with clickhouse.session(dsn) as client:
        client.command("DROP VIEW hrdv.interactions_buffer_mv")
        client.command("ALTER TABLE hrdv.interactions_buffer DROP COLUMN abandoned_at, DROP COLUMN transfer_count")
        client.command("INSERT INTO hrdv.interactions_buffer (id, status, op, lsn, committed_at, is_deleted) "
                       "VALUES (7, 'closed', 'u', 100, now64(3), 0)")
    clickhouse.apply_schema(dsn)
    assert _buffer_rows(dsn, "id = 7") == [(7, None, 0)]
    from hrdv.entities import INTERACTIONS

    _insert(dsn, INTERACTIONS, [(json.dumps(_event(INTERACTIONS, transfer_count=1)), _key_of(INTERACTIONS))])
    assert _buffer_rows(dsn, "id = 42")[0][2] == 1  # the views were made again with the columns


def test_a_staging_table_from_before_the_columns_gains_them_in_place(crm_postgres) -> None:
    """staging.interactions created by the description before abandoned_at and transfer_count:
    the current DDL adds both; rows staged before read transfer_count 0, as the CRM reads its
    rows from before, and no default stays on the column (staging takes what the CRM sent)."""
    import dataclasses

    import psycopg
    from psycopg import sql

    from hrdv.entities import INTERACTIONS

    older = dataclasses.replace(INTERACTIONS, columns=tuple(
        c for c in INTERACTIONS.columns if c.name not in ("abandoned_at", "transfer_count")),
        lifecycle=("created_at", "closed_at"))
    with psycopg.connect(crm_postgres.pg_dsn("postgres"), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS staging_upgrade_test")
        conn.execute("CREATE DATABASE staging_upgrade_test")
    with psycopg.connect(crm_postgres.pg_dsn("staging_upgrade_test"), autocommit=True) as conn:
        conn.execute("CREATE SCHEMA staging")
        conn.execute(entity_sql._pg("staging_table.sql.j2", older))
        conn.execute("INSERT INTO staging.interactions (id, status, lsn, committed_at) VALUES (1, 'closed', 10, now())")
        for _ in range(2):  # every start applies it
            conn.execute(dict(entity_sql.staging_ddl())["staging.interactions"])
        assert conn.execute("SELECT abandoned_at, transfer_count FROM staging.interactions").fetchall() == [(None, 0)]
        conn.execute("INSERT INTO staging.interactions (id, lsn, committed_at, is_deleted) VALUES (2, 11, now(), true)")
        assert conn.execute("SELECT transfer_count FROM staging.interactions WHERE id = 2").fetchone() == (None,)
        assert conn.execute(sql.SQL("SELECT count(*) FROM pg_indexes WHERE indexname = {}").format(
            sql.Literal("interactions_abandoned_at_idx"))).fetchone() == (1,)


def test_a_key_reused_after_its_delete_lists_only_the_new_rows_windows(crm_postgres) -> None:
    """A row deleted in staging counts in no window; a new row under its key (a CRM may reuse a
    freed id) makes late only its own windows, in the interaction mart's rule, the generated rule
    of the other entities and the KPI catalog's."""
    import psycopg
    from psycopg import sql

    from hrdv_assets.cdc import STAGED
    from partitions import WINDOW, WINDOW_ORIGIN

    old, new = datetime(2026, 1, 5, 9, 3, tzinfo=timezone.utc), datetime(2026, 1, 5, 11, 7, tzinfo=timezone.utc)
    with psycopg.connect(crm_postgres.pg_dsn("postgres"), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS late_reuse_test WITH (FORCE)")
        conn.execute("CREATE DATABASE late_reuse_test")
    with psycopg.connect(crm_postgres.pg_dsn("late_reuse_test")) as conn:
        conn.execute("CREATE SCHEMA staging")
        for _, statement in entity_sql.staging_ddl():
            conn.execute(statement)
        params = {"range_start": new + timedelta(days=1), "window": WINDOW, "origin": WINDOW_ORIGIN}
        for name in ("interactions", "work_orders"):
            staged = STAGED[name]
            conn.execute(sql.SQL("INSERT INTO staging.{} (id, created_at, lsn, committed_at, is_deleted) "
                                 "VALUES (7, %(old)s, 10, %(old)s, true)").format(sql.Identifier(name)), {"old": old})
            conn.execute(sql.SQL("CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(
                sql.Identifier(staged.temp_table), sql.Identifier("staging", name)))
            conn.execute(sql.SQL("INSERT INTO {} (id, created_at, lsn, committed_at, is_deleted) "
                                 "VALUES (7, %(new)s, 20, %(new)s, false)").format(sql.Identifier(staged.temp_table)),
                         {"new": new})
            expected = [(WINDOW_ORIGIN + (new - WINDOW_ORIGIN) // WINDOW * WINDOW,)]
            for rule in (staged.late_windows, staged.kpi_late_windows):
                assert conn.execute(rule, params).fetchall() == expected, f"{name}: {rule[:80]}"

"""The SQL every entity shares, rendered from one template per object (sql/*/entity/*.sql.j2)
and the entity's description (hrdv/entities.py): ClickHouse's parsing chain and buffer, the window
queries, and PostgreSQL's staging table, upsert, validity history and late-window rule.

Nothing here runs SQL; hrdv.clickhouse applies the ClickHouse statements and hrdv.stores the
PostgreSQL ones, hrdv_assets/cdc.py runs the queries.
"""
from __future__ import annotations

from functools import cache

import jinja2

from hrdv.entities import ENTITIES, HEARTBEAT_TABLE, Entity
from hrdv.sql import SQL_ROOT

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(SQL_ROOT),
    undefined=jinja2.StrictUndefined,
    trim_blocks=False,
    autoescape=False,
)

# Bookkeeping columns every staged row carries after the entity's own.
CHANGE_COLUMNS = ("is_deleted", "lsn", "committed_at")


def render(template: str, **values: object) -> str:
    """sql/<template> rendered with `values`, as one statement (or script) without a trailing ';'."""
    return _ENV.get_template(template).render(**values).strip().rstrip(";").strip()


def _values(entity: Entity, schema: str = "staging") -> dict[str, object]:
    return {
        "e": entity,
        "schema": schema,
        "name": entity.name,
        "key_type": "Int64" if entity.key_is_integer else "String",
        "key_json_type": "Int64" if entity.key_is_integer else "String",
        "columns": [column.name for column in entity.staged],
        "all_columns": list(staged_columns(entity)),
        "toasted": [column.name for column in entity.staged if column.toastable],
        "temp": temp_table(entity),
    }


def temp_table(entity: Entity) -> str:
    """The temporary table a staging run COPYs the window's changes into."""
    return f"tmp_{entity.name}_changes"


def staged_columns(entity: Entity) -> tuple[str, ...]:
    """The columns the window queries return and staging receives, in order."""
    return (*(column.name for column in entity.staged), *CHANGE_COLUMNS)


# --- ClickHouse ----------------------------------------------------------------------------------
def _ch(template: str, **values: object) -> str:
    return render(f"clickhouse/entity/{template}", **values)


def _queue_statements(name: str, topic: str, kafka: bool) -> list[tuple[str, str]]:
    """Intake and queue of one topic (an entity's or the heartbeat's)."""
    flavour = "kafka" if kafka else "embedded"
    statements = [(f"{name}_intake", _ch("intake.sql.j2", name=name)),
                  (f"{name}_intake (_key)", _ch("intake_key.sql.j2", name=name)),
                  (f"{name}_queue ({flavour})", _ch(f"queue.{flavour}.sql.j2", name=name, topic=topic))]
    if not kafka:
        statements.append((f"{name}_queue (_key)", _ch("queue_key.embedded.sql.j2", name=name)))
    return statements


def clickhouse_functions() -> list[tuple[str, str]]:
    """Each entity's row and message checks (after the shared dbz_* functions)."""
    out = []
    for entity in ENTITIES:
        values = _values(entity)
        out += [(f"{entity.name}_row_error", _ch("row_error.sql.j2", **values)),
                (f"{entity.name}_message_error", _ch("message_error.sql.j2", **values))]
    return out


def clickhouse_queues(topic_of, kafka: bool) -> list[tuple[str, str]]:
    """Intakes and queues of the heartbeat and every entity; `topic_of(table)` names the topic."""
    out = _queue_statements(HEARTBEAT_TABLE, topic_of(HEARTBEAT_TABLE), kafka)
    for entity in ENTITIES:
        out += _queue_statements(entity.name, topic_of(entity.name), kafka)
    return out


def clickhouse_tables() -> list[tuple[str, str]]:
    """Every entity's check table and buffer, with the columns added since they were created."""
    out = []
    for entity in ENTITIES:
        values = _values(entity)
        out += [(f"{entity.name}_checked", _ch("checked.sql.j2", **values)),
                (f"{entity.name}_checked (_key)", _ch("checked_key.sql.j2", **values)),
                (f"{entity.name}_buffer", _ch("buffer.sql.j2", **values)),
                (f"{entity.name}_buffer (columns)", _ch("buffer_columns.sql.j2", **values))]
    return out


def clickhouse_views() -> list[tuple[str, str]]:
    """Every entity's views, upstream first: intake, check, then buffer and dead letters."""
    out = []
    for entity in ENTITIES:
        values = _values(entity)
        out += [(f"{entity.name}_intake_mv", _ch("intake_mv.sql.j2", **values)),
                (f"{entity.name}_checked_mv", _ch("checked_mv.sql.j2", **values)),
                (f"{entity.name}_buffer_mv", _ch("buffer_mv.sql.j2", **values)),
                (f"{entity.name}_dead_letters_mv", _ch("dead_letters_mv.sql.j2", **values))]
    return out


def heartbeat_intake_view() -> tuple[str, str]:
    return f"{HEARTBEAT_TABLE}_intake_mv", _ch("intake_mv.sql.j2", name=HEARTBEAT_TABLE)


@cache
def window_query(entity: Entity) -> str:
    """Latest version per key changed in a window (parameters window_start, window_end, unavailable)."""
    return _ch("changes_in_window.sql.j2", **_values(entity))


@cache
def versions_query(entity: Entity) -> str:
    """Every version committed in a window, once each: the validity history's input."""
    return _ch("versions_in_window.sql.j2", **_values(entity))


# --- PostgreSQL ----------------------------------------------------------------------------------
def _pg(template: str, entity: Entity, schema: str = "staging") -> str:
    return render(f"postgres/entity/{template}", **_values(entity, schema))


def staging_ddl() -> list[tuple[str, str]]:
    """staging.<entity> for every entity and staging.<entity>_history for those with history."""
    out = []
    for entity in ENTITIES:
        out.append((f"staging.{entity.name}", _pg("staging_table.sql.j2", entity)))
        if entity.keeps_history:
            out.append((f"staging.{entity.name}_history", _pg("history_table.sql.j2", entity)))
    return out


@cache
def upsert_sql(entity: Entity, schema: str = "staging") -> str:
    """The LSN-guarded upsert of the temp table's changes into <schema>.<entity> (staging, or the
    open window's provisional copy)."""
    return _pg("upsert.sql.j2", entity, schema)


def provisional_table_ddl(entity: Entity) -> str:
    """provisional.<entity>: staging's shape, holding the changes buffered since the last staged window."""
    return _pg("staging_table.sql.j2", entity, "provisional")


@cache
def history_sql(entity: Entity) -> str:
    return _pg("history_upsert.sql.j2", entity)


@cache
def late_windows_sql(entity: Entity) -> str | None:
    """Earlier windows a batch of changes alters; None for an entity without lifecycle times."""
    return _pg("late_windows.sql.j2", entity) if entity.lifecycle else None

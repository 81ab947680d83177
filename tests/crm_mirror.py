"""The CRM's tables copied straight into a scratch database shaped like staging, bypassing Debezium,
Kafka, ClickHouse and the staging runs: what the marts would be if the pipeline were perfect.

Each entity's current rows become staging.<entity> (not deleted), and the entities with a history
get one version per row valid since 2000: as-of joins then read the current reference
attributes, which equals the pipeline's history when no reference row changed meanwhile.
"""
from __future__ import annotations

import psycopg

from hrdv import entity_sql
from hrdv.entities import ENTITIES
from hrdv.settings import Settings
from hrdv.stack import postgres

MIRROR_DB = "crm_mirror"


def create(settings: Settings, database: str = MIRROR_DB) -> str:
    """A fresh, empty database `database` in the settings' cluster with the staging and mart
    schemas; returns its DSN."""
    dsn = postgres.recreate_database(settings, database)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA staging; CREATE SCHEMA mart;")
        for _, statement in entity_sql.staging_ddl():
            conn.execute(statement)
    return dsn


def copy_crm(crm_dsn: str, dsn: str, skip: tuple[str, ...] = ()) -> dict[str, int]:
    """Every entity's CRM rows (but those of `skip`) into the mirror's staging tables; rows copied
    per entity."""
    copied = {}
    with psycopg.connect(crm_dsn) as crm, psycopg.connect(dsn) as mirror:
        for entity in ENTITIES:
            if entity.name in skip:
                continue
            crm_columns = {row[0] for row in crm.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
                "AND table_name = %s", (entity.name,))}
            names = [c.name for c in entity.staged if c.name in crm_columns]
            select = ", ".join(f"{n}::text" if c.type == "jsonb" else n
                               for c in entity.staged if (n := c.name) in crm_columns)
            target = ", ".join(names)
            with crm.cursor().copy(f"COPY (SELECT {select} FROM public.{entity.name}) TO STDOUT") as out, \
                    mirror.cursor().copy(f"COPY staging.{entity.name} ({target}, lsn, committed_at) "
                                         "FROM STDIN") as into:
                rows = 0
                for row in out.rows():
                    into.write_row((*row, 0, "2000-01-01 00:00:00+00"))
                    rows += 1
            copied[entity.name] = rows
            if entity.keeps_history:
                mirror.execute(
                    f"INSERT INTO staging.{entity.name}_history (lsn, valid_from, is_current, {target}) "
                    f"SELECT 0, '2000-01-01 00:00:00+00', true, {target} FROM staging.{entity.name}")
        mirror.commit()
        mirror.execute("ANALYZE")
    return copied

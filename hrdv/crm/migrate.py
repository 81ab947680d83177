"""Source-model migrations of the CRM (sql/crm/migrations/NNN_*.sql), applied once each.

`apply(dsn, name)` runs a migration file and records it in public.schema_migrations in the same
transaction, so a migration is either applied and recorded or neither; applying it again does
nothing. The live generator notices migration 001 while it runs (see hrdv.crm.live).

    ./hrdv.sh crm migrate 001            # on the stack's CRM (HRDV_* settings)
"""
from __future__ import annotations

from pathlib import Path

import psycopg

from hrdv.settings import REPO_ROOT

MIGRATIONS = REPO_ROOT / "sql" / "crm" / "migrations"
TABLE_DDL = """CREATE TABLE IF NOT EXISTS schema_migrations (
    name       text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
)"""


def migration_file(name: str) -> Path:
    """The file of a migration named by its number or full name ('001' or '001_...')."""
    matches = sorted(MIGRATIONS.glob(f"{Path(name).stem}*.sql"))
    if len(matches) != 1:
        known = ", ".join(p.stem for p in sorted(MIGRATIONS.glob("*.sql")))
        raise ValueError(f"migration {name!r}: expected one match in {MIGRATIONS}, known: {known}")
    return matches[0]


def applied(conn: psycopg.Connection) -> list[str]:
    if conn.execute("SELECT to_regclass('schema_migrations')").fetchone()[0] is None:
        return []
    return [row[0] for row in conn.execute("SELECT name FROM schema_migrations ORDER BY name")]


def apply(dsn: str, name: str) -> bool:
    """Apply one migration unless already applied; True when it ran now."""
    path = migration_file(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TABLE_DDL)
        with conn.transaction():
            # Two concurrent `apply` calls: the second waits here, then sees the first's row.
            conn.execute("LOCK TABLE schema_migrations IN EXCLUSIVE MODE")
            done = conn.execute("SELECT 1 FROM schema_migrations WHERE name = %s",
                                (path.stem,)).fetchone()
            if done:
                return False
            conn.execute(path.read_text())
            conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (path.stem,))
    return True

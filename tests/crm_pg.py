"""The seed database of the CRM generator's tests, in the `crm_postgres` cluster (conftest).

A seed database is built once per session (schema, reference data, customers, employees, and a day of
history when hrdv.crm.bulk_load exists); each test gets a fresh copy of it (CREATE DATABASE ...
TEMPLATE: about 0.1 s), so tests neither see nor disturb each other's changes.
"""
from __future__ import annotations

import itertools
import random
from datetime import date, datetime, timezone

import psycopg
from psycopg import sql

from hrdv.settings import Settings

SEED_DB = "crm_seed"
CUSTOMERS = 2000
# The seed's history ends at midnight Moscow time starting REPLAY_DAY, so a replay of that day
# continues it. Fixed rather than "now": the same seed must give the same database.
AS_OF = datetime(2026, 11, 23, 21, 0, tzinfo=timezone.utc)
REPLAY_DAY = date(2026, 11, 24)


def _tiny_seed(conn: psycopg.Connection) -> None:
    """Customers and employees when the bulk loader is not available."""
    rng = random.Random(7)
    regions = conn.execute("SELECT code, coalesce(population_thousands, 1000) FROM regions "
                           "ORDER BY code").fetchall()
    branches = {}
    for region, branch in conn.execute("SELECT region_code, code FROM branches ORDER BY code"):
        branches.setdefault(region, []).append(branch)
    groups = [row[0] for row in conn.execute("SELECT DISTINCT skill_group FROM queues "
                                             "WHERE skill_group IS NOT NULL ORDER BY 1")]
    with conn.cursor() as cur:
        with cur.copy("COPY customers (id, full_name, region_code, branch_code, registered_at) "
                      "FROM STDIN") as copy:
            for cid in range(1, CUSTOMERS + 1):
                region = rng.choices([r for r, _ in regions], [w for _, w in regions])[0]
                copy.write_row((cid, f"Клиент {cid}", region,
                                rng.choice(branches.get(region) or [None]), "2020-01-01T00:00:00Z"))
        operators = [(f"Оператор {i}", "operator", group, rng.choice(regions)[0], shift)
                     for i, (group, shift) in enumerate(itertools.product(groups * 4, ("day", "evening", "night")))]
        cur.executemany("INSERT INTO employees (full_name, role, skill_group, region_code, shift, hired_at) "
                        "VALUES (%s, %s, %s, %s, %s, '2020-01-01')", operators)
        cur.execute("""INSERT INTO employees (full_name, role, region_code, service_area_code, shift, hired_at)
            SELECT 'Инженер ' || s.code, 'engineer', b.region_code, s.code, 'day', '2020-01-01'
            FROM service_areas s JOIN branches b ON b.code = s.branch_code""")


def build_seed(settings: Settings) -> None:
    from hrdv.stack import postgres

    dsn = postgres.recreate_database(settings, SEED_DB)
    with psycopg.connect(dsn, autocommit=True) as conn:
        from hrdv.crm import reference

        reference.apply_schema_and_reference(conn)
    try:
        from hrdv.crm import bulk_load
    except ImportError:
        bulk_load = None
    if bulk_load is not None and hasattr(bulk_load, "load"):
        bulk_load.load(dsn, customers=CUSTOMERS, seed=1, history_days=1, jobs=1, progress=False,
                       as_of=AS_OF)
    else:
        with psycopg.connect(dsn, autocommit=True) as conn:
            _tiny_seed(conn)


def copy_seed(settings: Settings, name: str) -> str:
    """A fresh copy of the seed database named `name` (replacing any); returns its DSN."""
    from hrdv.stack import postgres

    return postgres.recreate_database(settings, name, template=SEED_DB)


def drop_database(settings: Settings, name: str) -> None:
    from hrdv.stack import postgres

    with postgres.admin_connect(settings) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

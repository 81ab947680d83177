"""Initial-load figures: rows/s per table and in total, and size on disk, for N customers.

    .venv/bin/python bench/bench_crm_load.py [--customers 1000000 10000000] [--runs 3] [--jobs 2]

Runs on a PostgreSQL of its own (HRDV_HOME /tmp/hrdv-crm-bench, ports from 26700; only
PostgreSQL, with the stack's configuration: wal_level=logical, 128 MB shared buffers), a fresh
database per run, dropped afterwards. For each size: the median run's per-table rows/s, then
pg_total_relation_size per table and pg_database_size.
"""
from __future__ import annotations

import argparse
import os
import statistics
from datetime import datetime, timezone

os.environ.setdefault("HRDV_HOME", "/tmp/hrdv-crm-bench")
os.environ.setdefault("HRDV_PORT_BASE", "26700")

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from hrdv.crm import bulk_load, reference  # noqa: E402
from hrdv.settings import load as load_settings  # noqa: E402
from hrdv.stack import postgres  # noqa: E402

AS_OF = datetime(2026, 11, 20, 9, tzinfo=timezone.utc)
DB = "crm_bench"


def _fresh(settings) -> str:
    with psycopg.connect(settings.pg_dsn("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    dsn = settings.pg_dsn(DB)
    with psycopg.connect(dsn, autocommit=True) as conn:
        reference.apply_schema_and_reference(conn)
    return dsn


def _sizes(dsn: str) -> list[tuple[str, int]]:
    with psycopg.connect(dsn) as conn:
        rows = [(t, conn.execute("SELECT pg_total_relation_size(%s)", [t]).fetchone()[0])
                for t in bulk_load.TABLES]
        rows.append(("database", conn.execute("SELECT pg_database_size(current_database())"
                                              ).fetchone()[0]))
    return rows


def bench(settings, customers: int, runs: int, jobs: int) -> None:
    reports = []
    for run in range(runs):
        dsn = _fresh(settings)
        reports.append(bulk_load.load(dsn, customers, seed=run + 1, jobs=jobs, as_of=AS_OF,
                                      progress=True))
    median = sorted(reports, key=lambda r: r.total_seconds)[len(reports) // 2]
    print(f"\n=== {customers:,} customers, {runs} run(s), {jobs} connections; totals "
          f"{', '.join(f'{r.total_seconds:.1f} s' for r in reports)}; median run:")
    print(median.summary())
    print(f"median total rows/s: {statistics.median(r.rows / r.total_seconds for r in reports):,.0f}")
    print("size on disk (tables with indexes and TOAST):")
    for name, size in _sizes(settings.pg_dsn(DB)):
        print(f"  {name:<16} {size / 2**20:10,.1f} MiB")
    with psycopg.connect(settings.pg_dsn("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(DB)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    settings = load_settings()
    postgres.start(settings)
    try:
        for n in args.customers:
            bench(settings, n, args.runs, args.jobs)
    finally:
        postgres.stop(settings)


if __name__ == "__main__":
    main()

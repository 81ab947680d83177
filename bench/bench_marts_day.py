"""The KPI marts at volume: a day of windows in one run, one window against a long history, storage.

    .venv/bin/python bench/bench_marts_day.py [--customers 1000000] [--history-days 30] [--runs 3] [--reuse]

On a PostgreSQL of its own ($HRDV_HOME, default /tmp/hrdv-bench-marts, port from 29800): a CRM
with `--customers` customers and `--history-days` of bulk history, then one day replayed by the
generator (as fast as possible; --reuse keeps the CRM an earlier run built with the same
arguments); its tables are copied into a database shaped like staging
(tests/crm_mirror.py: what staging holds once the pipeline has run), and then measured:
- the whole day's 96 windows, every family and grain with the rules, in one transaction (a backfill
  run), --runs times;
- one window at 10:00 Moscow, --runs times: with the whole history in staging, and with staging
  holding only that day (the history deleted), to see whether a window's cost grows with history;
- the marts' storage per day (all tables, indexes included) and per year at that rate.
Prints every run and the medians.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HRDV_HOME", "/tmp/hrdv-bench-marts")
os.environ.setdefault("HRDV_PORT_BASE", "29800")

import psycopg  # noqa: E402

from crm_mirror import copy_crm, create  # noqa: E402
from hrdv import catalog as kpi_catalog  # noqa: E402
from hrdv import catalog_sql, marts  # noqa: E402
from hrdv.crm import bulk_load, live, reference  # noqa: E402
from hrdv.settings import load  # noqa: E402
from hrdv.stack import postgres  # noqa: E402

WINDOW = timedelta(minutes=15)


def _timed(conn: psycopg.Connection, catalog, starts: list[datetime]) -> tuple[float, marts.Publication]:
    began = time.perf_counter()
    with conn.transaction():
        publication = marts.publish(conn, catalog, starts, WINDOW)
        assert publication.passed, publication.failures()
    return time.perf_counter() - began, publication


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--history-days", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--reuse", action="store_true",
                        help="keep the CRM a previous run built with the same --customers and --history-days")
    args = parser.parse_args()
    settings = load()
    postgres.start(settings)
    try:
        run(settings, args)
    finally:
        postgres.stop(settings)


def run(settings, args) -> None:
    day_start = (datetime.now(timezone.utc) - timedelta(days=2)).replace(hour=21, minute=0, second=0, microsecond=0)
    day = (day_start + timedelta(hours=3)).date()
    built = settings.home / "bench_marts_day.json"
    wanted = {"customers": args.customers, "history_days": args.history_days}
    previous = json.loads(built.read_text()) if built.exists() else {}
    if args.reuse and {k: previous.get(k) for k in wanted} == wanted:
        crm, changes = settings.pg_dsn("bench_crm"), previous["changes"]
        day_start = datetime.fromisoformat(previous["day_start"])
        day = (day_start + timedelta(hours=3)).date()
        print(f"CRM of {previous['built_at']} reused: {changes} changes that day")
    else:
        crm = postgres.recreate_database(settings, "bench_crm")
        with psycopg.connect(crm, autocommit=True) as conn:
            reference.apply_schema_and_reference(conn)
        began = time.perf_counter()
        bulk_load.load(crm, customers=args.customers, seed=1, history_days=args.history_days, jobs=2,
                       as_of=day_start)
        changes = live.run_replay(crm, day, speedup=math.inf, seed=2, progress_every=60).changes
        print(f"CRM: {args.customers} customers, {args.history_days} days of history, the day replayed: "
              f"{changes} changes ({time.perf_counter() - began:.0f} s to build)")
        built.write_text(json.dumps({**wanted, "changes": changes, "day_start": day_start.isoformat(),
                                     "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}))
    mirror = create(settings, "bench_mirror")
    copied = copy_crm(crm, mirror, skip=("contact_persons",))  # no mart reads them
    print(f"staging-shaped copy: {copied}")
    catalog = kpi_catalog.load()
    starts = [day_start + i * WINDOW for i in range(96)]
    one = [day_start + 40 * WINDOW]
    with psycopg.connect(mirror) as conn:
        conn.execute(catalog_sql.ddl(catalog))
        conn.commit()
        conn.execute("ANALYZE")
        days, size = [], None
        for n in range(1, args.runs + 1):
            seconds, publication = _timed(conn, catalog, starts)
            days.append(seconds)
            print(f"day run {n}: {seconds:.2f} s, {sum(publication.rows.values())} mart rows, timings {publication.timings}")
            if size is None:  # one day's rows, before re-runs leave dead versions
                size = conn.execute("SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n "
                                    "ON n.oid = c.relnamespace WHERE n.nspname = 'mart' AND c.relkind = 'r'").fetchone()[0]
        history = [_timed(conn, catalog, one)[0] for _ in range(args.runs)]
        for table, column in (("interactions", "created_at"), ("work_orders", "created_at"),
                              ("claims", "created_at"), ("operator_states", "started_at")):
            conn.execute(f"DELETE FROM staging.{table} WHERE {column} < %s", (day_start,))
        conn.commit()
        conn.execute("ANALYZE")
        empty = [_timed(conn, catalog, one)[0] for _ in range(args.runs)]
    with psycopg.connect(crm) as conn:
        facts = conn.execute("SELECT (SELECT count(*) FROM interactions), (SELECT count(*) FROM work_orders), "
                             "(SELECT count(*) FROM claims), (SELECT count(*) FROM operator_states)").fetchone()
    print(f"\nfacts in staging: interactions {facts[0]}, work orders {facts[1]}, claims {facts[2]}, "
          f"operator states {facts[3]}")
    print(f"median of {args.runs}: the day's 96 windows, all marts and rules, one run: {statistics.median(days):.2f} s "
          f"({changes} CRM changes that day)")
    print(f"median of {args.runs}: one window with {args.history_days} days of history in staging: "
          f"{statistics.median(history):.3f} s; with that day only: {statistics.median(empty):.3f} s "
          f"(ratio {statistics.median(history) / statistics.median(empty):.2f})")
    print(f"mart storage: {size / 2**20:.0f} MiB per day, {size * 365 / 2**30:.1f} GiB per year at that rate")


if __name__ == "__main__":
    main()

"""How long each dashboard takes to draw completely with a day at 10 million customers' volume, and
Superset's resident memory.

    .venv/bin/python bench/bench_dashboards.py [--loads 3]

Reads the marts bench/bench_marts_day.py built ($HRDV_HOME, default /tmp/hrdv-bench-marts: run it
first with --customers 10000000 --history-days 1): the database bench_mirror holds one replayed day
of every mart. That day is moved to today (Moscow), so the dashboards' "today" and "last 24 hours"
show it; the report views are created, the reporting login may read them, Superset is started on
that PostgreSQL with the repository's dashboards applied, and Debian's chromium opens each
dashboard --loads times in a fresh profile each (no browser cache; Superset's 10-second data cache
is waited out between loads). Prints each load, the medians, and Superset's memory.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HRDV_HOME", "/tmp/hrdv-bench-marts")
os.environ.setdefault("HRDV_PORT_BASE", "29800")

import psycopg  # noqa: E402

from hrdv import catalog as kpi_catalog  # noqa: E402
from hrdv import catalog_sql  # noqa: E402
from hrdv.dashboards import assets, spec  # noqa: E402
from hrdv.dashboards.cli import apply_dashboards  # noqa: E402
from hrdv.settings import load  # noqa: E402
from hrdv.stack import postgres, process, superset  # noqa: E402
from superset_browser import browser, login, open_dashboard  # noqa: E402

DATABASE = "bench_mirror"
MOVE_TO_TODAY = """
DO $$
DECLARE t text; shift interval;
BEGIN
  SELECT (date_trunc('day', now() AT TIME ZONE 'Europe/Moscow') AT TIME ZONE 'Europe/Moscow') - min(window_start)
    INTO shift FROM mart.kpi_publications;
  IF shift <> interval '0' THEN
    FOR t IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'mart' AND c.relkind = 'r' AND c.relname ~ '^kpi_[a-z_]+_(window|hour|day)$' LOOP
      EXECUTE format('UPDATE mart.%I SET period_start = period_start + $1, period_end = period_end + $1', t) USING shift;
    END LOOP;
    UPDATE mart.kpi_publications SET window_start = window_start + shift, window_end = window_end + shift;
  END IF;
END $$;
"""


def prepare(settings) -> str:
    postgres.start(settings)
    postgres.bootstrap(settings)  # the reporting and Superset logins, Superset's database
    dsn = settings.pg_dsn(DATABASE)
    began = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT count(*) FROM mart.kpi_publications").fetchone()[0]
        if not rows:
            raise SystemExit(f"{DATABASE} holds no published day: run bench/bench_marts_day.py first")
        conn.execute(MOVE_TO_TODAY)
        conn.execute(catalog_sql.ddl(kpi_catalog.load()))
        conn.execute(f"GRANT CONNECT ON DATABASE {DATABASE} TO {settings.reporting.user}; "
                     f"GRANT USAGE ON SCHEMA mart TO {settings.reporting.user}; "
                     f"GRANT SELECT ON ALL TABLES IN SCHEMA mart TO {settings.reporting.user}")
        conn.commit()
        sizes = conn.execute("SELECT (SELECT count(*) FROM mart.kpi_interactions_window), "
                             "(SELECT count(*) FROM mart.kpi_interactions_day)").fetchone()
    print(f"{DATABASE}: {rows} windows published, interactions' window marts {sizes[0]:,} rows, "
          f"day marts {sizes[1]:,} rows; moved to today and report views made in {time.perf_counter() - began:.1f} s")
    return dsn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loads", type=int, default=3)
    args = parser.parse_args()
    settings = load()
    prepare(settings)
    superset.start(settings)
    superset.wait_healthy(settings)
    apply_dashboards(settings, database=DATABASE)
    time.sleep(5)
    print(f"superset at rest: {process.rss_mib(superset.NAME, settings):.0f} MiB resident")
    dashboards = spec.load(kpi_catalog.load())
    seconds: dict[str, list[float]] = {d.slug: [] for d in dashboards}
    peak = 0.0
    try:
        for n in range(1, args.loads + 1):
            with tempfile.TemporaryDirectory() as profile, browser(Path(profile)) as context:
                page = context.new_page()
                login(page, settings.superset_url, settings.superset_admin.user, settings.superset_admin.password)
                for dashboard in dashboards:
                    report = open_dashboard(page, settings.superset_url, assets.SLUG_PREFIX + dashboard.slug,
                                            timeout_s=300)
                    bad = [c.title for c in report.charts if c.state == "error"]
                    seconds[dashboard.slug].append(report.seconds_all_tabs)
                    peak = max(peak, process.rss_mib(superset.NAME, settings) or 0)
                    print(f"load {n}: {dashboard.slug:12} {len(report.charts):3} charts drawn in "
                          f"{report.seconds_all_tabs:6.2f} s" + (f"; ERRORS: {bad}" if bad else ""), flush=True)
            time.sleep(11)  # past Superset's 10-second data cache: every load queries the marts
        print(f"\nmedian of {args.loads} loads, navigation until every chart is drawn:")
        for slug, values in seconds.items():
            print(f"  {slug:12} {statistics.median(values):6.2f} s  (runs {', '.join(f'{v:.2f}' for v in values)})")
        print(f"superset: {process.rss_mib(superset.NAME, settings):.0f} MiB resident after the loads, "
              f"peak seen {peak:.0f} MiB")
    finally:
        superset.stop(settings)
        postgres.stop(settings)


if __name__ == "__main__":
    main()

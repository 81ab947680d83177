"""Loading and validating the whole KPI catalog and producing all its SQL: how long it takes.

    .venv/bin/python bench/bench_catalog.py [--runs 5]

Each run is a fresh Python process (imports of pydantic, YAML and Jinja included, as the CLI, a
code server or a test pays them): it loads catalog/*.yaml, validates every file and reference,
and renders every statement the marts use (window computation, hour and day roll-ups, rows
recomputations, late-window rules, DDL). Prints each run, the median, and the catalog's size.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ONE_RUN = """
import json, time
began = time.perf_counter()
from hrdv import catalog, catalog_sql, entities
loaded = catalog.load()
validated = time.perf_counter()
sql = [catalog_sql.ddl(loaded)]
for family in loaded.families.values():
    sql.append(catalog_sql.compute_sql(loaded, family, "window"))
    for grain in ("hour", "day"):
        sql.append(catalog_sql.roll_up_sql(loaded, family, grain))
        sql.append(catalog_sql.compute_sql(loaded, family, grain, catalog_sql.rows_indicators(family)))
for entity in entities.ENTITIES:
    sql.append(catalog_sql.late_windows_sql(loaded, entity) or "")
done = time.perf_counter()
print(json.dumps({"total_s": done - began, "load_s": validated - began, "sql_s": done - validated,
                  "indicators": sum(len(f.indicators) for f in loaded.families.values()),
                  "series": len(loaded.series), "sql_chars": sum(map(len, sql))}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    runs = []
    for run in range(1, args.runs + 1):
        out = subprocess.run([sys.executable, "-c", ONE_RUN], cwd=ROOT, check=True, capture_output=True,
                             text=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
        r = runs[-1]
        print(f"run {run}: {r['total_s']:.3f} s (import + load + validate {r['load_s']:.3f} s, SQL {r['sql_s']:.3f} s)")
    last = runs[-1]
    print(f"median of {args.runs}: {statistics.median(r['total_s'] for r in runs):.3f} s to load, validate and "
          f"produce the SQL of {last['indicators']} indicators, {last['series']} series "
          f"({last['sql_chars'] / 1024:.0f} KiB of SQL); bar 2 s")


if __name__ == "__main__":
    main()

"""A day of windows backfilled from the UI's route and from the job's route, side by side.

    .venv/bin/python bench/bench_backfill_routes.py [--customers 20000] [--repeats 3]

On a fresh stack of its own with the Dagster daemon and webserver (bench/_stack.py, ports from
29400, 15-minute windows, partitions from yesterday), the CRM gets a bulk load with a day of
history. The sensors are stopped, so that only the backfills run. Then, --repeats times each,
alternating: an asset backfill of yesterday's 96 windows (staging and mart selected, as the UI's
Materialize button on the assets launches it) and a job backfill of the same windows (the
`crm_windows` job's partitions). For each: the backfill's time from launch to done, the
sum of its runs' times, and how many runs it took. Prints each, the medians and the ratio.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

YESTERDAY = (datetime.now(ZoneInfo("Europe/Moscow")) - timedelta(days=1)).strftime("%Y-%m-%d")
os.environ.setdefault("HRDV_WINDOW_MINUTES", "15")
os.environ.setdefault("HRDV_PARTITIONS_START", f"{YESTERDAY}-00:00")

from _stack import fresh_stack, stop_stack  # noqa: E402

from dagster import RunsFilter  # noqa: E402

from hrdv.dagster_api import DagsterApi  # noqa: E402
from hrdv.definitions import defs  # noqa: E402
from hrdv_assets.interactions import INTERACTIONS, MART_KEY  # noqa: E402
from partitions import reporting_windows  # noqa: E402

SENSORS = ("crm_kafka_lag_sensor", "interactions_late_change_sensor")


def day_keys() -> list[str]:
    return [key for key in reporting_windows.get_partition_keys() if key.startswith(YESTERDAY)]


def quiet(api: DagsterApi, timeout: float = 600) -> None:
    """Stop the sensors and wait until no run is left unfinished."""
    for name in SENSORS:
        api.set_sensor(name, running=False)
    instance = api.instance()
    deadline = time.monotonic() + timeout
    while any(not run.is_finished for run in instance.get_runs(limit=50)):
        if time.monotonic() > deadline:
            raise SystemExit("runs still unfinished after the sensors were stopped")
        time.sleep(1)


def measure(api: DagsterApi, route: str, keys: list[str]) -> dict:
    launch = {"asset": lambda: api.asset_backfill(keys, [INTERACTIONS.staging_key, MART_KEY]),
              "job": lambda: api.job_backfill(keys, "crm_windows")}[route]
    began = time.monotonic()
    backfill_id = launch()
    status = api.wait_backfill(backfill_id, timeout=1800)
    backfill_s = time.monotonic() - began
    records = api.instance().get_run_records(RunsFilter(tags={"dagster/backfill": backfill_id}))
    run_s = sum((r.end_time or 0) - (r.start_time or 0) for r in records if r.start_time)
    return {"route": route, "status": status, "backfill_s": backfill_s, "run_s": run_s, "runs": len(records)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    assert defs  # the code location loads before a stack is started for it
    settings = fresh_stack(customers=args.customers, dagster=True, history_days=1)
    api = DagsterApi(settings)
    try:
        quiet(api)
        keys = day_keys()
        print(f"{len(keys)} windows of {YESTERDAY}; {args.customers} customers with a day of history")
        results: dict[str, list[dict]] = {"asset": [], "job": []}
        for repeat in range(args.repeats):
            for route in ("asset", "job"):
                result = measure(api, route, keys)
                results[route].append(result)
                print(f"{repeat + 1}. {route:5} backfill {result['backfill_s']:6.1f} s  runs "
                      f"{result['runs']:3}  run time {result['run_s']:6.1f} s  {result['status']}")
        medians = {route: {k: statistics.median(r[k] for r in rs) for k in ("backfill_s", "run_s")}
                   for route, rs in results.items()}
        for route, m in medians.items():
            print(f"median {route:5}: backfill {m['backfill_s']:.1f} s, run time {m['run_s']:.1f} s")
        print(f"asset route / job route: backfill {medians['asset']['backfill_s'] / medians['job']['backfill_s']:.2f}x, "
              f"run time {medians['asset']['run_s'] / medians['job']['run_s']:.2f}x")
    finally:
        stop_stack(settings)


if __name__ == "__main__":
    main()

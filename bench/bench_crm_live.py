"""How many row changes per second the live CRM generator writes into PostgreSQL on this machine.

A PostgreSQL of its own (home /tmp/hrdv-bench-crm, port 29632), a CRM bulk-loaded with
--customers customers and a day of history; each run gets a fresh copy of it. Two measurements,
each the median of --runs short runs:
  1. throughput: the generator unpaced (a target rate far above what it reaches);
  2. sustained: paced at 90 % of that throughput, with lifecycles compressed (an hour per 6 s)
     so that the mix of inserts, updates and deletes is the steady one, not a fresh stream's
     all-inserts start; it is sustainable if it reaches >= 97 % of its target.

    python bench/bench_crm_live.py [--customers 100000] [--duration 5] [--runs 3]
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
from collections import Counter
from pathlib import Path


from hrdv.crm import behaviour as bh
from hrdv.crm import bulk_load, live, reference
from hrdv.settings import Settings, load
from hrdv.stack import postgres

TEMPLATE = "crm_bench_seed"


def _settings() -> Settings:
    return dataclasses.replace(load(), home=Path("/tmp/hrdv-bench-crm"), pg_port=29632,
                               pg_password="hrdv-bench-crm")


def _seed(settings: Settings, customers: int) -> None:
    import psycopg

    dsn = postgres.recreate_database(settings, TEMPLATE)
    with psycopg.connect(dsn, autocommit=True) as conn:
        reference.apply_schema_and_reference(conn)
    bulk_load.load(dsn, customers=customers, seed=1, history_days=1, jobs=2, progress=False)


def _run(settings: Settings, rate: float, duration: float, behaviour: bh.Behaviour) -> live.Stats:
    dsn = postgres.recreate_database(settings, "crm_bench_run", TEMPLATE)
    return live.run_live(dsn, rate=rate, duration=duration, seed=1, behaviour=behaviour,
                         progress_every=3600)


def _median_rate(runs: list[live.Stats]) -> float:
    return statistics.median(s.changes / s.elapsed_s for s in runs)


def _mix(runs: list[live.Stats]) -> str:
    total: Counter = Counter()
    for stats in runs:
        total.update(stats.actions)
    n = sum(total.values())
    return ", ".join(f"{k} {v / n:.0%}" for k, v in sorted(total.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    settings = _settings()
    postgres.start(settings)
    try:
        _seed(settings, args.customers)
        steady = bh.scaled(bh.Behaviour(), 1 / 600)
        unpaced = [_run(settings, 1e6, args.duration, steady) for _ in range(args.runs)]
        top = _median_rate(unpaced)
        target = round(top * 0.9, -1)
        paced = [_run(settings, target, args.duration, steady) for _ in range(args.runs)]
        reached = _median_rate(paced)
        print(f"\nlive generator into PostgreSQL, {args.customers} customers, "
              f"{args.runs} runs of {args.duration:.0f} s each (medians):")
        print(f"  unpaced throughput : {top:8.0f} changes/s   mix: {_mix(unpaced)}")
        print(f"  paced at {target:6.0f}/s : {reached:8.0f} changes/s "
              f"({reached / target:.0%} of target: {'sustainable' if reached >= 0.97 * target else 'NOT sustainable'})"
              f"   mix: {_mix(paced)}")
    finally:
        postgres.stop(settings)


if __name__ == "__main__":
    main()

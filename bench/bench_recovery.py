"""Recovery time of each component after a crash (SIGKILL), over several runs.

    .venv/bin/python bench/bench_recovery.py [--runs 3] [--rate 40] [--downtime 3]
                                             [--components kafka connect ingestor postgres]

Starts a fresh stack of its own ($HRDV_HOME, default /tmp/hrdv-bench, ports from 29400), keeps
the simple generator writing at --rate, and for each component, --runs times: SIGKILL its process
tree, leave it down --downtime s, restart it with the stack's own start function and time until a
CRM change committed after the restart is in the ClickHouse buffer (hrdv.stack.faults.recover,
the same as tests/test_faults.py, which also proves that nothing is lost). Prints per component
the median, min and max of that recovery time, of the restart command alone, and the duplicate
events Kafka got.
"""
from __future__ import annotations

import argparse
import statistics
import time

from _stack import fresh_stack, stop_stack

from hrdv.stack import faults

SETTLE_S = 5.0  # between two faults, so each starts from a stack that streams normally


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):6.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=40.0, help="CRM changes per second meanwhile")
    parser.add_argument("--downtime", type=float, default=3.0, help="seconds a killed component stays down")
    parser.add_argument("--components", nargs="+", default=list(faults.COMPONENTS), choices=faults.COMPONENTS)
    args = parser.parse_args()
    settings = fresh_stack(customers=500)
    writer = faults.Writer(settings, args.rate)
    results: dict[str, list[faults.Recovery]] = {name: [] for name in args.components}
    writer.start()
    try:
        for _ in range(args.runs):
            for name in args.components:
                results[name].append(faults.recover(settings, name, downtime=args.downtime))
                print(results[name][-1], flush=True)
                time.sleep(SETTLE_S)
    finally:
        writer.stop()
        stop_stack(settings)
    print(f"\nRecovery after SIGKILL, {args.runs} runs, {args.downtime:g} s down, {args.rate:g} changes/s; "
          "median (min-max), seconds:")
    print(f"{'component':10} {'restart command':>20} {'until in the buffer':>22} {'duplicates':>12}")
    for name, runs in results.items():
        print(f"{name:10} {summary([r.restart_s for r in runs]):>20} {summary([r.recovery_s for r in runs]):>22} "
              f"{statistics.median([r.duplicates for r in runs]):>12.0f}")


if __name__ == "__main__":
    main()

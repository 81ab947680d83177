"""Recovery of the stack after the Kafka broker and the ingestor are SIGKILLed together, healed by
`hrdv up` as an operator would run it (again, if it fails).

    HRDV_HOME=... HRDV_PORT_BASE=... .venv/bin/python bench/bench_up_recovery.py [--downtime 3]

Works on the stack already running in $HRDV_HOME (start it with `hrdv up`). Kills both process
trees at once, waits --downtime s, then runs `hrdv up --no-dagster --rate 0` (the generator and
Dagster are left as they are) until a CRM change committed after the last `up` returned is in the
ClickHouse buffer; prints each `up`'s exit code and duration and the time from the first `up`
until that change was in the buffer.

This is the fault that once left the connector UNASSIGNED for Connect's
scheduled.rebalance.max.delay.ms (300 s) while `up` gave up after 120 s before starting the
ingestor. That happens when the Connect worker rejoins its group as a NEW member: the broker
expired its old member because the worker did not come back within its session (10 s) after the
broker restarted, as on a busy machine. --stall-connect S forces that: once the broker listens
again, the Connect worker is stopped (SIGSTOP) for S s, then continued (SIGCONT).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

from hrdv.settings import REPO_ROOT, load
from hrdv.stack import faults, process

GIVE_UP_S = 600.0   # the whole measurement
MARKER_WAIT_S = 60.0  # after an `up` that returned, before running it again


def run_up() -> tuple[int, float]:
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "hrdv.cli", "up", "--no-dagster", "--rate", "0"],
                          cwd=REPO_ROOT)
    return done.returncode, time.monotonic() - began


def marker_in_buffer(settings, since: dict[int, int], timeout: float) -> bool:
    try:
        faults.marker_through(settings, since, timeout)
        return True
    except faults.FaultTimeout as error:
        print(f"bench: not recovered yet ({error})", flush=True)
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--downtime", type=float, default=3.0)
    parser.add_argument("--stall-connect", type=float, default=0.0,
                        help="seconds Connect is stopped once the broker is back (0: not at all)")
    args = parser.parse_args()
    settings = load()
    since = faults.wait_for(lambda: faults.end_offsets(settings), 30, "offsets of the topic")
    killed = sum(faults.sigkill(settings, name) for name in ("kafka", "ingestor"))
    print(f"bench: SIGKILL of kafka and the ingestor ({killed} processes)", flush=True)
    time.sleep(args.downtime)
    if args.stall_connect > 0:
        faults.stall_when(settings, "connect", args.stall_connect,
                          lambda: process.port_open(settings.kafka_port))
    began, runs = time.monotonic(), []
    while time.monotonic() - began < GIVE_UP_S:
        runs.append(run_up())
        print(f"bench: `up` #{len(runs)} exit {runs[-1][0]} after {runs[-1][1]:.1f} s", flush=True)
        if marker_in_buffer(settings, since, MARKER_WAIT_S):
            break
    else:
        sys.exit(f"bench: not recovered within {GIVE_UP_S:.0f} s")
    stalled = f", Connect stalled {args.stall_connect:g} s" if args.stall_connect else ""
    print(f"\nbroker + ingestor SIGKILL, {args.downtime:g} s down{stalled}: `up` ran {len(runs)} time(s) "
          f"({', '.join(f'exit {code} in {s:.1f} s' for code, s in runs)}); a change committed "
          f"after it was in the buffer {time.monotonic() - began:.1f} s after the first `up`")


if __name__ == "__main__":
    main()

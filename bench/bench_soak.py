"""Soak: resident memory of every process of a stack over a long run, to show it stays flat.

    .venv/bin/python bench/bench_soak.py [--minutes 60] [--every 300] [--rate 20] [--window-minutes 1]
                                         [--customers 20000] [--history-days 1] [--keep]
    HRDV_HOME=... HRDV_PORT_BASE=... .venv/bin/python bench/bench_soak.py --reuse [--minutes 60] [--every 300]

By default it starts a fresh stack of its own ($HRDV_HOME, default /tmp/hrdv-bench-soak, ports from
29600, partitions from the current hour) with Dagster's daemon and webserver, runs the live CRM
generator at --rate as `up` does, and stops the stack at the end (--keep leaves it running).
--window-minutes 1 (the default here) makes the sensors request a run every minute: the worst
case for the daemon. --reuse measures an already running stack instead (the one `hrdv status`
would show for the same HRDV_* variables): nothing is started or stopped, --rate and
--window-minutes do not apply.

Every --every seconds it prints one line: the resident memory (MiB, process and children, as
`hrdv status` counts it) of each component, and the Dagster daemon split into
- main: the dagster-daemon process alone;
- codesrv: its largest code server (`dagster api grpc`): the daemon starts a new one every 60 s
  and the old one lingers 20 s more, or until its runs end, so there are often two;
- others: the rest of its tree (older code servers, run workers, their log tails): transient,
  so the daemon's tree swings by several hundred MiB from one sample to the next;
and the Dagster runs succeeded and failed so far. At the end: the table again, and per column
the ratio last / baseline, flagged above 1.10. The baseline is the first sample after a warm-up
of 10 minutes (or, on runs too short for that, the third sample).
"""
from __future__ import annotations

import argparse
import os
import time
from datetime import datetime, timezone


WARM_UP_S = 600.0
FLAG_RATIO = 1.10
# Columns whose ratio says little about a leak, and why.
NOISY = {
    "postgres": "backends come and go, each counting the shared buffers it touched",
    "dagster-daemon": "transient children: read main and codesrv",
    "others": "transient: run workers and draining code servers",
    "total": "sum of the above",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the soak")
    parser.add_argument("--every", type=float, default=300.0, help="seconds between samples")
    parser.add_argument("--rate", type=float, default=20.0, help="CRM changes per second (live generator)")
    parser.add_argument("--window-minutes", type=int, default=1, help="reporting window (must divide 60)")
    parser.add_argument("--customers", type=int, default=20_000, help="customers in the new CRM")
    parser.add_argument("--history-days", type=int, default=1, help="days of history of the new CRM")
    parser.add_argument("--reuse", action="store_true", help="measure the running stack of $HRDV_HOME")
    parser.add_argument("--keep", action="store_true", help="leave the fresh stack running afterwards")
    return parser.parse_args()


def configure(args: argparse.Namespace) -> None:
    """Environment of the stack, before anything of hrdv reads it (settings, partitions)."""
    if args.reuse:
        from hrdv.settings import REPO_ROOT

        os.environ.setdefault("HRDV_HOME", str(REPO_ROOT / ".hrdv"))  # what `hrdv status` reads
        return
    os.environ.setdefault("HRDV_HOME", "/tmp/hrdv-bench-soak")
    os.environ.setdefault("HRDV_PORT_BASE", "29600")
    # Few partitions: with 1-minute windows a start at midnight would already be ~1 000 of them.
    os.environ.setdefault("HRDV_PARTITIONS_START", datetime.now(timezone.utc).strftime("%Y-%m-%d-%H:00"))
    os.environ["HRDV_WINDOW_MINUTES"] = str(args.window_minutes)


_instance = None


def run_counts() -> tuple[int | None, int | None]:
    """Dagster runs succeeded and failed so far (None if the instance cannot be read)."""
    global _instance
    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

    try:
        _instance = _instance or DagsterInstance.get()  # $DAGSTER_HOME of the stack
        return (_instance.get_runs_count(RunsFilter(statuses=[DagsterRunStatus.SUCCESS])),
                _instance.get_runs_count(RunsFilter(statuses=[DagsterRunStatus.FAILURE])))
    except Exception:  # noqa: BLE001 - a sample must not stop the soak
        return None, None


def fmt(value: float | None, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.0f}"


def main() -> None:
    args = parse_args()
    configure(args)
    from hrdv.settings import load

    # The running stack's settings, read before _stack (imported by bench_pipeline) sets its defaults.
    reused = load() if args.reuse else None
    from bench_pipeline import COMPONENTS, postgres_pid

    from hrdv.stack import process

    columns = [*COMPONENTS, "main", "codesrv", "others", "total"]
    widths = {name: max(len(name), 7) for name in columns}

    def sample() -> dict[str, float | None]:
        values: dict[str, float | None] = {}
        for name in COMPONENTS:
            values[name] = None
            for _ in range(3):  # a child that exits while the tree is summed fails one attempt
                try:
                    pid = postgres_pid(settings) if name == "postgres" else process.pid_of(name, settings)
                    values[name] = process.tree_rss_mib(pid)
                except Exception:  # noqa: BLE001 - '-' for this process, the others still count
                    pid = None
                if values[name] is not None or not pid:
                    break
        values.update(process.daemon_split_mib(process.pid_of("dagster-daemon", settings)))
        present = [values[name] for name in COMPONENTS if values[name] is not None]
        values["total"] = sum(present) if present else None
        return values

    if reused is not None:
        settings = reused
        os.environ.update(settings.child_env())
        print(f"measuring the running stack in {settings.home} (nothing started or stopped)", flush=True)
    else:
        from _stack import fresh_stack, stop_stack

        from hrdv.cli import _spawn_python

        try:
            settings = fresh_stack(customers=args.customers, dagster=True, history_days=args.history_days)
            _spawn_python(settings, "generator", ["hrdv.cli", "generate", "--rate", str(args.rate)])
        except BaseException:
            stop_stack(load())  # what did start
            raise
        print(f"fresh stack in {settings.home}: {settings.window_minutes}-minute windows, "
              f"live generator at {args.rate:g} changes/s, Dagster UI on :{settings.dagster_port}", flush=True)
    header = f"{'min':>6} " + " ".join(f"{name:>{widths[name]}}" for name in columns) + f" {'runs ok':>8} {'failed':>7}"
    print(f"resident memory, MiB, every {args.every:g} s for {args.minutes:g} min:\n{header}", flush=True)
    rows: list[tuple[float, dict[str, float | None], tuple[int | None, int | None]]] = []
    began = time.monotonic()
    deadline = began + args.minutes * 60
    try:
        while True:
            elapsed = time.monotonic() - began
            values, runs = sample(), run_counts()
            rows.append((elapsed, values, runs))
            line = (f"{elapsed / 60:6.1f} " + " ".join(fmt(values[name], widths[name]) for name in columns)
                    + f" {fmt(runs[0], 8)} {fmt(runs[1], 7)}")
            print(line, flush=True)
            now = time.monotonic()
            if now >= deadline:
                break
            time.sleep(max(0.0, min(args.every, deadline - now)))
    except KeyboardInterrupt:
        print("interrupted: summary of the samples so far", flush=True)
    finally:
        if reused is None and not args.keep:
            stop_stack(settings)
    summarise(rows, columns, widths, header)


def summarise(rows, columns, widths, header) -> None:
    print(f"\n{len(rows)} samples:\n{header}")
    for elapsed, values, runs in rows:
        print(f"{elapsed / 60:6.1f} " + " ".join(fmt(values[name], widths[name]) for name in columns)
              + f" {fmt(runs[0], 8)} {fmt(runs[1], 7)}")
    if len(rows) < 2:
        return
    warm = [i for i, (elapsed, _, _) in enumerate(rows) if elapsed >= WARM_UP_S and i < len(rows) - 1]
    if warm:
        base, rule = warm[0], f"first sample after {WARM_UP_S / 60:.0f} min of warm-up"
    elif len(rows) >= 4:
        base, rule = 2, "third sample (the run is too short for a 10-minute warm-up)"
    else:
        base, rule = 0, "first sample (too few samples for a warm-up)"
    last = rows[-1]
    print(f"\nlast ({last[0] / 60:.1f} min) / baseline ({rows[base][0] / 60:.1f} min, {rule}); "
          f"! above {FLAG_RATIO:.2f}:")
    for name in columns:
        first, final = rows[base][1][name], last[1][name]
        note = f"  ({NOISY[name]})" if name in NOISY else ""
        if first is None or final is None or first <= 0:
            print(f"  {name:18} {fmt(first, 7)} -> {fmt(final, 7)}       -")
            continue
        ratio = final / first
        flag = " !" if ratio > FLAG_RATIO else "  "
        print(f"  {name:18} {first:7.0f} -> {final:7.0f}  {ratio:5.2f}{flag}{note}")
    ok, failed = last[2]
    print(f"Dagster runs: {fmt(ok, 0).strip()} succeeded, {fmt(failed, 0).strip()} failed")


if __name__ == "__main__":
    main()

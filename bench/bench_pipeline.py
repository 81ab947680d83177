"""Latency and memory of the whole pipeline, sensor-driven, on its own stack.

    .venv/bin/python bench/bench_pipeline.py [--rate 100] [--seconds 60] [--phases 3] [--generator live]

Starts a fresh stack in $HRDV_HOME (default /tmp/hrdv-bench, ports from 29400) with the Dagster
daemon and the real Kafka-lag sensor, measures resident memory at rest, then runs the generator
in phases of --seconds at --rate changes/s and prints, per phase and as the median of phases:
- commit -> ClickHouse buffer: ingested_at - committed_at of every change of every topic (p50, p95);
- window end -> staged: loaded_at of every entity's staged row - the end of its commit's window;
- window end -> mart published: published_at - window_end of every mart row;
- window end -> every KPI mart published: their commit (mart.kpi_publications) - window_end;
- commit -> mart: published_at of an interaction's window - its creation (p50, p95);
- the open window: staleness of its provisional marts as a reader sees them (now - the newest CRM
  commit the last refresh reflects, sampled every second), the refresh's own time, and the CPU the
  ingestor, PostgreSQL and the Dagster daemon spent (cores, over the phase); --no-provisional runs
  the same without the open window (HRDV_PROVISIONAL_LOAD_S=0), for the comparison;
- resident memory of each component at rest and under load (max of samples).
Windows are 1 minute by default here (HRDV_WINDOW_MINUTES) so the sensor-driven path is measured
in minutes; with 15-minute windows, commit -> mart grows by the wait for the window to close.
The sensor's first tick publishes every window since HRDV_PARTITIONS_START (default: today 00:00
UTC, up to 1 500 one-minute windows late in the day, which takes longer than the wait here); for the
steady state, start the partitions at the current hour:

    HRDV_PARTITIONS_START=$(TZ=Europe/Moscow date +%Y-%m-%d-%H:00) .venv/bin/python bench/bench_pipeline.py --rate 1000
"""
from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from datetime import datetime, timedelta, timezone

os.environ.setdefault("HRDV_WINDOW_MINUTES", "1")

import psutil  # noqa: E402
import psycopg  # noqa: E402
from _stack import fresh_stack, stop_stack  # noqa: E402

from hrdv import generator  # noqa: E402
from hrdv.crm import live  # noqa: E402
from hrdv.crm.behaviour import Behaviour  # noqa: E402
from hrdv.entities import ENTITIES  # noqa: E402
from hrdv.cli import SERVICES  # noqa: E402
from hrdv.clickhouse import session  # noqa: E402
from hrdv.stack import process  # noqa: E402

COMPONENTS = ["postgres", "kafka", "connect", *SERVICES]


def rss_by_component(settings) -> dict[str, float]:
    """MiB resident per component, children included (PostgreSQL's backends, Dagster's runs)."""
    pids = {name: process.pid_of(name, settings) for name in COMPONENTS}
    pids["postgres"] = postgres_pid(settings)
    sizes = {name: process.tree_rss_mib(pid) for name, pid in pids.items()}
    return {name: mib for name, mib in sizes.items() if mib is not None}


def postgres_pid(settings) -> int | None:
    pidfile = settings.pg_data / "postmaster.pid"
    return int(pidfile.read_text().split()[0]) if pidfile.exists() else None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def buffer_latencies(settings, since: datetime, until: datetime) -> list[float]:
    """ingested_at - committed_at of every change of every entity's buffer in [since, until)."""
    union = " UNION ALL ".join(
        f"SELECT dateDiff('millisecond', committed_at, ingested_at) FROM hrdv.{e.name}_buffer "
        "WHERE committed_at >= %(since)s AND committed_at < %(until)s" for e in ENTITIES)
    with session(settings.clickhouse_dsn) as client:
        rows = client.query(union, parameters={
            "since": since.strftime("%Y-%m-%d %H:%M:%S"), "until": until.strftime("%Y-%m-%d %H:%M:%S")}).result_rows
    return [row[0] / 1000 for row in rows]


def staged_latencies(settings, since: datetime, until: datetime) -> list[float]:
    """Window end -> staged (loaded_at) of every entity's rows last changed in [since, until)."""
    union = " UNION ALL ".join(
        f"SELECT extract(epoch FROM loaded_at - (date_bin(%(w)s, committed_at, '2000-01-01') + %(w)s))::float "
        f"FROM staging.{e.name} WHERE committed_at >= %(since)s AND committed_at < %(until)s" for e in ENTITIES)
    with psycopg.connect(settings.hrdv_dsn) as conn:
        rows = conn.execute(union, {"w": timedelta(minutes=settings.window_minutes), "since": since,
                                    "until": until}).fetchall()
    return [row[0] for row in rows]


def mart_latencies(settings, since: datetime, until: datetime) -> tuple[list[float], list[float]]:
    with psycopg.connect(settings.hrdv_dsn) as conn:
        published = conn.execute(
            "SELECT extract(epoch FROM published_at - window_end)::float FROM mart.interaction_kpi "
            "WHERE window_end > %s AND window_end <= %s", (since, until)).fetchall()
        per_interaction = conn.execute(
            """SELECT extract(epoch FROM m.published_at - s.created_at)::float
               FROM staging.interactions s JOIN mart.interaction_kpi m
                 ON m.channel_code = s.channel_code AND m.region_code = s.region_code
                AND s.created_at >= m.window_start AND s.created_at < m.window_end
               WHERE s.created_at >= %s AND s.created_at < %s""", (since, until)).fetchall()
    return [r[0] for r in published], [r[0] for r in per_interaction]


def kpi_latencies(settings, since: datetime, until: datetime) -> list[float]:
    """Window end -> every KPI mart of the window published (they commit together)."""
    with psycopg.connect(settings.hrdv_dsn) as conn:
        return [row[0] for row in conn.execute(
            "SELECT extract(epoch FROM published_at - window_end)::float FROM mart.kpi_publications "
            "WHERE window_end > %s AND window_end <= %s", (since, until))]


def wait_for_mart(settings, until: datetime, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(settings.hrdv_dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            latest = conn.execute("SELECT least((SELECT max(window_end) FROM mart.interaction_kpi), "
                                  "(SELECT max(window_end) FROM mart.kpi_publications))").fetchone()[0]
            if latest and latest >= until:
                return
            time.sleep(2)
    raise SystemExit(f"the mart did not reach {until} in {timeout} s: see {settings.logs}")


def provisional_sample(settings) -> tuple[float, datetime, float] | None:
    """(staleness now, refreshed_at, refresh seconds) of the newest provisional refresh."""
    with psycopg.connect(settings.hrdv_dsn) as conn:
        row = conn.execute("SELECT extract(epoch FROM clock_timestamp() - reflects)::float, refreshed_at, seconds "
                           "FROM mart.kpi_provisional_refreshes WHERE reflects IS NOT NULL "
                           "ORDER BY refreshed_at DESC LIMIT 1").fetchone()
    return tuple(row) if row else None


def cpu_seconds(settings) -> dict[str, float]:
    """CPU seconds (user + system) so far of the components the open window loads, children included."""
    pids = {"ingestor": process.pid_of("ingestor", settings), "postgres": postgres_pid(settings),
            "dagster-daemon": process.pid_of("dagster-daemon", settings),
            "dagster-webserver": process.pid_of("dagster-webserver", settings)}
    out = {}
    for name, pid in pids.items():
        if pid is None:
            continue
        try:
            proc = psutil.Process(pid)
            total = 0.0
            times = proc.cpu_times()  # children it waited for (ended backends, run workers) included
            total += times.user + times.system + times.children_user + times.children_system
            for child in proc.children(recursive=True):
                try:
                    times = child.cpu_times()
                    total += times.user + times.system
                except psutil.NoSuchProcess:
                    pass
            out[name] = total
        except psutil.NoSuchProcess:
            pass
    return out


def fmt(values: list[float]) -> str:
    return f"p50 {percentile(values, 0.5):7.3f} s  p95 {percentile(values, 0.95):7.3f} s  (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=100.0, help="CRM changes per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of one phase")
    parser.add_argument("--phases", type=int, default=3, help="phases; the median of phases is printed")
    parser.add_argument("--generator", choices=["live", "simple"], default="live",
                        help="live: hrdv.crm.live (thousands of changes/s); simple: hrdv.generator")
    parser.add_argument("--reference-share", type=float, default=0.2,
                        help="live generator: share of its steps that change reference entities "
                             "(customers, contacts, employees, queues, territories), so every topic carries load")
    parser.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    parser.add_argument("--no-provisional", action="store_true",
                        help="without the open window's provisional marts (HRDV_PROVISIONAL_LOAD_S=0)")
    args = parser.parse_args()
    if args.no_provisional:
        os.environ["HRDV_PROVISIONAL_LOAD_S"] = "0"

    settings = fresh_stack(customers=5000, dagster=True)
    try:
        time.sleep(20)  # let start-up settle before measuring rest
        at_rest = rss_by_component(settings)
        summary: dict[str, list[float]] = {f"{key}_{p}": [] for key in ("buffer", "staged", "publish",
                                                                         "kpi_marts", "mart", "stale", "refresh")
                                           for p in ("p50", "p95")}
        cores: dict[str, list[float]] = {}
        under_load: dict[str, float] = {}
        for phase in range(1, args.phases + 1):
            since = datetime.now(timezone.utc)
            run = live.run_live if args.generator == "live" else generator.run
            extra = ({"behaviour": Behaviour(reference_change_share=args.reference_share)}
                     if args.generator == "live" else {})
            writer = threading.Thread(target=run, kwargs={
                "dsn": settings.crm_dsn, "rate": args.rate, "duration": args.seconds,
                "seed": phase, "progress_every": 1e9, **extra})
            cpu_before, began = cpu_seconds(settings), time.monotonic()
            writer.start()
            stale: list[float] = []
            refreshes: dict[datetime, float] = {}
            last_rss = 0.0
            while writer.is_alive():
                if time.monotonic() - last_rss >= 2:
                    for name, mib in rss_by_component(settings).items():
                        under_load[name] = max(under_load.get(name, 0.0), mib)
                    last_rss = time.monotonic()
                sample = provisional_sample(settings)
                if sample and time.monotonic() - began > 15:  # past the first refreshes of the phase
                    stale.append(sample[0])
                    refreshes[sample[1]] = sample[2]
                time.sleep(1)
            cpu_after, took = cpu_seconds(settings), time.monotonic() - began
            for name in cpu_after:
                cores.setdefault(name, []).append((cpu_after[name] - cpu_before.get(name, 0.0)) / took)
            until = datetime.now(timezone.utc)
            window_edge = until.replace(second=0, microsecond=0)  # whole windows only
            wait_for_mart(settings, window_edge)
            buffer = buffer_latencies(settings, since, until)
            published, commit_to_mart = mart_latencies(settings, since, window_edge)
            staged = staged_latencies(settings, since, window_edge)
            kpi = kpi_latencies(settings, since, window_edge)
            print(f"phase {phase}: commit -> buffer        {fmt(buffer)}  (all {len(ENTITIES)} topics)")
            print(f"phase {phase}: window end -> staged    {fmt(staged)}  (every entity)")
            print(f"phase {phase}: window end -> published {fmt(published)}")
            print(f"phase {phase}: window end -> KPI marts {fmt(kpi)}  (every family and grain, one commit)")
            print(f"phase {phase}: commit -> mart          {fmt(commit_to_mart)}")
            print(f"phase {phase}: open window staleness  {fmt(stale)}  (sampled every second)")
            print(f"phase {phase}: provisional refresh    {fmt(list(refreshes.values()))}")
            print(f"phase {phase}: cores used             " + ", ".join(
                f"{name} {values[-1]:.2f}" for name, values in cores.items()))
            for key, values in (("buffer", buffer), ("staged", staged), ("publish", published),
                                ("kpi_marts", kpi), ("mart", commit_to_mart), ("stale", stale),
                                ("refresh", list(refreshes.values()))):
                summary[f"{key}_p50"].append(percentile(values, 0.5))
                summary[f"{key}_p95"].append(percentile(values, 0.95))
        print(f"\nmedian of {args.phases} phases at {args.rate:.0f} changes/s, {settings.window_minutes}-minute windows:")
        for key, values in summary.items():
            print(f"  {key:12} {statistics.median(values):8.3f} s")
        print("  cores used   " + ", ".join(f"{name} {statistics.median(v):.2f}" for name, v in cores.items()))
        print(f"  open window  {'off (--no-provisional)' if args.no_provisional else 'on'}")
        print("\nresident memory, MiB (at rest / max under load):")
        for name in COMPONENTS:
            if name in at_rest or name in under_load:  # the generator runs in this process
                print(f"  {name:18} {at_rest.get(name, 0):7.0f} / {under_load.get(name, 0):7.0f}")
        print(f"  {'total':18} {sum(at_rest.values()):7.0f} / {sum(under_load.values()):7.0f}")
    finally:
        if not args.keep:
            stop_stack(settings)


if __name__ == "__main__":
    main()

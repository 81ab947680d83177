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
    args = parser.parse_args()

    settings = fresh_stack(customers=5000, dagster=True)
    try:
        time.sleep(20)  # let start-up settle before measuring rest
        at_rest = rss_by_component(settings)
        summary: dict[str, list[float]] = {f"{key}_{p}": [] for key in ("buffer", "staged", "publish",
                                                                         "kpi_marts", "mart")
                                           for p in ("p50", "p95")}
        under_load: dict[str, float] = {}
        for phase in range(1, args.phases + 1):
            since = datetime.now(timezone.utc)
            run = live.run_live if args.generator == "live" else generator.run
            extra = ({"behaviour": Behaviour(reference_change_share=args.reference_share)}
                     if args.generator == "live" else {})
            writer = threading.Thread(target=run, kwargs={
                "dsn": settings.crm_dsn, "rate": args.rate, "duration": args.seconds,
                "seed": phase, "progress_every": 1e9, **extra})
            writer.start()
            while writer.is_alive():
                for name, mib in rss_by_component(settings).items():
                    under_load[name] = max(under_load.get(name, 0.0), mib)
                time.sleep(2)
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
            for key, values in (("buffer", buffer), ("staged", staged), ("publish", published),
                                ("kpi_marts", kpi), ("mart", commit_to_mart)):
                summary[f"{key}_p50"].append(percentile(values, 0.5))
                summary[f"{key}_p95"].append(percentile(values, 0.95))
        print(f"\nmedian of {args.phases} phases at {args.rate:.0f} changes/s, {settings.window_minutes}-minute windows:")
        for key, values in summary.items():
            print(f"  {key:12} {statistics.median(values):8.3f} s")
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

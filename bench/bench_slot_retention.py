"""WAL held back by Debezium's replication slot while Kafka Connect is down, at live CRM rates.

    .venv/bin/python bench/bench_slot_retention.py [--minutes 3] [--rates 20 100 1000]

Starts a fresh stack of its own ($HRDV_HOME, default /tmp/hrdv-bench, ports from 29400) with the
CRM `up` gives (20 000 customers, 7 days of history). For each rate: stops Kafka Connect (a clean
stop), runs the live generator (hrdv.crm.live.run_live, what `up` runs at --rate 20) for
--minutes, samples pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) of the slot every 10 s and
prints the MiB retained per minute of downtime (median of the per-minute slopes) and per change.
Then it starts Connect again (the generator has stopped) and times, from the start command:
- until the slot lets the WAL go (retention back under 1 MiB);
- until the ClickHouse buffer holds the whole backlog (a heartbeat committed after the generator
  stopped is in Kafka, and the ingestion group has committed past the topic's end offsets then).
"""
from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

import psycopg
from _stack import fresh_stack, stop_stack

from hrdv.crm import live
from hrdv.settings import Settings
from hrdv.stack import faults, kafka
from resources.kafka import KafkaResource

SAMPLE_S = 10.0
RELEASED_BYTES = 2**20  # the slot counts as caught up below 1 MiB of retained WAL
MIB = 2**20


def retained_bytes(settings: Settings) -> int:
    with psycopg.connect(settings.crm_dsn) as conn:
        return int(conn.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) FROM pg_replication_slots "
            "WHERE slot_name = %s", (settings.slot_name,)).fetchone()[0])


def sample_while(settings: Settings, worker: threading.Thread) -> list[tuple[float, int]]:
    """(seconds since start, retained bytes) every SAMPLE_S while the worker runs, and at its end."""
    began, samples = time.monotonic(), []
    while worker.is_alive():
        samples.append((time.monotonic() - began, retained_bytes(settings)))
        worker.join(SAMPLE_S)
    samples.append((time.monotonic() - began, retained_bytes(settings)))
    return samples


def per_minute_slopes(samples: list[tuple[float, int]]) -> list[float]:
    """MiB retained per minute, one slope per whole minute of samples."""
    slopes = []
    for minute in range(int(samples[-1][0] // 60)):
        inside = [(t, b) for t, b in samples if minute * 60 <= t <= (minute + 1) * 60 + 1]
        (t0, b0), (t1, b1) = inside[0], inside[-1]
        if t1 > t0:
            slopes.append((b1 - b0) / MIB / ((t1 - t0) / 60))
    return slopes


def buffer_caught_up(settings: Settings, since: datetime) -> bool:
    """A heartbeat committed after `since` is in Kafka and ClickHouse has everything before it."""
    resource = KafkaResource.of_stack(settings)
    heartbeat = resource.latest_heartbeat()
    if heartbeat is None or heartbeat <= since:
        return False
    return all(lag.lag == 0 for lag in resource.lag([settings.topic("interactions")]))


def seconds_until(conditions: dict[str, Callable[[], bool]], began: float,
                  timeout: float) -> dict[str, float]:
    """Seconds from `began` until each condition first held (polled every 0.5 s)."""
    done: dict[str, float] = {}
    while len(done) < len(conditions):
        if time.monotonic() - began > timeout:
            raise faults.FaultTimeout(f"not within {timeout:.0f} s: {set(conditions) - set(done)}")
        for name, condition in conditions.items():
            if name not in done and condition():
                done[name] = round(time.monotonic() - began, 1)
        time.sleep(0.5)
    return done


def measure(settings: Settings, rate: float, minutes: float) -> dict[str, float]:
    kafka.stop_connect(settings)
    stats: list[live.Stats] = []
    worker = threading.Thread(target=lambda: stats.append(live.run_live(
        settings.crm_dsn, rate=rate, duration=minutes * 60, seed=int(rate), progress_every=60)))
    worker.start()
    samples = sample_while(settings, worker)
    stopped = datetime.now(timezone.utc)
    slopes = per_minute_slopes(samples)
    began = time.monotonic()
    kafka.start_connect(settings)
    done = seconds_until({"released": lambda: retained_bytes(settings) < RELEASED_BYTES,
                          "drained": lambda: buffer_caught_up(settings, stopped)}, began, 600)
    released, drained = done["released"], done["drained"]
    changes = stats[0].changes if stats else 0
    per_minute = statistics.median(slopes) if slopes else float("nan")
    return {"rate": rate, "changes": changes, "retained_mib": samples[-1][1] / MIB,
            "mib_per_min": per_minute, "kib_per_change": per_minute * 1024 / (rate * 60),
            "slopes": slopes, "released_s": released, "drained_s": drained}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0, help="Connect downtime per rate")
    parser.add_argument("--rates", type=float, nargs="+", default=[20.0], help="changes per second")
    args = parser.parse_args()
    settings = fresh_stack(customers=20_000, history_days=7)
    try:
        rows = [measure(settings, rate, args.minutes) for rate in args.rates]
    finally:
        stop_stack(settings)
    print(f"\nWAL retained by slot {settings.slot_name} while Kafka Connect was down {args.minutes:g} min:")
    print(f"{'rate/s':>7} {'changes':>8} {'retained MiB':>12} {'MiB/min':>8} {'KiB/change':>10} "
          f"{'WAL released s':>14} {'buffer caught up s':>18}  per-minute slopes")
    for r in rows:
        print(f"{r['rate']:>7.0f} {r['changes']:>8} {r['retained_mib']:>12.1f} {r['mib_per_min']:>8.2f} "
              f"{r['kib_per_change']:>10.2f} {r['released_s']:>14.1f} {r['drained_s']:>18.1f}  "
              f"{', '.join(f'{s:.2f}' for s in r['slopes'])}")


if __name__ == "__main__":
    main()

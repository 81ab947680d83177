"""How fast Debezium messages get from the embedded queue into the buffer (chDB).

Each run is what one ingestor batch does: open a session (file lock + chDB engine), insert N raw
messages into hrdv.interactions_queue (the materialized views validate and parse them into
hrdv.interactions_buffer), close. Prints messages/s, median of 3 runs, for several batch sizes.
With --bad every message is a dead letter (a mix of the rejection reasons): how fast bad
messages are routed to hrdv.dead_letters. A heartbeat is stored first, as on a running stack, so
every message's LSN is judged against it (dbz_source_error).

    python bench/bench_clickhouse_ingest.py [--sizes 1000 5000 20000] [--runs 3] [--bad]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from hrdv import clickhouse
from hrdv.ingest import QUEUE_COLUMNS

TOPIC = "crm.public.interactions"
START = datetime(2026, 11, 24, 7, 0, tzinfo=timezone.utc)


def message(item: int, lsn: int) -> bytes:
    """A Debezium insert event (~750 bytes, Cyrillic subject) like the connector writes."""
    at = START + timedelta(milliseconds=item * 37)
    iso = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    commit_ms = int(at.timestamp() * 1000)
    row = {"id": item, "customer_id": 10_000 + item % 5000, "channel_code": "call",
           "region_code": "RU-SPE", "topic_code": "billing", "queue_code": "l1-call",
           "direction": "inbound", "status": "new", "operator_id": 4711 if item % 3 else None,
           "subject": f"Не проходит оплата №{item} — «списали дважды»", "created_at": iso,
           "first_response_at": None, "closed_at": None, "resolved_on_first_contact": None,
           "updated_at": iso}
    source = {"version": "3.7.0.Final", "connector": "postgresql", "name": "crm",
              "ts_ms": commit_ms, "snapshot": "false", "db": "crm",
              "sequence": f'["{lsn}","{lsn}"]', "ts_us": commit_ms * 1000,
              "ts_ns": commit_ms * 1_000_000, "schema": "public", "table": "interactions",
              "txId": 700 + item, "lsn": lsn, "xmin": None, "origin": None, "origin_lsn": None}
    value = {"before": None, "after": row, "source": source, "transaction": None, "op": "c",
             "ts_ms": commit_ms + 30, "ts_us": (commit_ms + 30) * 1000,
             "ts_ns": (commit_ms + 30) * 1_000_000}
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def bad_message(item: int, lsn: int) -> bytes:
    """A message the views reject, cycling through four reasons: two wrong column types (the
    first and the last row check: every check runs), not JSON, wrong table. ('oversized' is left
    out: 1 MiB messages would measure memory copies, not routing.)"""
    good = message(item, lsn)
    kind = item % 4
    if kind == 0:  # customer_id "x10000"
        return good.replace(b'"customer_id":', b'"customer_id":"x', 1).replace(
            b',"channel_code"', b'","channel_code"', 1)
    if kind == 1:
        return good.replace(b'"resolved_on_first_contact":null', b'"resolved_on_first_contact":"yes"')
    if kind == 2:
        return good[:-5]  # cut off: not JSON
    return good.replace(b'"table":"interactions"', b'"table":"claims"')


def batch(size: int, first: int, bad: bool = False) -> list[list]:
    stamp = datetime.now(timezone.utc)
    make = bad_message if bad else message
    return [[make(first + i, 30_000_000 + (first + i) * 100), b'{"id":%d}' % (first + i), TOPIC, 0,
             first + i, stamp] for i in range(size)]


def one_run(dsn: str, rows: list[list]) -> float:
    began = time.perf_counter()
    with clickhouse.session(dsn) as client:
        client.insert("hrdv.interactions_queue", rows, column_names=QUEUE_COLUMNS)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bad", action="store_true", help="every message a dead letter")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hrdv-bench-") as tmp:
        dsn = f"chdb://{Path(tmp) / 'clickhouse'}"
        clickhouse.apply_schema(dsn)
        with clickhouse.session(dsn) as client:  # the newest heartbeat: LSN 0, at START
            client.insert("hrdv.source_heartbeats", [[0, int(START.timestamp() * 1000), 0, 0]],
                          column_names=["lsn", "committed_ms", "_partition", "_offset"])
        size_bytes = len(message(1, 1))
        print(f"message size ~{size_bytes} bytes; each run = open session + insert + close")
        print(f"{'batch':>7} {'median s':>9} {'msgs/s':>9}   runs (s)")
        offset = 0
        for size in args.sizes:
            times = []
            for _ in range(args.runs):
                rows = batch(size, offset, args.bad)
                offset += size
                times.append(one_run(dsn, rows))
            median = statistics.median(times)
            runs = " ".join(f"{t:.3f}" for t in times)
            print(f"{size:>7} {median:>9.3f} {size / median:>9.0f}   {runs}")
        with clickhouse.session(dsn) as client:
            stored = client.query("SELECT count() FROM hrdv.interactions_buffer").result_rows[0][0]
            letters = client.query("SELECT count() FROM hrdv.dead_letters").result_rows[0][0]
        expected = (0, offset) if args.bad else (offset, 0)
        print(f"buffer rows {stored}, dead letters {letters} (expected {expected[0]} and {expected[1]})")


if __name__ == "__main__":
    main()

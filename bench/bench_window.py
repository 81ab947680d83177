"""One window of all marts with 50 000 changes: how long staging + the marts take.

    .venv/bin/python bench/bench_window.py [--changes 50000] [--runs 3] [--interactions-only]

By default the changes are spread over the entities as a CRM day spreads them: interactions 50 %
(new, assigned, closed, deleted), work orders 15 %, customers 15 % (tariff and segment changes),
contact persons 10 %, claims 5 %, employees 5 % (hires); --interactions-only writes interactions
alone, as before the other entities were staged.

On a fresh stack of its own (bench/_stack.py, 1-minute windows so that the window closes soon:
only closed windows are partitions), it writes N row changes into the CRM in a few set-based
statements (new interactions, assignments, closings, deletes), waits
until all of them are in the ClickHouse buffer, then materialises staging, the interaction mart and
every KPI-catalog mart (window, hour, day, with their rules) for that window in one in-process run,
--runs times (staging and the marts emptied in between, so every run does the same work), and
prints each run and the median.
"""
from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime, timezone

import os

os.environ.setdefault("HRDV_WINDOW_MINUTES", "1")

from _stack import fresh_stack, stop_stack  # noqa: E402

import psycopg  # noqa: E402
from dagster import DagsterInstance, materialize  # noqa: E402

from hrdv.definitions import ASSETS, KPI_KEYS, WINDOWED, defs  # noqa: E402
from hrdv_assets.cdc import STAGED  # noqa: E402
from hrdv_assets.interactions import MART_KEY  # noqa: E402
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG  # noqa: E402

from partitions import WINDOW, key_of, reporting_windows, window_of  # noqa: E402
from resources.kafka import KafkaResource  # noqa: E402

# Parameters are bound client-side, so the modulo operator is written %%.
WRITE_SQL = """
INSERT INTO interactions (id, customer_id, channel_code, region_code, topic_code, queue_code,
                          status, subject, created_at, updated_at)
SELECT g, c.id, (ARRAY['call', 'chat', 'web'])[1 + g %% 3], c.region_code,
       (ARRAY['internet', 'tv', 'mobile', 'billing', 'equipment'])[1 + g %% 5],
       'q_' || (ARRAY['call', 'chat', 'web'])[1 + g %% 3], 'new', 'Обращение ' || g,
       clock_timestamp(), clock_timestamp()
FROM generate_series(%(first)s, %(first)s + %(new)s - 1) AS g
JOIN customers AS c ON c.id = 1 + g %% 5000;

UPDATE interactions SET status = 'assigned', operator_id = id %% 500, updated_at = clock_timestamp()
WHERE id >= %(first)s AND id < %(first)s + %(assigned)s;

UPDATE interactions SET status = 'closed', closed_at = clock_timestamp(),
       resolved_on_first_contact = id %% 3 > 0, updated_at = clock_timestamp()
WHERE id >= %(first)s AND id < %(first)s + %(closed)s;

DELETE FROM interactions WHERE id >= %(first)s + %(new)s - %(deleted)s AND id < %(first)s + %(new)s;
"""


# The other entities' share of a spread window (interactions take the rest). %%: client-side binding.
SPREAD_SQL = """
INSERT INTO work_orders (interaction_id, customer_id, type, priority, service_area_code, status,
                         sla_due_at, created_at, updated_at)
SELECT i.id, i.customer_id, 'repair', 1 + i.id %% 4, (SELECT code FROM service_areas ORDER BY code LIMIT 1),
       'new', clock_timestamp() + interval '1 day', clock_timestamp(), clock_timestamp()
FROM interactions AS i WHERE i.id >= %(first)s ORDER BY i.id LIMIT %(work_orders)s;

INSERT INTO claims (customer_id, interaction_id, category, amount_claimed, regulatory_due_at, created_at, updated_at)
SELECT i.customer_id, i.id, 'billing_error', 100 + i.id %% 900, clock_timestamp() + interval '60 days',
       clock_timestamp(), clock_timestamp()
FROM interactions AS i WHERE i.id >= %(first)s ORDER BY i.id DESC LIMIT %(claims)s;

INSERT INTO contact_persons (customer_id, full_name, phone)
SELECT 1 + g %% 5000, 'Контакт ' || g, '+7900' || g FROM generate_series(1, %(contact_persons)s) AS g;

INSERT INTO employees (full_name, role, region_code, shift, skill_group, site, hired_at)
SELECT 'Оператор ' || g, 'operator', 'RU-MOW', 'day', 'general', 'msk-1', clock_timestamp()
FROM generate_series(1, %(employees)s) AS g;
"""
CUSTOMER_PASS_SQL = """
UPDATE customers SET segment = CASE WHEN segment = 'VIP' THEN 'B2C' ELSE 'VIP' END,
       tariff_code = (SELECT code FROM tariffs ORDER BY code LIMIT 1 OFFSET %(pass)s %% 3)
WHERE id IN (SELECT id FROM customers ORDER BY id LIMIT %(rows)s)
"""


def write_spread(dsn: str, changes: int, first: int) -> None:
    """changes over every entity (see the module's docstring)."""
    parts = {"work_orders": changes * 15 // 100, "claims": changes * 5 // 100,
             "contact_persons": changes * 10 // 100, "employees": changes * 5 // 100}
    customers = changes * 15 // 100
    write_changes(dsn, changes - sum(parts.values()) - customers, first)
    with psycopg.connect(dsn, autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
        conn.execute(SPREAD_SQL, {"first": first, **parts})
        done, step = 0, 0
        while done < customers:
            rows = min(5000, customers - done)
            conn.execute(CUSTOMER_PASS_SQL, {"pass": step, "rows": rows})
            done, step = done + rows, step + 1


def write_changes(dsn: str, changes: int, first: int) -> None:
    """changes = new + assigned + closed + deleted, in the proportions 40/30/25/5."""
    parts = {"new": changes * 40 // 100, "assigned": changes * 30 // 100,
             "closed": changes * 25 // 100}
    parts["deleted"] = changes - sum(parts.values())
    with psycopg.connect(dsn, autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
        conn.execute(WRITE_SQL, {"first": first, **parts})


def wait_until_buffered(settings, timeout: float = 300) -> float:
    kafka = KafkaResource.of_stack(settings)
    began = time.monotonic()
    previous = -1
    while time.monotonic() - began < timeout:
        lags = kafka.lag([staged.topic for staged in STAGED.values()])
        ends = sum(lag.end_offset for lag in lags)
        if lags and ends == previous and all(lag.lag == 0 for lag in lags):
            return time.monotonic() - began
        previous = ends
        time.sleep(1)
    raise SystemExit(f"the buffer did not catch up in {timeout} s: see {settings.logs}")


def current_window_with_room(seconds: float) -> str:
    """The current window's key, after waiting for the next one if this one ends too soon."""
    now = datetime.now(timezone.utc)
    key = reporting_windows.get_partition_key_for_timestamp(now.timestamp())
    end = window_of(key).end
    if (end - now).total_seconds() < seconds:
        time.sleep((end - now).total_seconds() + 0.5)
        key = reporting_windows.get_partition_key_for_timestamp(time.time())
    return key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--interactions-only", action="store_true")
    args = parser.parse_args()
    stack_started = datetime.now(timezone.utc)
    settings = fresh_stack(customers=5000, dagster=False)
    try:
        key = current_window_with_room(seconds=30)
        began = time.monotonic()
        (write_changes if args.interactions_only else write_spread)(settings.crm_dsn, args.changes, first=10_000_000)
        print(f"wrote {args.changes} changes in {time.monotonic() - began:.1f} s; "
              f"all in the buffer {wait_until_buffered(settings):.1f} s later")
        time.sleep(max(0.0, (window_of(key).end - datetime.now(timezone.utc)).total_seconds() + 1))
        resources = dict(defs.resources)
        # Staging as the sensor leaves it before the window: the snapshot's windows staged (the
        # reference rows every mart's dimensions must find), untimed.
        first = key_of(stack_started)
        if first < key:  # else the snapshot is in the window itself, and the first run stages it
            last = reporting_windows.get_partition_key_for_timestamp((window_of(key).start - WINDOW).timestamp())
            materialize(ASSETS, instance=DagsterInstance.ephemeral(), resources=resources, selection=WINDOWED,
                        tags={ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last})
            print(f"staged the windows {first}..{last} before it (the CRM's snapshot)")
        timings = []
        for run in range(1, args.runs + 1):
            with psycopg.connect(settings.hrdv_admin_dsn, autocommit=True) as conn:
                # Every run does the window's work again: the facts and the marts emptied (the
                # window's changes to reference rows are upserted again, as no-ops after run 1).
                tables = [f"staging.{name}" for name in ("interactions", "work_orders", "claims", "operator_states")]
                marts = [row[0] for row in conn.execute(
                    "SELECT 'mart.' || tablename FROM pg_tables WHERE schemaname = 'mart'")]
                conn.execute(f"TRUNCATE {', '.join(tables + marts)}")
            began = time.monotonic()
            result = materialize(ASSETS, partition_key=key, resources=resources,
                                 instance=DagsterInstance.ephemeral(),
                                 selection=[*WINDOWED, MART_KEY, *KPI_KEYS])
            timings.append(time.monotonic() - began)
            rows = {e.asset_key.path[-1]: e.materialization.metadata["dagster/row_count"].value
                    for e in result.get_asset_materialization_events()
                    if "dagster/row_count" in e.materialization.metadata
                    and e.materialization.metadata["dagster/row_count"].value}
            staging = next(e.materialization.metadata for e in result.get_asset_materialization_events()
                           if "run_duration_s" in e.materialization.metadata)
            kpi = next(e.materialization.metadata for e in result.get_asset_materialization_events()
                       if e.asset_key.path[-1] == "kpi_publications")
            kpi_rows = sum(v for k, v in rows.items() if k.startswith("kpi_"))
            print(f"run {run}: window {key}: {timings[-1]:.2f} s (staging: barrier {staging['run_barrier_s'].value} s, "
                  f"read {staging['run_read_s'].value} s, read + write {staging['run_duration_s'].value} s; "
                  f"KPI marts {kpi['run_duration_s'].value} s, {kpi_rows} rows, rules {kpi['timing_rules_s'].value} s)  "
                  f"rows {rows}  success={result.success}")
        print(f"median of {args.runs}: {statistics.median(timings):.2f} s for {args.changes} changes "
              f"(staging + mart of one window, in-process)")
    finally:
        stop_stack(settings)


if __name__ == "__main__":
    main()

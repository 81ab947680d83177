"""The window still open, on the real stack: the ingestor copies the buffer's newest changes into
provisional.<entity>, provisional_kpi_sensor's refresh computes the open window's marts with the
final marts' SQL, the live views show each window once, and the final publication replaces the
provisional rows. (A stopped ingestor failing the freshness check: test_sensor_stack.py.)

Uses the shared session `stack` (conftest): the live generator's rows stay in its CRM (the
end-to-end test, which compares the whole CRM with staging, runs before this file).
"""
from __future__ import annotations

import dataclasses
import threading
import time
from datetime import datetime, timedelta, timezone

import pandas as pd
import psycopg
import pytest
from dagster import AssetMaterialization, DagsterInstance, SkipReason
from open_window_steps import ENGINEERS_SQL, buffer_copied_after, sensor_tick
from recompute import backfill

from hrdv import catalog_sql, provisional
from hrdv.crm import live
from hrdv.crm.behaviour import Behaviour, scaled
from hrdv_assets.kpi import CATALOG
from partitions import WINDOW, key_of, reporting_windows, window_start
from sensors.open_window import provisional_kpi_sensor

pytestmark = pytest.mark.stack

KEYS = ["period_start", "indicator", "dimension_set"]


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _rows(settings, table: str, start: datetime, live: bool = False) -> pd.DataFrame:
    with psycopg.connect(settings.hrdv_dsn) as conn:
        frame = pd.read_sql_query(f"SELECT * FROM {table} WHERE period_start = %(s)s", conn, params={"s": start})
    return frame.drop(columns=[c for c in ("published_at",) if c in frame.columns])


def _received(settings, start: datetime) -> float:
    """Contacts received in window `start` at the total, as a reader of the live view sees it."""
    with psycopg.connect(settings.hrdv_dsn) as conn:
        row = conn.execute(f"SELECT value, provisional FROM {catalog_sql.live_view('interactions')} "
                           "WHERE period_start = %s AND indicator = 'contacts_received' AND dimension_set = 'total'",
                           [start]).fetchone()
    assert row is None or row[1], "a window still open was read as final"
    return row[0] if row else 0.0


def _refreshed(instance: DagsterInstance, timeout: float = 15) -> AssetMaterialization | SkipReason:
    """A tick of provisional_kpi_sensor that refreshed (a publication in flight makes it skip)."""
    deadline = time.monotonic() + timeout
    while True:
        result = sensor_tick(provisional_kpi_sensor, instance)
        if not isinstance(result, SkipReason):
            return result.asset_events[0]
        if time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def _wait_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - _now()).total_seconds()))


FIGURES = ["value", "numerator", "denominator", "rows"]


def assert_same_series(family: str, final: pd.DataFrame, provisional_rows: pd.DataFrame) -> None:
    """Every row of the final marts has its provisional twin with the same figures, and no more."""
    keys = [c for c in final.columns if c not in FIGURES]
    both = final.fillna({k: "\x01" for k in keys}).merge(
        provisional_rows.fillna({k: "\x01" for k in keys}), on=keys, how="outer",
        suffixes=("_final", "_provisional"), indicator=True)
    differ = both["_merge"] != "both"
    for figure in FIGURES:
        a, b = both[f"{figure}_final"], both[f"{figure}_provisional"]
        differ |= ~(((a - b).abs() <= 1e-6) | (a.isna() & b.isna()))
    assert not differ.any(), (f"{family}: {int(differ.sum())} of {len(both)} rows differ:\n"
                              f"{both[differ].head(12).to_string()}")


def test_the_open_window_moves_provisional_then_the_final_marts_replace_it(stack) -> None:
    settings = stack
    instance = DagsterInstance.ephemeral()
    with psycopg.connect(settings.crm_dsn) as conn:
        added = conn.execute(ENGINEERS_SQL).rowcount
        crm_started = conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0]
    # A window of its own: the generator writes from (nearly) its start to well before its end, so
    # nothing after the window changes its figures. Its reference rows must be staged before it (a
    # provisional value reads them from staging): not this window if it holds the engineers just
    # added or the CRM's first snapshot, nor if too little of it is left.
    window = window_start(_now())
    if added or crm_started >= window - WINDOW or window + WINDOW - _now() < WINDOW * 0.75:
        window += WINDOW
        _wait_until(window + timedelta(seconds=1))
    behaviour = dataclasses.replace(scaled(Behaviour(), 1 / 600), reference_change_share=0.0)
    writer = threading.Thread(target=live.run_live, kwargs=dict(
        dsn=settings.crm_dsn, rate=40, duration=(window + WINDOW * 0.8 - _now()).total_seconds(), seed=31,
        behaviour=behaviour, progress_every=600))
    writer.start()
    began = _now()
    # Two refreshes by the real sensor while the generator writes, whatever the backfill below takes.
    refreshes: list[tuple[AssetMaterialization | SkipReason, float]] = []

    def refresh_twice() -> None:
        ticks = DagsterInstance.ephemeral()  # the backfill's instance stays on its own thread
        for after in (10, 22):
            _wait_until(began + timedelta(seconds=after))
            refreshes.append((_refreshed(ticks), _received(settings, window)))

    refresher = threading.Thread(target=refresh_twice)
    refresher.start()
    # Meanwhile staging catches up to the window: its final marts read every earlier row.
    backfill(instance, key_of(reporting_windows.start), key_of(window - WINDOW), kpi=True)
    refresher.join()
    writer.join()
    for event, _ in refreshes:
        assert isinstance(event, AssetMaterialization), event
        assert event.metadata["open_window"].value == key_of(window), event.metadata
        assert event.metadata["staleness_seconds"].value <= 30, event.metadata
    seen = [received for _, received in refreshes]
    assert len(seen) == 2 and 0 < seen[0] < seen[1], f"the open window's contacts did not move: {seen}"

    # Closed, everything buffered, not yet published: the last refresh is complete.
    _wait_until(window + WINDOW + timedelta(seconds=1))
    buffer_copied_after(settings, window + WINDOW)
    done = provisional.refresh(psycopg.connect(settings.hrdv_dsn, autocommit=True), CATALOG, WINDOW,
                               first=reporting_windows.start)
    assert done is not None and window in done.windows
    last = {f: _rows(settings, catalog_sql.provisional_table(f), window) for f in CATALOG.families}
    assert len(last["interactions"]) > 0

    backfill(instance, key_of(window), key_of(window), kpi=True)
    for family, provisional_rows in last.items():
        final = _rows(settings, catalog_sql.table(family, "window"), window)
        assert _rows(settings, catalog_sql.provisional_table(family), window).empty, "provisional rows outlived the final"
        assert_same_series(family, final, provisional_rows)
        seen_live = _rows(settings, catalog_sql.live_view(family), window)
        assert not seen_live["provisional"].any() and len(seen_live) == len(final), "a window read twice"

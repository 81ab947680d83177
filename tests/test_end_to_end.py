"""CRM -> Debezium -> Kafka -> ClickHouse -> staging -> mart, on the real stack, sensor-driven.

While the generator writes interactions (with updates and deletes), the real Kafka-lag sensor is
ticked; each window it requests is materialised at once, as its run would be. Then:
- the windows were requested once each, only after they had closed;
- the windows no later change touched (staging reports those) equal the recomputation already;
- once the late-change sensor's runs are done, every mart row equals an independent pandas
  recomputation straight from the CRM tables, with no backfill: the sensor-driven path converges;
- one single-run backfill of all windows gives the same, and staging equals the CRM row for row;
- every series of the KPI catalog's window marts, published by those runs, equals the same
  marts computed from a copy of the CRM tables (bypassing Debezium, Kafka, ClickHouse and staging),
  and the KPI late-change sensor's recompute runs pass their rules.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import crm_mirror
import mart_compare
import pandas as pd
import psycopg
import pytest
from dagster import (
    DagsterInstance,
    build_sensor_context,
    materialize,
)
from recompute import (
    assert_same,
    assert_staging_equals,
    backfill,
    crm_rows,
    mart_rows,
    recompute_from_crm,
    resources,
)

from hrdv import generator
from hrdv import catalog_sql, marts
from hrdv.catalog import default as default_catalog
from hrdv.definitions import ASSETS, KPI_KEYS, WINDOWED, defs
from hrdv_assets.interactions import MART_KEY
from partitions import WINDOW, window_of
from resources.kafka import KafkaResource
from sensors.kafka_lag import run_windows
from sensors.late_changes import late_partition_keys

pytestmark = pytest.mark.stack


class SensorDriver:
    """Ticks the real sensor and runs what it requests, like the daemon would."""

    def __init__(self, settings, instance: DagsterInstance) -> None:
        self.settings = settings
        self.instance = instance
        self.sensor = defs.get_sensor_def("crm_kafka_lag_sensor")
        self.cursor: str | None = None
        self.requested: list[tuple[str, datetime]] = []  # (window, when requested)
        self.late_windows: set[str] = set()
        self.reasons: list[str] = []
        self.judged = 0  # rows the drift check compared with the CRM, over all runs

    def tick(self) -> list[str]:
        context = build_sensor_context(cursor=self.cursor, instance=self.instance,
                                       resources={"kafka": KafkaResource.of_stack(self.settings)})
        result = self.sensor(context)
        self.cursor = result.cursor
        if result.skip_reason:
            self.reasons.append(result.skip_reason.skip_message)
        now = datetime.now(timezone.utc)
        keys = []
        for request in result.run_requests or []:
            windows = run_windows({**request.tags, **({"dagster/partition": request.partition_key}
                                                      if request.partition_key else {})})
            self.requested += [(key, now) for key in windows]
            self.run(request)
            keys += windows
        return keys

    def settle_late_windows(self, sensor_name: str = "interactions_late_change_sensor",
                            job_name: str = "interaction_kpi_recompute",
                            op_name: str = "recompute_interaction_kpi") -> list[list[str]]:
        """Tick a late-change sensor and run what it requests until it requests nothing;
        returns the windows of each run."""
        sensor = defs.get_sensor_def(sensor_name)
        job = defs.get_job_def(job_name)
        cursor, runs = None, []
        while True:
            result = sensor(build_sensor_context(cursor=cursor, instance=self.instance))
            cursor = result.cursor or cursor
            if not result.run_requests:
                return runs
            for request in result.run_requests:
                assert job.execute_in_process(run_config=request.run_config, instance=self.instance,
                                              resources=resources(), tags=request.tags).success
                runs.append(request.run_config["ops"][op_name]["config"]["windows"])

    def run(self, request) -> None:
        result = materialize(
            ASSETS, partition_key=request.partition_key, instance=self.instance,
            resources=resources(), tags=request.tags,
            selection=[*WINDOWED, MART_KEY, *KPI_KEYS],
        )
        assert result.success
        checks = result.get_asset_check_evaluations()
        assert {c.check_name for c in checks} == {"dead_letters_within_threshold", "statuses_known",
                                                  "matches_source", "pandera_schema", "totals_match_staging",
                                                  *(rule.name for rule in marts.RULES)}
        assert all(c.passed for c in checks), [c for c in checks if not c.passed]
        self.judged += sum(c.metadata["judged"].value for c in checks if c.check_name == "matches_source")
        for event in result.get_asset_materialization_events():
            late = event.materialization.metadata.get("late_windows")
            if late is not None:
                self.late_windows.update(late.value)


def test_interactions_flow_into_the_mart(stack) -> None:
    settings = stack
    instance = DagsterInstance.ephemeral()
    driver = SensorDriver(settings, instance)

    driver.tick()  # the first heartbeat seen predates every generated change
    began = datetime.now(timezone.utc)
    writer = threading.Thread(
        target=generator.run, kwargs={"dsn": settings.crm_dsn, "rate": 75, "duration": 61, "seed": 7,
                                      "progress_every": 30}
    )
    writer.start()
    while writer.is_alive():
        driver.tick()
        time.sleep(3)
    writer.join()
    # A late change for certain (the generator's own deletes may all fall inside one range run
    # when the sensor is behind): the run's first interaction deleted now alters its window.
    with psycopg.connect(settings.crm_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM interactions WHERE id = (SELECT id FROM interactions "
                     "WHERE created_at >= %s ORDER BY created_at LIMIT 1)", [began])
    written_until = datetime.now(timezone.utc)

    # Every window holding a generated change closes and is requested, once.
    deadline = time.monotonic() + 240
    while not driver.requested or window_of(driver.requested[-1][0]).end < written_until:
        assert time.monotonic() < deadline, f"sensor stalled: {driver.reasons[-3:]}"
        driver.tick()
        time.sleep(2)
    keys = [key for key, _ in driver.requested]
    assert len(keys) == len(set(keys)), f"a window was requested twice: {keys}"
    assert all(window_of(key).end <= when for key, when in driver.requested), "requested before closing"
    assert len(keys) >= 2
    assert driver.judged > 0, "the drift check compared no row with the CRM"

    first = window_of(keys[0]).start.astimezone(timezone.utc)
    end = window_of(keys[-1]).end.astimezone(timezone.utc)
    expected = recompute_from_crm(settings, first, end)
    assert expected["opened"].sum() > 1000, "the generator wrote too little to be a test"

    # Windows that no later change touched are already exact after the sensor-driven runs.
    late = {pd.Timestamp(w) for w in driver.late_windows}
    untouched = ~expected["window_start"].isin(late)
    mart = mart_rows(settings, first, end)
    assert_same(mart[~mart["window_start"].isin(late)].reset_index(drop=True),
                expected[untouched].reset_index(drop=True))

    # The late-change sensor recomputes the windows later changes altered: then all are exact.
    # (The generator deletes open interactions, mostly from earlier windows: there are late ones.)
    assert late, "no late window: this run did not exercise the late-change path"
    recomputed = driver.settle_late_windows()
    assert recomputed, "the late-change sensor requested nothing"
    # Exactly the listed windows are recomputed, not the range between them.
    assert {key for run in recomputed for key in run} == set(late_partition_keys([list(driver.late_windows)]))
    assert_same(mart_rows(settings, first, end), expected)

    # A single-run backfill over all the windows gives the same.
    backfill(instance, keys[0], keys[-1], kpi=True)
    assert_same(mart_rows(settings, first, end), expected)
    with psycopg.connect(settings.crm_dsn) as conn:
        deleted = assert_staging_equals(settings, crm_rows(conn))
    assert deleted > 0, "the generator's deletes should be staged as flagged rows"

    # The KPI late-change sensor's runs recompute what it lists, rules passing; then every window
    # series of every KPI mart equals the marts computed from a copy of the CRM.
    driver.settle_late_windows("kpi_late_change_sensor", "kpi_marts_recompute", "recompute_kpi_marts")
    assert_kpi_marts_equal_the_crm_copy(settings, keys)


def assert_kpi_marts_equal_the_crm_copy(settings, keys: list[str]) -> None:
    starts = [window_of(key).start for key in keys]
    mirror = crm_mirror.create(settings, "kpi_e2e_mirror")
    crm_mirror.copy_crm(settings.crm_dsn, mirror)
    catalog = default_catalog()
    with psycopg.connect(mirror) as conn:
        conn.execute(catalog_sql.ddl(catalog))
        with conn.transaction():
            assert marts.publish(conn, catalog, starts, WINDOW).passed
    compared = 0
    for family in catalog.families.values():
        table = catalog_sql.table(family, "window")
        with psycopg.connect(settings.hrdv_dsn) as pipeline, psycopg.connect(mirror) as copy:
            got = mart_compare.rows_by_key(pipeline, table, "period_start = ANY (%s)", (starts,))
            expected = mart_compare.rows_by_key(copy, table, "period_start = ANY (%s)", (starts,))
        differences = mart_compare.differences(got, expected)
        assert not differences, (f"{table}: {len(got)} rows through the pipeline, {len(expected)} from the CRM "
                                 f"copy; " + "; ".join(differences))
        compared += len(got)
    assert compared > 1000, f"only {compared} KPI rows compared"
    print(f"\nKPI marts: {compared} window rows over {len(keys)} windows equal the CRM copy's")

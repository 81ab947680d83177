"""The Kafka-lag sensor on the real stack: nothing while ClickHouse lags, then the closed windows,
and again any window whose run died.

The ingestor is stopped, so the consumer group cannot reach the sensor's barrier: however many
windows close meanwhile, the sensor requests none of them (only windows complete before the stop)
and says how far behind the group is. Once the ingestor runs again, exactly the windows that
closed are requested, from the first partition on, each once while its run succeeds. Meanwhile
the open window's freshness check fails, naming the buffer as the stage behind, and passes again
once the ingestor is back. The runs
are simulated by recording what they would publish (materialisations of staging and mart) in
the sensor's instance; one window's "run" dies without publishing, and is requested again.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest
from dagster import AssetMaterialization, DagsterInstance, build_sensor_context
from open_window_steps import buffer_copied_after, freshness_verdict

from hrdv import generator
from hrdv.cli import _spawn_python
from hrdv.definitions import KPI_KEYS, WINDOWED, defs
from hrdv.stack import process
from hrdv_assets.interactions import MART_KEY
from partitions import WINDOW, key_of, reporting_windows, window_of
from resources.kafka import KafkaResource
from sensors.kafka_lag import run_windows

pytestmark = pytest.mark.stack


def test_sensor_waits_for_the_buffer_then_requests_each_closed_window(stack, monkeypatch) -> None:
    settings = stack
    monkeypatch.setenv("HRDV_PROVISIONAL_PROMISE_S", "8")  # the open window's promise, shortened
    kafka = KafkaResource.of_stack(settings)
    sensor = defs.get_sensor_def("crm_kafka_lag_sensor")
    instance = DagsterInstance.ephemeral()
    cursor: str | None = None
    dying: set[str] = set()  # windows whose next run dies before publishing

    def tick() -> tuple[list[str], object]:
        nonlocal cursor
        result = sensor(build_sensor_context(cursor=cursor, instance=instance, resources={"kafka": kafka}))
        cursor = result.cursor
        keys = []
        for request in result.run_requests or []:
            tags = {**request.tags, **({"dagster/partition": request.partition_key} if request.partition_key else {})}
            keys += run_windows(tags)
        for key in keys:  # the runs: each publishes its windows, unless it dies
            if key in dying:
                dying.discard(key)
                continue
            for asset_key in (*WINDOWED, MART_KEY, *KPI_KEYS):  # what the sensor's job materialises
                instance.report_runless_asset_event(AssetMaterialization(asset_key, partition=key))
        return keys, result.skip_reason

    requested: list[str] = []
    requested += tick()[0]  # first tick: sets a barrier, requests nothing yet
    stopped_at = datetime.now(timezone.utc)
    process.stop("ingestor", settings)
    try:
        started = datetime.now(timezone.utc)
        generator.run(settings.crm_dsn, rate=50, max_changes=200, seed=11, progress_every=1e9)
        # Until at least one window has closed since the ingestor stopped, only windows that were
        # complete in ClickHouse before the stop may be requested (older data in the topic).
        while datetime.now(timezone.utc) < window_of(key_of(started)).end + WINDOW / 6:
            keys, reason = tick()
            assert all(window_of(k).end <= stopped_at for k in keys), f"requested while the buffer lags: {keys}"
            requested += keys
            time.sleep(2)
        keys, reason = tick()
        assert keys == []
        assert "behind the barrier" in reason.skip_message and settings.topic("interactions") in reason.skip_message
        failed = freshness_verdict(instance)
        assert not failed.passed and "first stage behind: buffer" in failed.description, failed.description
    finally:
        _spawn_python(settings, "ingestor", ["hrdv.ingest"])
    buffer_copied_after(settings, datetime.now(timezone.utc))
    passed = freshness_verdict(instance)
    assert passed.passed, passed.description

    closed_by = datetime.now(timezone.utc)
    deadline = time.monotonic() + 90
    while not requested or window_of(requested[-1]).end < window_of(key_of(closed_by)).start:
        assert time.monotonic() < deadline, f"nothing requested after the ingestor came back: {reason}"
        keys, reason = tick()
        requested += keys
        time.sleep(2)
    assert len(requested) == len(set(requested))
    assert requested[0] == reporting_windows.get_first_partition_key()  # from the first partition on
    for earlier, later in zip(requested, requested[1:]):
        assert window_of(earlier).end == window_of(later).start, "a window was skipped"
    assert all(window_of(key).end <= datetime.now(timezone.utc) for key in requested)

    # The next window's run dies: the sensor requests it again on a later tick, then never again.
    died = key_of(window_of(requested[-1]).end)
    dying.add(died)
    again: list[str] = []
    deadline = time.monotonic() + 150
    while again.count(died) < 2:
        assert time.monotonic() < deadline, f"the window whose run died was not requested again: {reason}"
        keys, reason = tick()
        again += keys
        time.sleep(2)
    assert all(again.count(key) == 1 for key in again if key != died), again
    for _ in range(3):
        keys, _ = tick()
        assert not set(keys) & set(requested + again)
        time.sleep(1)

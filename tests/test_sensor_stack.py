"""The Kafka-lag sensor on the real stack: nothing while ClickHouse lags, then the closed windows.

The ingestor is stopped, so the consumer group cannot reach the sensor's barrier: however many
windows close meanwhile, the sensor requests none of them (only windows complete before the stop)
and says how far behind the group is. Once the ingestor runs again, exactly the windows that
closed are requested, each once, contiguous from the oldest change in the topic.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest
from dagster import DagsterInstance, build_sensor_context

from hrdv import generator
from hrdv.cli import _spawn_python
from hrdv.definitions import defs
from hrdv.stack import process
from partitions import WINDOW, window_of
from resources.kafka import KafkaResource

pytestmark = pytest.mark.stack


def test_sensor_waits_for_the_buffer_then_requests_each_closed_window_once(stack) -> None:
    settings = stack
    kafka = KafkaResource.of_stack(settings)
    sensor = defs.get_sensor_def("interactions_kafka_lag_sensor")
    instance = DagsterInstance.ephemeral()
    cursor: str | None = None

    def tick():
        nonlocal cursor
        result = sensor(build_sensor_context(cursor=cursor, instance=instance, resources={"kafka": kafka}))
        cursor = result.cursor
        return [r.partition_key for r in result.run_requests or []], result.skip_reason

    requested: list[str] = []
    requested += tick()[0]  # first tick: sets a barrier, requests nothing yet
    stopped_at = datetime.now(timezone.utc)
    process.stop("ingestor", settings)
    try:
        started = datetime.now(timezone.utc)
        generator.run(settings.crm_dsn, rate=50, max_changes=200, seed=11, progress_every=1e9)
        # Until at least one window has closed since the ingestor stopped, only windows that were
        # complete in ClickHouse before the stop may be requested (older data in the topic).
        while datetime.now(timezone.utc) < window_of_time(started).end + WINDOW / 6:
            keys, reason = tick()
            assert all(window_of(k).end <= stopped_at for k in keys), f"requested while the buffer lags: {keys}"
            requested += keys
            time.sleep(2)
        keys, reason = tick()
        assert keys == []
        assert "behind the barrier" in reason.skip_message and settings.topic("interactions") in reason.skip_message
    finally:
        _spawn_python(settings, "ingestor", ["hrdv.ingest"])

    closed_by = datetime.now(timezone.utc)
    deadline = time.monotonic() + 90
    while not requested or window_of(requested[-1]).end < window_of_time(closed_by).start:
        assert time.monotonic() < deadline, f"nothing requested after the ingestor came back: {reason}"
        keys, reason = tick()
        requested += keys
        time.sleep(2)
    assert len(requested) == len(set(requested))
    assert window_of(requested[0]).start <= started  # from the oldest change in the topic on
    for earlier, later in zip(requested, requested[1:]):
        assert window_of(earlier).end == window_of(later).start, "a window was skipped"
    assert all(window_of(key).end <= datetime.now(timezone.utc) for key in requested)
    for _ in range(3):  # and never again
        keys, _ = tick()
        assert not set(keys) & set(requested)
        time.sleep(1)


def window_of_time(moment: datetime):
    from partitions import reporting_windows

    return window_of(reporting_windows.get_partition_key_for_timestamp(moment.timestamp()))

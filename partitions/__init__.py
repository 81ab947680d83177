"""The reporting windows: one TimeWindowPartitionsDefinition for every asset of the platform.

Windows are 15 minutes of Moscow time (the reporting clock). HRDV_WINDOW_MINUTES shortens them
for tests and demos (it must divide 60); HRDV_PARTITIONS_START keeps the partition set small.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from dagster import TimeWindow, TimeWindowPartitionsDefinition

from hrdv.settings import load

REPORTING_TIMEZONE = "Europe/Moscow"
PARTITION_FORMAT = "%Y-%m-%d-%H:%M"

_settings = load()
WINDOW_MINUTES: int = _settings.window_minutes
WINDOW = timedelta(minutes=WINDOW_MINUTES)
# Origin for binning timestamps into windows (SQL date_bin): any whole hour works, since windows
# divide the hour and Moscow time has no daylight saving.
WINDOW_ORIGIN = datetime(2000, 1, 1, tzinfo=timezone.utc)

reporting_windows = TimeWindowPartitionsDefinition(
    cron_schedule="* * * * *" if WINDOW_MINUTES == 1 else f"*/{WINDOW_MINUTES} * * * *",
    start=_settings.partitions_start,
    timezone=REPORTING_TIMEZONE,
    fmt=PARTITION_FORMAT,
    end_offset=0,
)


def window_of(key: str) -> TimeWindow:
    """The time window of one partition key, e.g. '2026-11-24-12:15'."""
    return reporting_windows.time_window_for_partition_key(key)


def closed_windows_between(after: datetime, until: datetime) -> list[str]:
    """Keys of the windows that end after `after` and at or before `until` (both tz-aware)."""
    keys = reporting_windows.get_partition_keys_in_time_window(TimeWindow(after, until))
    return [key for key in keys if window_of(key).end <= until and window_of(key).end > after]

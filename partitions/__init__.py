"""The reporting windows: one TimeWindowPartitionsDefinition for every asset of the platform.

Windows are 15 minutes of Moscow time (the reporting clock). HRDV_WINDOW_MINUTES shortens them
for tests and demos (it must divide 60); HRDV_PARTITIONS_START keeps the partition set small.

`closed_window` is the one gate every route into the windowed assets passes (a sensor's run, the
UI's Materialize button, a backfill, GraphQL, the CLI): a key must name a real window that has
closed; otherwise it is refused with a message that says what is allowed.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

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


class WindowRefused(ValueError):
    """A partition key that is not a closed reporting window; the message says why and what is."""


def window_of(key: str) -> TimeWindow:
    """The time window of one partition key, e.g. '2026-11-24-12:15'."""
    return reporting_windows.time_window_for_partition_key(key)


def window_start(moment: datetime) -> datetime:
    """Start (UTC) of the window holding `moment` (tz-aware)."""
    return WINDOW_ORIGIN + ((moment - WINDOW_ORIGIN) // WINDOW) * WINDOW


def key_of(moment: datetime) -> str:
    """Partition key of the window holding `moment` (tz-aware), whether or not it is a partition."""
    local = window_start(moment).astimezone(ZoneInfo(REPORTING_TIMEZONE))
    return local.strftime(PARTITION_FORMAT)




def _moscow(moment: datetime) -> str:
    return moment.astimezone(ZoneInfo(REPORTING_TIMEZONE)).strftime("%Y-%m-%d %H:%M")


def _expected() -> str:
    minutes = ", ".join(f":{m:02d}" for m in range(0, 60, WINDOW_MINUTES)) if WINDOW_MINUTES >= 5 \
        else f"every {WINDOW_MINUTES} minute(s)"
    return (f"a key is the start of a {WINDOW_MINUTES}-minute window in Moscow time, written "
            f"YYYY-MM-DD-HH:MM ({minutes}), from {reporting_windows.start:%Y-%m-%d-%H:%M} on")


def closed_window(key: object, now: datetime | None = None) -> TimeWindow:
    """The window of `key` if it is a real reporting window that has closed by `now`.

    Raises WindowRefused for a malformed key, one off the window grid, one before the first
    partition, and a window still open or in the future.
    """
    now = now or datetime.now(timezone.utc)
    text = str(key)
    try:
        moment = datetime.strptime(text, PARTITION_FORMAT).replace(tzinfo=ZoneInfo(REPORTING_TIMEZONE))
    except ValueError:
        raise WindowRefused(f"partition key {text!r} is not a reporting window: {_expected()}, "
                            f"e.g. {key_of(now - WINDOW)!r}") from None
    if moment != window_start(moment):
        raise WindowRefused(f"partition key {text!r} is not a window boundary: {_expected()}; "
                            f"{_moscow(moment)} lies in window {key_of(moment)!r}")
    if moment < reporting_windows.start:
        raise WindowRefused(f"partition key {text!r} is before the first window "
                            f"{reporting_windows.start:%Y-%m-%d-%H:%M} (HRDV_PARTITIONS_START)")
    end = moment + WINDOW
    if end > now:
        state = "is still open" if moment <= now else "is in the future"
        raise WindowRefused(
            f"window {text!r} ({_moscow(moment)}-{end.astimezone(ZoneInfo(REPORTING_TIMEZONE)):%H:%M} "
            f"Moscow) {state}: it closes in {(end - now).total_seconds():.0f} s; only closed "
            f"windows are published, the newest is {key_of(now - WINDOW)!r}")
    return TimeWindow(moment, end)




def contiguous_ranges(keys: Iterable[str], max_len: int) -> Iterator[list[str]]:
    """Sorted keys cut into runs of adjacent windows, each at most max_len long."""
    current: list[str] = []
    for key in sorted(keys):
        adjacent = current and window_of(current[-1]).end == window_of(key).start
        if current and (not adjacent or len(current) >= max_len):
            yield current
            current = []
        current.append(key)
    if current:
        yield current

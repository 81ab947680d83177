"""What every windowed asset does first: find the windows a run asks for, whatever route launched
it, and refuse the run unless they are closed reporting windows; plus what they share after that
(retries of passing failures, per-window metadata)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime, timezone

from dagster import (
    AssetExecutionContext,
    AssetKey,
    Backoff,
    Config,
    Failure,
    MetadataValue,
    OpExecutionContext,
    PartitionKeyRange,
    RetryPolicy,
    TimeWindow,
)

from partitions import WindowRefused, closed_window, reporting_windows, window_of
from resources.kafka import GRACE, KafkaResource

# A window run fails for a passing reason (a connection dropped, the chDB path held too long):
# the step is tried again in the same run. A refusal (Failure with allow_retries=False) is not.
PASSING_FAILURES = RetryPolicy(max_retries=2, delay=10, backoff=Backoff.EXPONENTIAL)
# How long staging waits for the buffer to become complete for a window that has just closed
# (the barrier is normally met within a second or two of the heartbeat): HRDV_COMPLETE_WAIT_S.
DEFAULT_COMPLETE_WAIT_S = 45.0


def complete_wait_s() -> float:
    raw = os.environ.get("HRDV_COMPLETE_WAIT_S", str(DEFAULT_COMPLETE_WAIT_S))
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"HRDV_COMPLETE_WAIT_S must be a number of seconds, got {raw!r}") from None


def refuse(message: str) -> Failure:
    """A run that must not go on, with what was asked and what is allowed; never retried."""
    return Failure(description=message, allow_retries=False)


def requested_keys(context: AssetExecutionContext | OpExecutionContext) -> list[str]:
    """The partition keys of the run (one, or a range), each a closed reporting window.

    Read from the run's own range rather than trusted: the daemon, GraphQL and the UI launch
    keys that Dagster's launch-time check never saw (an off-grid key, a window still open).
    """
    try:
        asked = context.partition_key_range
    except Exception as error:  # noqa: BLE001 - Dagster's own message, made readable
        raise refuse(f"this run names no reporting window ({error}); run it for a partition "
                     "or a range of partitions") from None
    return closed_keys(asked)


def closed_keys(asked: PartitionKeyRange, now: datetime | None = None) -> list[str]:
    """The keys of a range whose both ends are closed windows; refuses otherwise."""
    try:
        first, last = closed_window(asked.start, now), closed_window(asked.end, now)
    except WindowRefused as refused:
        raise refuse(str(refused)) from None
    if first.start > last.start:
        raise refuse(f"partition range {asked.start!r}..{asked.end!r} is empty: its start is after its end")
    return reporting_windows.get_partition_keys_in_range(asked)


def unstaged_keys(context: AssetExecutionContext | OpExecutionContext, keys: Sequence[str],
                  staging_key: AssetKey) -> list[str]:
    """Keys whose staging has never been materialised: a mart of them would not be final."""
    staged = context.instance.get_materialized_partitions(staging_key)
    return [key for key in keys if key not in staged]


class RecomputeConfig(Config):
    """The windows whose marts later changes made stale: partition keys, in any order."""

    windows: list[str]


def keys_to_recompute(context: OpExecutionContext, config: RecomputeConfig, staging_key: AssetKey) -> list[str]:
    """A late-change recompute's windows: each must be a closed window, as on every other route;
    those staging has not reached yet are skipped (their own window run publishes them)."""
    keys = sorted(set(config.windows))
    for key in keys:
        closed_keys(PartitionKeyRange(key, key))
    unstaged = set(unstaged_keys(context, keys, staging_key))
    if unstaged:
        context.log.info(f"skipping {len(unstaged)} window(s) staging has not reached: {sorted(unstaged)[:10]}")
    return [key for key in keys if key not in unstaged]


def require_complete(kafka: KafkaResource, topics: list[str], last_key: str) -> str:
    """Refuses unless every change committed before the end of window last_key is in the
    ClickHouse buffer (the lag sensor's barrier); returns how far the buffer is complete."""
    end, wait_s = window_of(last_key).end, complete_wait_s()
    completeness = kafka.buffer_completeness(topics, until=end + GRACE, wait_s=wait_s)
    if completeness.complete_until is None or end > completeness.complete_until - GRACE:
        raise refuse(
            f"window {last_key!r} ends at {end.astimezone(timezone.utc):%H:%M:%S} UTC but "
            f"{completeness.describe()} (waited {wait_s:.0f} s): its changes may not all be "
            "in ClickHouse yet, so it is not published; the lag sensor requests it once they are")
    return completeness.complete_until.isoformat()


def window_text(window: TimeWindow) -> dict[str, MetadataValue]:
    return {"window_start": MetadataValue.text(window.start.isoformat()),
            "window_end": MetadataValue.text(window.end.isoformat())}


def now_utc() -> datetime:
    return datetime.now(timezone.utc)

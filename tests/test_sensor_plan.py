"""The lag sensor's decision, as a pure function of offsets and the heartbeat."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from partitions import WINDOW, reporting_windows
from resources.kafka import PartitionLag
from sensors.kafka_lag import GRACE, WindowCursor, plan_windows, stale_heartbeat_note

TOPIC = "crm.public.interactions"
T0 = datetime.now(timezone.utc).replace(hour=6, minute=0, second=0, microsecond=0)


def lag(committed: int, end: int = 0) -> list[PartitionLag]:
    return [PartitionLag(TOPIC, 0, end, committed)]


def key(start: datetime) -> str:
    return reporting_windows.get_partition_key_for_timestamp(start.timestamp())


def test_no_heartbeat_requests_nothing_and_says_why() -> None:
    plan = plan_windows(WindowCursor(), lag(-1), None, {})
    assert plan.windows == []
    assert "heartbeat" in plan.reason


def test_first_barrier_must_be_met_before_anything_is_requested() -> None:
    heartbeat = T0 + 2 * WINDOW + timedelta(seconds=5)
    plan = plan_windows(WindowCursor(), lag(90, 100), heartbeat, {f"{TOPIC}[0]": 100})
    assert plan.windows == []
    assert f"{TOPIC}[0] 10" in plan.reason  # the lag behind the barrier is in the skip reason
    # Still behind: nothing, and the barrier is kept (not replaced by a newer one).
    later = heartbeat + timedelta(seconds=30)
    plan = plan_windows(plan.cursor, lag(99, 200), later, {f"{TOPIC}[0]": 200})
    assert plan.windows == [] and plan.cursor.barrier_heartbeat == heartbeat.isoformat()


def test_closed_windows_are_requested_once_each() -> None:
    start = T0 + timedelta(seconds=10)  # the first heartbeat falls in window T0
    plan = plan_windows(WindowCursor(), lag(100, 100), start, {f"{TOPIC}[0]": 100})
    assert plan.windows == []  # barrier set, not yet proven
    end_of_third = T0 + 3 * WINDOW
    plan = plan_windows(plan.cursor, lag(100, 150), end_of_third + GRACE, {f"{TOPIC}[0]": 150})
    assert plan.windows == []  # frontier = first heartbeat, inside window T0
    plan = plan_windows(plan.cursor, lag(150, 150), end_of_third + GRACE + timedelta(seconds=1), {f"{TOPIC}[0]": 150})
    assert plan.windows == [key(T0), key(T0 + WINDOW), key(T0 + 2 * WINDOW)]
    again = plan_windows(plan.cursor, lag(150, 150), end_of_third + 2 * GRACE, {f"{TOPIC}[0]": 150})
    assert again.windows == []
    assert "next window ends" in again.reason


def test_window_waits_for_grace_after_its_end() -> None:
    cursor = WindowCursor(requested_until=T0.isoformat(), frontier=(T0 + WINDOW).isoformat())
    plan = plan_windows(cursor, lag(0), T0 + WINDOW, {})
    assert plan.windows == []  # heartbeat exactly at the end is not enough: grace
    cursor = WindowCursor(requested_until=T0.isoformat(), frontier=(T0 + WINDOW + GRACE).isoformat())
    assert plan_windows(cursor, lag(0), None, {}).windows == [key(T0)]


def test_cursor_round_trips() -> None:
    cursor = WindowCursor(requested_until=T0.isoformat(), barrier_offsets={"t[0]": 5})
    assert WindowCursor.parse(cursor.dump()) == cursor


def test_the_first_window_is_that_of_the_oldest_change_in_the_topics() -> None:
    snapshot = T0 - 2 * WINDOW + timedelta(seconds=3)  # taken before Dagster started
    plan = plan_windows(WindowCursor(), lag(100, 100), T0 + timedelta(seconds=5), {f"{TOPIC}[0]": 100},
                        earliest=snapshot)
    assert plan.cursor.requested_until == (T0 - 2 * WINDOW).isoformat()
    # The barrier of the first tick (heartbeat T0 + 5 s) is met: complete up to T0 + 4 s.
    plan = plan_windows(plan.cursor, lag(100, 100), T0 + WINDOW + 2 * GRACE, {f"{TOPIC}[0]": 100})
    assert plan.windows == [key(T0 - 2 * WINDOW), key(T0 - WINDOW)]


def test_the_first_window_is_never_before_the_first_partition() -> None:
    ancient = reporting_windows.start - timedelta(days=30)
    plan = plan_windows(WindowCursor(), lag(0), T0, {}, earliest=ancient)
    assert plan.cursor.requested_until == reporting_windows.start.astimezone(timezone.utc).isoformat()


def test_a_stale_heartbeat_is_called_out() -> None:
    assert stale_heartbeat_note(T0, T0 + timedelta(seconds=5)) == ""
    assert stale_heartbeat_note(None, T0) == ""
    note = stale_heartbeat_note(T0, T0 + timedelta(minutes=3))
    assert "180 s old" in note and "replication slot" in note

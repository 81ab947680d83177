"""The lag sensor's decision, as a pure function of offsets, the heartbeat and what is published."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from partitions import WINDOW, key_of, reporting_windows
from resources.kafka import PartitionLag
from sensors.kafka_lag import (
    GRACE,
    MAX_ATTEMPTS,
    WindowCursor,
    plan_windows,
    run_windows,
    stale_heartbeat_note,
    window_request,
)

TOPIC = "crm.public.interactions"
# Half an hour of windows after the first partition (conftest: it starts one to two hours ago).
T0 = reporting_windows.start.astimezone(timezone.utc) + timedelta(minutes=30)
ALL_BEFORE_T0 = set(reporting_windows.get_partition_keys(current_time=T0))


def lag(committed: int, end: int = 0) -> list[PartitionLag]:
    return [PartitionLag(TOPIC, 0, end, committed)]


def proven(frontier: datetime) -> WindowCursor:
    return WindowCursor(frontier=frontier.isoformat())


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


def test_complete_unpublished_windows_are_requested_as_one_range() -> None:
    start = T0 + timedelta(seconds=10)  # the first heartbeat falls in window T0
    plan = plan_windows(WindowCursor(), lag(100, 100), start, {f"{TOPIC}[0]": 100}, ALL_BEFORE_T0)
    assert plan.windows == []  # barrier set, not yet proven
    end_of_third = T0 + 3 * WINDOW
    plan = plan_windows(plan.cursor, lag(100, 150), end_of_third + GRACE, {f"{TOPIC}[0]": 150}, ALL_BEFORE_T0)
    assert plan.windows == []  # frontier = first heartbeat, inside window T0
    plan = plan_windows(plan.cursor, lag(150, 150), end_of_third + GRACE + timedelta(seconds=1),
                        {f"{TOPIC}[0]": 150}, ALL_BEFORE_T0)
    assert plan.ranges == [[key_of(T0), key_of(T0 + WINDOW), key_of(T0 + 2 * WINDOW)]]


def test_published_and_running_windows_are_not_requested_again() -> None:
    cursor = proven(T0 + 3 * WINDOW + GRACE)
    published = ALL_BEFORE_T0 | {key_of(T0)}
    plan = plan_windows(cursor, lag(0), None, {}, published, in_flight={key_of(T0 + WINDOW)})
    assert plan.ranges == [[key_of(T0 + 2 * WINDOW)]]
    done = plan_windows(plan.cursor, lag(0), None, {}, published | set(plan.windows),
                        in_flight={key_of(T0 + WINDOW)})
    assert done.windows == [] and "1 in runs not yet finished" in done.reason


def test_a_window_whose_run_died_is_requested_again_then_reported() -> None:
    cursor = proven(T0 + WINDOW + GRACE)
    attempts = []
    for _ in range(MAX_ATTEMPTS + 2):  # its runs keep dying: never published, nothing in flight
        plan = plan_windows(cursor, lag(0), None, {}, ALL_BEFORE_T0)
        attempts.append(plan.windows)
        cursor = plan.cursor
    assert attempts == [[key_of(T0)]] * MAX_ATTEMPTS + [[], []]
    assert plan.exhausted == [key_of(T0)] and f"failed {MAX_ATTEMPTS} times" in plan.reason
    # Once someone publishes it, it is forgotten.
    assert plan_windows(cursor, lag(0), None, {}, ALL_BEFORE_T0 | {key_of(T0)}).cursor.attempts == {}


def test_windows_apart_make_separate_ranges() -> None:
    cursor = proven(T0 + 4 * WINDOW + GRACE)
    published = ALL_BEFORE_T0 | {key_of(T0 + WINDOW)}
    plan = plan_windows(cursor, lag(0), None, {}, published)
    assert plan.ranges == [[key_of(T0)], [key_of(T0 + 2 * WINDOW), key_of(T0 + 3 * WINDOW)]]


def test_window_waits_for_grace_after_its_end() -> None:
    assert plan_windows(proven(T0 + WINDOW), lag(0), None, {}, ALL_BEFORE_T0).windows == []
    assert plan_windows(proven(T0 + WINDOW + GRACE), lag(0), None, {}, ALL_BEFORE_T0).windows == [key_of(T0)]


def test_the_first_request_starts_at_the_first_partition() -> None:
    plan = plan_windows(proven(T0 + GRACE), lag(0), None, {})
    assert plan.windows[0] == reporting_windows.get_first_partition_key()


def test_cursor_round_trips_and_reads_an_older_version() -> None:
    cursor = WindowCursor(frontier=T0.isoformat(), barrier_offsets={"t[0]": 5}, attempts={"k": 1})
    assert WindowCursor.parse(cursor.dump()) == cursor
    assert WindowCursor.parse('{"requested_until": "x", "frontier": null}') == WindowCursor()


def test_requests_carry_their_windows() -> None:
    one = window_request([key_of(T0)], attempt=1)
    assert one.partition_key == key_of(T0) and run_windows(one.tags | {"dagster/partition": key_of(T0)}) == [key_of(T0)]
    keys = [key_of(T0), key_of(T0 + WINDOW)]
    many = window_request(keys, attempt=2)
    assert run_windows(many.tags) == keys and many.run_key.endswith("#2")
    assert run_windows({"dagster/partition": "2027-01-01-00:00"}) == []  # a future key covers nothing


def test_a_stale_heartbeat_is_called_out() -> None:
    assert stale_heartbeat_note(T0, T0 + timedelta(seconds=5)) == ""
    assert stale_heartbeat_note(None, T0) == ""
    note = stale_heartbeat_note(T0, T0 + timedelta(minutes=3))
    assert "180 s old" in note and "replication slot" in note

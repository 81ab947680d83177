"""The gate every route passes: only closed reporting windows, refused with a message otherwise."""
from __future__ import annotations

from datetime import datetime, timezone

import os
import subprocess
import sys

import pytest
from dagster import Failure, PartitionKeyRange

from hrdv.settings import REPO_ROOT
from hrdv_assets.windows import closed_keys
from partitions import WINDOW, WindowRefused, closed_window, contiguous_ranges, key_of, reporting_windows, window_of

NOW = datetime.now(timezone.utc)
CLOSED = key_of(NOW - 2 * WINDOW)


def test_a_closed_window_passes() -> None:
    assert closed_window(CLOSED, NOW) == window_of(CLOSED)


@pytest.mark.parametrize("key, words", [
    ("garbage", ["is not a reporting window", "YYYY-MM-DD-HH:MM"]),
    ("2026-11-26 11:00", ["is not a reporting window"]),
    ("2027-01-01-00:00", ["is in the future", "only closed windows are published"]),
    (key_of(NOW), ["is still open", "closes in"]),
    ("2001-01-01-00:00", ["is before the first window", "HRDV_PARTITIONS_START"]),
])
def test_what_is_refused_and_why(key: str, words: list[str]) -> None:
    with pytest.raises(WindowRefused) as refused:
        closed_window(key, NOW)
    assert all(word in str(refused.value) for word in words), str(refused.value)


def test_an_off_grid_key_names_its_window() -> None:
    # The suite's windows are 1 minute long (no minute is off the grid): 15-minute ones, as in
    # production, in a process of their own.
    code = ("from partitions import WindowRefused, closed_window\n"
            "try:\n    closed_window('2026-11-26-11:07')\nexcept WindowRefused as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "HRDV_WINDOW_MINUTES": "15"}, cwd=REPO_ROOT).stdout
    assert "'2026-11-26-11:07' is not a window boundary" in out
    assert "(:00, :15, :30, :45)" in out and "lies in window '2026-11-26-11:00'" in out


def test_a_range_is_refused_whole_as_a_dagster_failure_that_is_not_retried() -> None:
    with pytest.raises(Failure) as refused:
        closed_keys(PartitionKeyRange(CLOSED, key_of(NOW)), NOW)
    assert refused.value.allow_retries is False and "still open" in refused.value.description
    with pytest.raises(Failure, match="is empty"):
        closed_keys(PartitionKeyRange(CLOSED, key_of(NOW - 3 * WINDOW)), NOW)
    first = key_of(NOW - 4 * WINDOW)
    assert closed_keys(PartitionKeyRange(first, CLOSED), NOW) == \
        reporting_windows.get_partition_keys_in_range(PartitionKeyRange(first, CLOSED))


def test_contiguous_ranges() -> None:
    keys = [key_of(NOW - n * WINDOW) for n in (9, 8, 7, 5, 4)]
    assert list(contiguous_ranges(reversed(keys), 10)) == [keys[:3], keys[3:]]
    assert list(contiguous_ranges(keys, 2)) == [keys[:2], keys[2:3], keys[3:]]


def test_what_an_unproven_buffer_says() -> None:
    from resources.kafka import Completeness

    moment = datetime(2026, 11, 26, 8, 30, 5, tzinfo=timezone.utc)
    assert Completeness(moment, {}, moment).describe() == \
        "the ClickHouse buffer is complete up to 2026-11-26 08:30:05 UTC"
    assert "behind the Kafka topics by t[0] 12" in Completeness(None, {"t[0]": 12}, moment).describe()
    assert "newest: 08:30:05 UTC): is capture running?" in Completeness(None, {}, moment).describe()

"""The late-change sensor's pure parts: which windows, and one range run for them."""
from __future__ import annotations

from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from partitions import WINDOW, reporting_windows, window_of
from sensors.late_changes import late_partition_keys, range_request


def test_listed_windows_become_sorted_unique_existing_partition_keys() -> None:
    keys = reporting_windows.get_partition_keys()[-3:]
    starts = [window_of(key).start.isoformat() for key in keys]
    listed = [[starts[2], starts[0]], [starts[0]], ["2001-01-01T00:00:00+00:00"]]
    assert late_partition_keys(listed) == [keys[0], keys[2]]
    future = (window_of(keys[-1]).start + 10 * WINDOW).isoformat()
    assert late_partition_keys([[future]]) == []  # not a partition yet


def test_one_range_run_covers_the_windows() -> None:
    request = range_request(["2026-11-24-12:00", "2026-11-24-12:45"], cursor="42")
    assert request.tags[ASSET_PARTITION_RANGE_START_TAG] == "2026-11-24-12:00"
    assert request.tags[ASSET_PARTITION_RANGE_END_TAG] == "2026-11-24-12:45"
    assert request.run_key == "late:2026-11-24-12:00:2026-11-24-12:45:42"

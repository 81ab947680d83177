"""The late-change sensor's pure parts: which windows, and one run for exactly those."""
from __future__ import annotations

from partitions import WINDOW, reporting_windows, window_of
from sensors.late_changes import late_partition_keys, recompute_request


def test_listed_windows_become_sorted_unique_existing_partition_keys() -> None:
    keys = reporting_windows.get_partition_keys()[-3:]
    starts = [window_of(key).start.isoformat() for key in keys]
    listed = [[starts[2], starts[0]], [starts[0]], ["2001-01-01T00:00:00+00:00"]]
    assert late_partition_keys(listed) == [keys[0], keys[2]]
    future = (window_of(keys[-1]).start + 10 * WINDOW).isoformat()
    assert late_partition_keys([[future]]) == []  # not a partition yet


def test_windows_far_apart_are_recomputed_alone_in_one_run() -> None:
    request = recompute_request(["2026-11-23-12:00", "2026-11-24-12:45"], "recompute_x", cursor="42")
    assert request.run_config == {"ops": {"recompute_x": {"config": {"windows": [
        "2026-11-23-12:00", "2026-11-24-12:45"]}}}}
    assert request.tags["hrdv/late_windows"] == "2"
    assert request.run_key == "late:42"

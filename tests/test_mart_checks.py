"""The mart's Pandera check on frames shaped as psycopg returns them, window by window."""
from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd

from hrdv_assets.interactions import _pandera_check, _schema_failures
from partitions import WINDOW, key_of

COLUMNS = ["window_start", "window_end", "channel_code", "region_code", "opened", "closed",
           "avg_resolution_s", "p90_resolution_s", "first_contact_resolution_share", "published_at"]
START = datetime(2026, 11, 24, 9, 0, tzinfo=timezone.utc)


def row(**overrides) -> dict:
    values = dict(window_start=START, window_end=START + WINDOW, channel_code="call",
                  region_code="RU-MOW", opened=3, closed=2, avg_resolution_s=120.0,
                  p90_resolution_s=200.0, first_contact_resolution_share=0.5,
                  published_at=datetime.now(timezone.utc))
    return values | overrides


def frame(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=COLUMNS)


def check(rows: pd.DataFrame, of: pd.DataFrame | None = None, key: str = key_of(START)):
    """The check of window `key` for its `rows`, within the run's whole frame `of`."""
    whole = rows if of is None else of
    return _pandera_check(key, rows, _schema_failures(whole))


def test_a_quiet_window_passes() -> None:
    assert check(frame()).passed


def test_a_window_where_nothing_closed_passes() -> None:
    quiet = row(closed=0, avg_resolution_s=None, p90_resolution_s=None, first_contact_resolution_share=None)
    assert check(frame(quiet)).passed


def test_good_rows_pass_and_bad_rows_fail_with_their_cases() -> None:
    assert check(frame(row(), row(channel_code="chat"))).passed
    for bad in (row(opened=-1), row(first_contact_resolution_share=1.5), row(opened=0, closed=0),
                row(window_end=START + 2 * WINDOW), row(closed=0)):
        result = check(frame(bad))
        assert not result.passed and result.metadata["failures"].value >= 1, bad
    assert not check(frame(row(), row())).passed  # duplicate key


def test_a_bad_row_fails_only_its_own_window() -> None:
    later = START + WINDOW
    whole = frame(row(), row(window_start=later, window_end=later + WINDOW, opened=-1))
    first, second = whole.iloc[:1], whole.iloc[1:]
    assert check(first, whole, key_of(START)).passed
    failed = check(second, whole, key_of(later))
    assert not failed.passed and failed.partition == key_of(later)

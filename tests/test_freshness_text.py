"""What the closed-window freshness check says when a window is late: the first stage holding it back
(pure: no services)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hrdv.provisional import STAGES, Stage
from hrdv_assets.open_window import why_unpublished

NOW = datetime(2026, 11, 27, 7, 0, 20, tzinfo=timezone.utc)
DUE_END = datetime(2026, 11, 27, 7, 0, tzinfo=timezone.utc)


def _found(**newest: datetime | None) -> dict[str, Stage]:
    fresh = NOW - timedelta(seconds=1)
    return {name: Stage(name, newest.get(name, fresh), None, NOW) for name in STAGES}


def test_nothing_staged_yet_is_said_so_instead_of_failing() -> None:
    assert why_unpublished(_found(staging=None), 30, DUE_END) == "; first stage behind: staging (nothing staged yet)"


def test_staging_behind_names_how_far_it_got() -> None:
    text = why_unpublished(_found(staging=DUE_END - timedelta(minutes=15)), 30, DUE_END)
    assert text == "; first stage behind: staging (staged until 06:45:00 UTC)"


def test_upstream_first_then_the_marts_run() -> None:
    assert why_unpublished(_found(buffer=NOW - timedelta(seconds=95)), 30, DUE_END).startswith(
        "; first stage behind: buffer")
    assert why_unpublished(_found(staging=DUE_END), 30, DUE_END) == \
        "; staged, not yet published: the marts' run is late or failed"

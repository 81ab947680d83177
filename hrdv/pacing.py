"""Pacing of a CRM writer (the simple generator, the live and replay modes): how many changes are
due now at a steady rate, when to stop, and when to print progress."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class Pace:
    """A run of `rate` changes per second, ending after `duration` seconds, `max_changes`
    changes or when `stop` is set (whichever comes first; None: no such limit). A writer that
    paces itself (replay follows a simulated clock) leaves rate None and uses only the limits."""

    rate: float | None = None
    duration: float | None = None
    max_changes: int | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)
    _reported: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"rate must be positive (changes per second), got {self.rate}")

    def begin(self) -> None:
        """Start the clock now: after a slow preparation, no backlog of due changes."""
        self.started = self._reported = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def done(self, changes: int) -> bool:
        return (self.stop.is_set()
                or (self.duration is not None and self.elapsed() >= self.duration)
                or (self.max_changes is not None and changes >= self.max_changes))

    def due(self, changes: int, per_transaction: int) -> int:
        """Changes to write now, at most per_transaction; 0: call nap() first."""
        assert self.rate is not None, "due() needs a rate"
        batch = min(int(self.elapsed() * self.rate) + 1 - changes, per_transaction)
        if self.max_changes is not None:
            batch = min(batch, self.max_changes - changes)
        return max(batch, 0)

    def nap(self) -> None:
        """Sleep a little while nothing is due."""
        time.sleep(min(0.05, 1 / self.rate) if self.rate else 0.05)

    def report_due(self, every: float) -> bool:
        """True at most once every `every` seconds: time for a progress line."""
        if time.monotonic() - self._reported < every:
            return False
        self._reported = time.monotonic()
        return True

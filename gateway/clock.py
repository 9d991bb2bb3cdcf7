"""The one owner of time: everything that needs `now` gets it from a `Clock`.

The SIP core and the media timers never read a clock themselves; drivers pass `clock.now()`
in. Tests use `FakeClock` and step it by hand, so no test sleeps through a protocol timer.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds."""
        ...


class MonotonicClock:
    """Real time: `time.monotonic()`, the same base asyncio's default loop uses."""

    def now(self) -> float:
        return time.monotonic()


class FakeClock:
    """Hand-stepped time for deterministic tests."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        self._now += seconds
        return self._now

    def set(self, now: float) -> None:
        if now < self._now:
            raise ValueError("time does not go backwards")
        self._now = now

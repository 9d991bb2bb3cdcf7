"""An asyncio loop on virtual time: sleeps complete instantly, in order, with exact times.

`loop.time()` returns a virtual clock; whenever the loop would block waiting for its next
timer, the clock jumps to that timer instead. Real sockets still work (we poll them first),
so RTP over loopback is timestamped in virtual time. Used to run 30 s of paced audio in well
under a second of wall time, deterministically.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def virtual_time_loop(start: float = 1000.0) -> asyncio.AbstractEventLoop:
    loop = asyncio.SelectorEventLoop()
    now = [start]
    selector: selectors.BaseSelector = loop._selector  # type: ignore[attr-defined]
    real_select = selector.select

    def select(timeout: float | None = None) -> list[Any]:
        ready = real_select(0)
        if ready or timeout is None or timeout <= 0:
            return ready if ready or timeout is not None else real_select(timeout)
        now[0] += timeout
        return []

    selector.select = select  # type: ignore[method-assign]
    loop.time = lambda: now[0]  # type: ignore[method-assign]
    return loop


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion on a fresh virtual-time loop, then close the loop."""
    loop = virtual_time_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def millisecond_timers(loop: asyncio.AbstractEventLoop, limit: int = 200_000) -> list[int]:
    """Make `loop.call_later` keep time as libuv (uvloop) does: the loop's now truncated to
    whole milliseconds plus the delay rounded to whole milliseconds, so a timer can fire up to
    a millisecond early. Returns a one-item list counting the timers armed; past `limit` it
    raises instead of letting a callback that re-arms for the rest of a millisecond spin the
    loop forever (virtual time does not advance while timers are due)."""
    armed = [0]
    call_at = loop.call_at

    def call_later(delay: float, callback: Any, *args: Any, context: Any = None) -> Any:
        armed[0] += 1
        if armed[0] > limit:
            raise RuntimeError("timers re-armed without end: a callback spins the loop")
        when = int(loop.time() * 1000) / 1000 + round(max(0.0, delay) * 1000) / 1000
        return call_at(when, callback, *args, context=context)

    loop.call_later = call_later  # type: ignore[method-assign]
    return armed

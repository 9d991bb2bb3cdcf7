"""An asyncio loop on virtual time: sleeps complete instantly, in order, with exact times.

`loop.time()` returns a virtual clock; whenever the loop would block waiting for its next
timer, the clock jumps to that timer instead. Real sockets still work (we poll them first),
so RTP over loopback is timestamped in virtual time. Used to run 30 s of paced audio in well
under a second of wall time, deterministically.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any


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

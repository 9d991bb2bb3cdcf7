"""Give the heap memory that calls freed back to the OS when the worker goes idle.

Why: glibc's malloc keeps pages a burst of calls freed (codec states, numpy buffers, aiortc's
objects) mapped for reuse, so a worker that carried a peak and is now idle still reports the
peak's RSS — an operator cannot tell that from a leak, and a host running several workers
cannot reuse the memory. A full garbage collection frees the ended calls' objects that sit in
reference cycles, then `malloc_trim(0)` returns the pages. It walks the heap (a few
milliseconds), so it runs only while the worker has no call, never while audio flows, and at
most once per `MIN_INTERVAL_S` (an idle moment sooner than that is trimmed when the interval
is up, if the worker is still idle). Where the C library has no `malloc_trim` (musl, macOS)
it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
from collections.abc import Callable

MIN_INTERVAL_S = 30.0


def _load() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


class HeapTrimmer:
    """`idle()` when the worker's last call has ended; `is_idle()` says whether it still is."""

    def __init__(self, is_idle: Callable[[], bool],
                 trim: Callable[[int], int] | None = None) -> None:
        self._is_idle = is_idle
        self._trim = trim if trim is not None else _load()
        self._last: float | None = None
        self._pending: asyncio.TimerHandle | None = None
        self.trims = 0

    def idle(self) -> None:
        if self._trim is None or self._pending is not None:
            return
        loop = asyncio.get_running_loop()
        wait = 0.0 if self._last is None else self._last + MIN_INTERVAL_S - loop.time()
        if wait <= 0:
            self._run()
        else:
            self._pending = loop.call_later(wait, self._run)

    def _run(self) -> None:
        self._pending = None
        if self._trim is None or not self._is_idle():
            return  # a call came in meanwhile: its end will ask again
        self._last = asyncio.get_running_loop().time()
        # The calls' objects that sit in reference cycles wait for a full collection, which
        # the interpreter runs rarely (the start-up heap is frozen, gc.freeze in app.py, so
        # it costs a few ms here): collect them first, so their pages can be returned too.
        gc.collect()
        self._trim(0)
        self.trims += 1

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

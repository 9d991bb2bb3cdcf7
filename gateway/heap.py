"""Give the memory that calls used back: their objects at once, the heap's pages when idle.

Why collect after every call: a call's aiortc objects (peer connection, transports, SCTP,
DTLS, the pyee listeners between them) sit in reference cycles, about 1,600 objects a call,
which only a full garbage collection frees. The interpreter runs one rarely (the start-up heap
is frozen, gc.freeze in app.py), so on a busy worker dead calls piled up, the interpreter's
1 MiB object arenas grew to hold them, and arenas are returned to the OS only when entirely
empty, which the long-lived objects allocated meanwhile prevent. Measured with
`bench/soak.py --calls 305 --settle 35` (4 calls at a time): RSS with calls in flight
139 → 122 MB, and idle after the calls +10.0 % → +2.5 % over the idle baseline. So
`call_ended()` runs a full collection `COLLECT_DELAY_S` after a call ends (once for calls that
end together), when its task has let go of it. It stops the loop for the time it takes:
1-6 ms with 0-20 calls in flight and nothing to free, about 2 ms more per ended call freed
(37-44 ms when 20 calls ended at once), the same freeing an automatic collection would do later
in one longer pause.

Why trim when idle: glibc's malloc keeps pages a burst of calls freed (codec states, numpy
buffers) mapped for reuse, so a worker that carried a peak and is now idle still reports the
peak's RSS — an operator cannot tell that from a leak, and a host running several workers
cannot reuse the memory. `malloc_trim(0)` returns the pages. It walks the heap (a few
milliseconds), so it runs only while the worker has no call, never while audio flows, and at
most once per `MIN_INTERVAL_S` (an idle moment sooner than that is trimmed when the interval
is up, if the worker is still idle). Where the C library has no `malloc_trim` (musl, macOS)
only the collection runs.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
from collections.abc import Callable

COLLECT_DELAY_S = 0.5
MIN_INTERVAL_S = 30.0


def _load() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


class HeapTrimmer:
    """`call_ended()` after each call; `is_idle()` says whether the worker has no call."""

    def __init__(self, is_idle: Callable[[], bool],
                 trim: Callable[[int], int] | None = None,
                 collect: Callable[[], int] = gc.collect) -> None:
        self._is_idle = is_idle
        self._trim = trim if trim is not None else _load()
        self._collect = collect
        self._collecting: asyncio.TimerHandle | None = None
        self._trimming: asyncio.TimerHandle | None = None
        self._last_trim: float | None = None
        self.collections = 0
        self.trims = 0

    def call_ended(self) -> None:
        if self._collecting is None:
            self._collecting = asyncio.get_running_loop().call_later(COLLECT_DELAY_S,
                                                                     self._collect_now)

    def _collect_now(self) -> None:
        self._collecting = None
        self._collect()
        self.collections += 1
        if self._is_idle():
            self._trim_when_due()

    def _trim_when_due(self) -> None:
        if self._trim is None or self._trimming is not None:
            return
        loop = asyncio.get_running_loop()
        wait = 0.0 if self._last_trim is None else self._last_trim + MIN_INTERVAL_S - loop.time()
        if wait <= 0:
            self._trim_now()
        else:
            self._trimming = loop.call_later(wait, self._trim_now)

    def _trim_now(self) -> None:
        self._trimming = None
        if self._trim is None or not self._is_idle():
            return  # a call came in meanwhile: its end will ask again
        self._last_trim = asyncio.get_running_loop().time()
        self._trim(0)
        self.trims += 1

    def close(self) -> None:
        for handle in (self._collecting, self._trimming):
            if handle is not None:
                handle.cancel()
        self._collecting = self._trimming = None

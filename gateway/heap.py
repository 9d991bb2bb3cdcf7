"""Give the memory that calls used back: their objects soon after they end, the heap's pages
when the worker is idle.

Why collect after calls: a call's aiortc objects (peer connection, transports, SCTP, DTLS, the
pyee listeners between them) and ours sit in reference cycles, about 600 objects a call, which
only a full garbage collection frees. The interpreter runs one rarely (the start-up heap is
frozen, gc.freeze in app.py), so dead calls piled up between them, the interpreter's 1 MiB
object arenas grew to hold them, and an arena goes back to the OS only when entirely empty,
which the long-lived objects allocated meanwhile prevent. Measured with `bench/soak.py
--calls 305 --settle 35` (4 calls at a time): RSS with calls in flight 139 → 122 MB, idle
after the calls +10.0 % → +2.5 %.

Why not after every call: a collection stops the loop while it walks every object the live
calls own and frees the dead ones (1-6 ms with up to 20 calls in flight and nothing to free,
about 2 ms per ended call freed; 37-44 ms when 20 calls ended at once), and every packet of
every call waits that long. After every call, one worker at 40 calls (`bench/capacity.py
--steps 40`: calls end 5 a second while the rest still talk) failed on 47-61 ms gaps, paced
by the worker up to 60-100 ms, where it holds 37-40 ms without. So `call_ended()` collects,
`COLLECT_DELAY_S` after a call ends (once for calls that end together, when their tasks have
let go of them), only when the pause stays a few milliseconds: at most `COLLECT_MAX_CALLS`
calls in flight and at most `COLLECT_MAX_DEAD` calls ended since the last full collection
(ours or the interpreter's), or no call in flight at all. Above that the interpreter's own
collector keeps its rhythm, as before.

Why trim when idle: glibc's malloc keeps pages a burst of calls freed (codec states, numpy
buffers) mapped for reuse, so a worker that carried a peak and is now idle still reports the
peak's RSS — an operator cannot tell that from a leak, and a host running several workers
cannot reuse the memory. `malloc_trim(0)` returns the pages. It walks the heap (a few
milliseconds), so it runs only while the worker has no call, and at most once per
`MIN_INTERVAL_S` (an idle moment sooner than that is trimmed when the interval is up, if the
worker is still idle). Where the C library has no `malloc_trim` (musl, macOS) only the
collection runs.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
from collections.abc import Callable

COLLECT_DELAY_S = 0.5
COLLECT_MAX_CALLS = 8  # ~0.25 ms each to walk
COLLECT_MAX_DEAD = 4  # ~2 ms each to free
MIN_INTERVAL_S = 30.0


def _load() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def _full_collections() -> int:
    return int(gc.get_stats()[2]["collections"])


class HeapTrimmer:
    """`call_ended()` after each call; `in_flight()` counts the worker's calls."""

    def __init__(self, in_flight: Callable[[], int],
                 trim: Callable[[int], int] | None = None,
                 collect: Callable[[], int] = gc.collect,
                 full_collections: Callable[[], int] = _full_collections) -> None:
        self._in_flight = in_flight
        self._trim = trim if trim is not None else _load()
        self._collect = collect
        self._full_collections = full_collections
        self._seen = full_collections()  # full collections counted when `_dead` was reset
        self._dead = 0  # calls ended since then: their cycles wait for the next one
        self._collecting: asyncio.TimerHandle | None = None
        self._trimming: asyncio.TimerHandle | None = None
        self._last_trim: float | None = None

    def call_ended(self) -> None:
        if (full := self._full_collections()) != self._seen:  # the interpreter ran one
            self._seen, self._dead = full, 0
        self._dead += 1
        if self._collecting is None:
            self._collecting = asyncio.get_running_loop().call_later(COLLECT_DELAY_S,
                                                                     self._collect_now)

    def _collect_now(self) -> None:
        self._collecting = None
        in_flight = self._in_flight()
        if in_flight and (in_flight > COLLECT_MAX_CALLS or self._dead > COLLECT_MAX_DEAD):
            return  # the pause would cost the calls in flight gaps
        self._collect()
        self._seen, self._dead = self._full_collections(), 0
        if not in_flight:
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
        if self._trim is None or self._in_flight():
            return  # a call came in meanwhile: its end will ask again
        self._last_trim = asyncio.get_running_loop().time()
        self._trim(0)

    def close(self) -> None:
        for handle in (self._collecting, self._trimming):
            if handle is not None:
                handle.cancel()
        self._collecting = self._trimming = None

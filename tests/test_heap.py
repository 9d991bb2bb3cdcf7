"""HeapTrimmer: trims when the worker goes idle, at most once per interval, never while busy."""

from __future__ import annotations

import asyncio

from gateway import heap
from gateway.heap import HeapTrimmer
from tests.media.vclock import virtual_time_loop


def test_trims_when_idle_at_most_once_per_interval_and_never_while_busy() -> None:
    loop = virtual_time_loop()
    calls = {"n": 0}
    trims: list[float] = []

    async def main() -> None:
        trimmer = HeapTrimmer(lambda: calls["n"] == 0,
                              trim=lambda pad: trims.append(loop.time()) or 1)
        trimmer.idle()  # the first idle moment: at once
        assert len(trims) == 1
        await asyncio.sleep(5)
        trimmer.idle()  # 5 s later: deferred to the end of the interval
        assert len(trims) == 1
        await asyncio.sleep(heap.MIN_INTERVAL_S)
        assert len(trims) == 2 and trims[1] - trims[0] == heap.MIN_INTERVAL_S
        await asyncio.sleep(1)
        trimmer.idle()  # deferred again, but a call arrives before it is due
        calls["n"] = 1
        await asyncio.sleep(heap.MIN_INTERVAL_S)
        assert len(trims) == 2
        trimmer.close()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def test_real_trim_is_loaded_on_glibc() -> None:
    # This CI runs Debian (glibc): the trim must be found, or the feature is silently off.
    assert heap._load() is not None

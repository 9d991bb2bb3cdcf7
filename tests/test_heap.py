"""HeapTrimmer: collects after calls while that pauses few calls; trims when the worker goes idle,
at most once per interval, never while busy."""

from __future__ import annotations

import asyncio

from gateway import heap
from gateway.heap import HeapTrimmer
from tests.media.vclock import run_virtual


def test_collects_after_calls_and_trims_when_idle_at_most_once_per_interval() -> None:
    calls = {"n": 1}
    collections: list[float] = []
    trims: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        trimmer = HeapTrimmer(lambda: calls["n"],
                              trim=lambda pad: trims.append(loop.time()) or 1,
                              collect=lambda: collections.append(loop.time()) or 0,
                              full_collections=lambda: len(collections))
        t0 = loop.time()
        trimmer.call_ended()  # one call of two ended: collect soon, no trim (still busy)
        await asyncio.sleep(0.1)
        trimmer.call_ended()  # another ends before that collection: one collection for both
        await asyncio.sleep(heap.COLLECT_DELAY_S)
        assert collections == [t0 + heap.COLLECT_DELAY_S] and trims == []
        calls["n"] = 0
        trimmer.call_ended()  # the last call ended: collect, then trim at once (first time)
        await asyncio.sleep(heap.COLLECT_DELAY_S + 0.01)
        assert len(collections) == 2 and len(trims) == 1 and trims[0] == collections[1]
        await asyncio.sleep(5)
        trimmer.call_ended()  # idle again 5 s later: collected, the trim waits for the interval
        await asyncio.sleep(heap.COLLECT_DELAY_S + 0.01)
        assert len(collections) == 3 and len(trims) == 1
        await asyncio.sleep(heap.MIN_INTERVAL_S)
        assert len(trims) == 2 and abs(trims[1] - trims[0] - heap.MIN_INTERVAL_S) < 1e-6
        await asyncio.sleep(1)
        trimmer.call_ended()  # deferred again, but a call arrives before the trim is due
        await asyncio.sleep(heap.COLLECT_DELAY_S + 0.01)
        calls["n"] = 1
        await asyncio.sleep(heap.MIN_INTERVAL_S)
        assert len(collections) == 4 and len(trims) == 2
        trimmer.close()

    run_virtual(main())


def test_no_collection_while_it_would_stall_many_calls_or_free_many_dead_ones() -> None:
    """A full collection stops every call's packets for as long as it walks the live calls'
    objects and frees the dead ones: it runs only with few calls in flight and few dead since
    the last full collection (or with none in flight)."""
    calls = {"n": heap.COLLECT_MAX_CALLS + 1}
    collections: list[float] = []
    automatic = {"n": 0}  # full collections the interpreter ran by itself

    async def main() -> None:
        loop = asyncio.get_running_loop()
        trimmer = HeapTrimmer(lambda: calls["n"], trim=lambda pad: 0,
                              collect=lambda: collections.append(loop.time()) or 0,
                              full_collections=lambda: len(collections) + automatic["n"])
        trimmer.call_ended()  # too many calls in flight
        await asyncio.sleep(heap.COLLECT_DELAY_S + 0.01)
        assert collections == []
        calls["n"] = heap.COLLECT_MAX_CALLS
        trimmer.call_ended()  # few enough now, but a call arrives before the collection runs
        calls["n"] += 1
        await asyncio.sleep(heap.COLLECT_DELAY_S + 0.01)
        assert collections == []
        calls["n"] = 2
        for _ in range(heap.COLLECT_MAX_DEAD - 1):  # dead calls piled up while busy
            trimmer.call_ended()
        await asyncio.sleep(heap.COLLECT_DELAY_S + 0.01)
        assert collections == []  # freeing them all at once would stall the two calls
        automatic["n"] += 1  # the interpreter's own full collection freed them
        trimmer.call_ended()
        await asyncio.sleep(heap.COLLECT_DELAY_S + 0.01)
        assert len(collections) == 1
        for _ in range(heap.COLLECT_MAX_DEAD + 1):
            trimmer.call_ended()
        calls["n"] = 0  # but none in flight: nobody to stall
        await asyncio.sleep(heap.COLLECT_DELAY_S + 0.01)
        assert len(collections) == 2
        trimmer.close()

    run_virtual(main())


def test_a_calls_objects_in_reference_cycles_are_freed_soon_after_it_ends() -> None:
    """With the real collector: an object graph in a cycle (as aiortc's are) is gone
    COLLECT_DELAY_S after call_ended, though the automatic collector is off."""
    import gc
    import weakref

    class Node:
        pass

    async def main() -> None:
        trimmer = HeapTrimmer(lambda: 1, trim=lambda pad: 0)
        a, b = Node(), Node()
        a.other, b.other = b, a  # type: ignore[attr-defined]
        gone = weakref.ref(a)
        del a, b
        trimmer.call_ended()
        assert gone() is not None
        await asyncio.sleep(heap.COLLECT_DELAY_S + 0.01)
        assert gone() is None
        trimmer.close()

    enabled = gc.isenabled()
    gc.disable()
    try:
        run_virtual(main())
    finally:
        if enabled:
            gc.enable()


def test_real_trim_is_loaded_on_glibc() -> None:
    # This CI runs Debian (glibc): the trim must be found, or the feature is silently off.
    assert heap._load() is not None

"""clock.Wakeup: sleep until set, a timeout, or a moved wake-up (on virtual time)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from gateway.clock import Wakeup
from tests.media.vclock import virtual_time_loop

T = TypeVar("T")


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    loop = virtual_time_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def test_wait_ends_at_the_timeout_or_at_set() -> None:
    async def main() -> list[float]:
        loop, wakeup = asyncio.get_running_loop(), Wakeup()
        t0 = loop.time()
        await wakeup.wait(0.020)
        timed_out = loop.time() - t0
        loop.call_later(0.005, wakeup.set)
        await wakeup.wait(0.020)
        return [timed_out, loop.time() - t0 - timed_out]

    timed_out, set_early = run_virtual(main())
    assert abs(timed_out - 0.020) < 1e-6 and abs(set_early - 0.005) < 1e-6


def test_set_after_moves_the_wake_up_and_wakes_once() -> None:
    async def main() -> tuple[float, float, int]:
        loop, wakeup = asyncio.get_running_loop(), Wakeup()
        wakes = 0
        t0 = loop.time()
        loop.call_later(0.002, wakeup.set_after, 0.003)  # learnt at 2 ms: go at 5 ms
        waiter = asyncio.ensure_future(wakeup.wait(0.030))

        def count(_: object) -> None:
            nonlocal wakes
            wakes += 1

        waiter.add_done_callback(count)
        await waiter
        moved = loop.time() - t0
        t1 = loop.time()
        loop.call_later(0.001, wakeup.set_after, 0.0)  # nothing to wait for: at once
        await wakeup.wait(0.030)
        return moved, loop.time() - t1, wakes

    moved, at_once, wakes = run_virtual(main())
    assert abs(moved - 0.005) < 1e-6 and abs(at_once - 0.001) < 1e-6 and wakes == 1


def test_set_after_without_a_sleeper_does_nothing() -> None:
    async def main() -> float:
        loop, wakeup = asyncio.get_running_loop(), Wakeup()
        wakeup.set_after(0.001)  # nobody waits: no timer left behind to end the next wait
        t0 = loop.time()
        await wakeup.wait(0.010)
        return loop.time() - t0

    assert abs(run_virtual(main()) - 0.010) < 1e-6

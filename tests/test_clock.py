"""clock.Wakeup: sleep until set or a timeout (on virtual time)."""

from __future__ import annotations

import asyncio

from gateway.clock import Wakeup
from tests.media.vclock import run_virtual


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

"""A call through the real gateway (UDP, emulator, RTP both ways), with and without digest."""

from __future__ import annotations

import asyncio

from tests.edge.harness import (
    DIGEST_PASSWORD,
    DIGEST_USER,
    Caller,
    make_config,
    max_gap,
    place_call,
    running,
    trunk,
)


async def test_plain_call_has_audio_both_ways() -> None:
    async with running(lambda emu: make_config(emu)) as rig:
        caller = Caller(rig.udp)
        await caller.start()
        call = await place_call(caller)
        await asyncio.sleep(1.0)
        t0 = call.rtp.sent_at[0]
        assert max_gap(call.rtp.received_at, since=t0 + 0.2) < 0.2
        bye = await call.hang_up()
        assert bye.status == 200
        caller.close()

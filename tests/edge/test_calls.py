"""Calls through the real gateway (UDP, emulator, RTP both ways): plain, and digest-authenticated
end to end (401 → INVITE with our own Authorization → answered call) with each algorithm.

Audio both ways: under `make test` no gap reaching the gateway's RTP inactivity timeout (which
would end the call); the 200 ms pacing figure is a measurement of an idle machine, run under
`make test-slow` (issue 10 item 8)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.config import LimitsConfig
from tests.edge.harness import (
    DIGEST_PASSWORD,
    DIGEST_USER,
    REALM,
    Caller,
    make_config,
    max_gap,
    place_call,
    running,
    trunk,
)
from tests.integration.stack import NO_OVERLOAD

GAP = pytest.mark.parametrize("gap_s", [None, pytest.param(0.2, marks=pytest.mark.slow,
                                                           id="200ms")])


@GAP
async def test_plain_call_has_audio_both_ways(gap_s: float | None) -> None:
    async with running(lambda emu: make_config(emu)) as rig:
        caller = Caller(rig.udp)
        await caller.start()
        call = await place_call(caller)
        await asyncio.sleep(1.0)
        t0 = call.rtp.sent_at[0]
        bound = rig.gateway.config.rtp.inactivity_timeout_s if gap_s is None else gap_s
        assert max_gap(call.rtp.received_at, since=t0 + 0.5) < bound
        bye = await call.hang_up()
        assert bye.status == 200
        caller.close()


@GAP
@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
async def test_digest_authenticated_call(algorithm: str, gap_s: float | None) -> None:
    def config(emu: object) -> object:
        return make_config(emu, trunks=(trunk("pbx", "127.0.0.0/8", auth=True),))  # type: ignore[arg-type]

    async with running(config) as rig:  # type: ignore[arg-type]
        caller = Caller(rig.udp)
        await caller.start()
        call = await place_call(caller, credentials=(DIGEST_USER, DIGEST_PASSWORD),
                                prefer=algorithm)
        (challenge,) = call.challenges
        offered = challenge.all("WWW-Authenticate")
        assert [c.split("algorithm=")[1].split(",")[0] for c in offered] == ["SHA-256", "MD5"]
        assert all(f'realm="{REALM}"' in c and 'qop="auth"' in c for c in offered)
        assert call.final.status == 200
        (described,) = [c for c in rig.gateway.registry.describe()  # type: ignore[union-attr]
                        if c["call_id"] == call.call_id]
        assert described["trunk"] == "pbx"  # the trunk name labels the call
        await asyncio.sleep(1.0)
        bound = rig.gateway.config.rtp.inactivity_timeout_s if gap_s is None else gap_s
        assert max_gap(call.rtp.received_at, since=call.rtp.sent_at[0] + 0.5) < bound
        assert (await call.hang_up()).status == 200
        metrics = (await rig.http_get("/metrics")).decode()
        assert 'orga_gateway_security_rejections_total{reason="auth_missing"} 1.0' in metrics
        assert 'trunk="pbx"' in metrics
        assert rig.emulator.stats.client_secrets_requests == 1
        caller.close()


async def test_wrong_password_gets_another_401_and_no_session() -> None:
    def config(emu: object) -> object:
        return make_config(emu, trunks=(trunk("pbx", "127.0.0.0/8", auth=True),))  # type: ignore[arg-type]

    async with running(config) as rig:  # type: ignore[arg-type]
        caller = Caller(rig.udp)
        await caller.start()
        with pytest.raises(AssertionError, match="401"):
            await place_call(caller, credentials=(DIGEST_USER, "wrong"), timeout=5)
        assert rig.emulator.stats.client_secrets_requests == 0
        metrics = (await rig.http_get("/metrics")).decode()
        assert 'orga_gateway_security_rejections_total{reason="auth_failed"} 1.0' in metrics
        caller.close()


async def test_max_call_duration_ends_the_call_with_a_bye() -> None:
    def config(emu: object) -> object:
        return make_config(emu, limits=LimitsConfig(  # type: ignore[arg-type]
            max_calls=5, max_call_duration_s=1.0, **NO_OVERLOAD))

    async with running(config) as rig:  # type: ignore[arg-type]
        caller = Caller(rig.udp)
        await caller.start()
        call = await place_call(caller)
        async with asyncio.timeout(30):  # liveness only: the limit is 1 s
            while not [r for r in caller.requests if r.startswith(b"BYE")]:
                await asyncio.sleep(0.02)
        (bye,) = [r for r in caller.requests if r.startswith(b"BYE")]
        assert f"Call-ID: {call.call_id}".encode() in bye
        await call.rtp.stop()
        await rig.idle()
        metrics = (await rig.http_get("/metrics")).decode()
        assert 'orga_gateway_calls_ended_total{result="max_duration",route="*",trunk="local"} 1.0' \
            in metrics
        # Not before the limit, on the gateway's own clock (a timer never fires early; a
        # bound on when the caller saw the BYE would measure how busy the machine is).
        (duration,) = [float(line.split()[-1]) for line in metrics.splitlines()
                       if line.startswith("orga_gateway_call_duration_seconds_sum")]
        assert duration >= 1.0
        assert rig.emulator.state()["sessions_active"] == 0
        caller.close()


async def test_trunk_max_calls_refuses_the_next_call_with_503() -> None:
    def config(emu: object) -> object:
        return make_config(emu, trunks=(trunk("small", "127.0.0.1/32", max_calls=1),  # type: ignore[arg-type]
                                        trunk("big", "127.0.0.2/32")))

    async with running(config) as rig:  # type: ignore[arg-type]
        first, second, other = Caller(rig.udp), Caller(rig.udp), Caller(rig.udp, "127.0.0.2")
        for c in (first, second, other):
            await c.start()
        call = await place_call(first)
        with pytest.raises(AssertionError, match=r"SIP/2\.0 503"):
            await place_call(second, timeout=5)
        refused = [r for r in second.responses if r.status == 503]
        assert refused and refused[0].header("Retry-After") is not None
        call_b = await place_call(other)  # another trunk is not limited by it
        await call.hang_up()
        registry = rig.gateway.registry
        assert registry is not None
        async with asyncio.timeout(5):  # the slot is freed when the call's teardown is done
            while len(registry.calls) > 1:
                await asyncio.sleep(0.02)
        again = await place_call(second)  # the slot is free again
        for c in (call_b, again):
            assert (await c.hang_up()).status == 200
        metrics = (await rig.http_get("/metrics")).decode()
        assert 'orga_gateway_security_rejections_total{reason="trunk_capacity"} 1.0' in metrics
        assert rig.emulator.stats.client_secrets_requests == 3
        for c in (first, second, other):
            c.close()

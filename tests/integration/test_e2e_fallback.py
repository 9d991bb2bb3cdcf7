"""Issue 13 item 12: a route's human fallback when Orga cannot take the call, with SIPp.

The route names a transfer target and `on_orga_failure = "desk"`. When the Orga setup fails
(5xx on every /calls attempt, tokens refused, setup timeout) the caller gets a 302 whose Contact
is the target, result `orga_fallback`; with `orga_failure_announcement` the WAV is played first
as early media (183 with SDP) and heard by content (tone frequency and level) on the test's own
RTP socket. A route left at "reject" keeps refusing (503). After the answer, a lost Orga leg
(its media stops) is a blind transfer (REFER) to the target, SIPp playing the transferee;
without a fallback the loss is a BYE (test_e2e_teardown.py).
"""

from __future__ import annotations

import asyncio
import re
import wave
from pathlib import Path

import numpy as np
import pytest

from gateway.analysis import dominant_frequency
from gateway.config import Route
from tests.integration.sipp import SIPP, run_sipp
from tests.integration.stack import Stack, value_of
from tests.integration.test_e2e_teardown import ended, exchange, received_text

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SIPP is None, reason="sipp is not installed (apt-get install sip-tester)"),
]

DESK = "sip:desk@192.0.2.10:5060"
FALLBACK_ROUTE = Route(match="*", transfer_targets=(("desk", DESK),), on_orga_failure="desk")


def ulaw_decode(payload: bytes) -> np.ndarray:
    """ITU-T G.711 µ-law to 16-bit linear, written from the standard (not the gateway's tables)."""
    u = ~np.frombuffer(payload, dtype=np.uint8).astype(np.int32) & 0xFF
    magnitude = (((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 0x07)
    return np.where(u & 0x80, 0x84 - magnitude, magnitude - 0x84).astype(np.int16)


class RtpListener(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) > 12 and data[1] & 0x7F == 0:  # PCMU
            self.payloads.append(data[12:])


def write_wav(path: Path, freq_hz: float, seconds: float, rate: int = 16000) -> None:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.25 * 32767 * np.sin(2 * np.pi * freq_hz * t)).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.tobytes())


@pytest.mark.parametrize("stack", [{"routes": (FALLBACK_ROUTE,)}], indirect=True)
@pytest.mark.parametrize("fault", [{"fail_calls": 3, "fail_status": 503},
                                   {"reject_tokens": True}])
async def test_orga_failure_redirects_to_the_routes_target(
    stack: Stack, tmp_path: Path, fault: dict[str, object]
) -> None:
    stack.set_faults(**fault)
    run = await run_sipp("uac_redirected.xml", stack.sip_port, tmp_path,
                         extra=("-set", "mport", "9"))
    assert run.returncode == 0, run.stderr
    assert exchange(run) == [">INVITE", "<100", "<180", "<302", ">ACK"]
    response = received_text(tmp_path, "SIP/2.0 302")
    assert re.search(rf"^Contact: *<{re.escape(DESK)}>", response, re.M), response
    assert "Retry-After" not in response
    await stack.assert_clean()
    samples = await stack.metrics()
    assert ended(samples, "orga_fallback") == 1
    assert value_of(samples, "orga_gateway_calls_ended_total") == 1


@pytest.mark.parametrize("stack", [{"routes": (FALLBACK_ROUTE,),
                                    "orga": {"setup_timeout_s": 1.0}}], indirect=True)
async def test_setup_timeout_redirects_too(stack: Stack, tmp_path: Path) -> None:
    stack.set_faults(delay_s=2.0)  # every Orga request answers after the 1 s setup budget
    run = await run_sipp("uac_redirected.xml", stack.sip_port, tmp_path,
                         extra=("-set", "mport", "9"))
    assert run.returncode == 0, run.stderr
    assert exchange(run) == [">INVITE", "<100", "<180", "<302", ">ACK"]
    (invite,), (redirect,) = run.sent("INVITE"), run.received("SIP/2.0 302")
    # The 1 s budget, then the redirect: before the request timeout (5 s) could have ended the
    # setup, the bound that proves the budget did it whatever the machine's load (issue 10 #8).
    request_timeout_s = stack.gateway.config.orga.request_timeout_s
    assert 0.9 < redirect - invite < request_timeout_s
    await stack.assert_clean()
    assert ended(await stack.metrics(), "orga_fallback") == 1


# "The redirect at once after the announcement" has no timer to bound it: the 3 s bound is a
# measurement, run under `make test-slow` only (issue 10 item 8). `make test` checks the order
# (the 183's announcement, all 50 packets of it, then the 302) without an upper bound.
@pytest.mark.parametrize("at_once_s", [None, pytest.param(3.0, marks=pytest.mark.slow,
                                                          id="measured")])
async def test_announcement_is_heard_as_early_media_before_the_redirect(
        tmp_path: Path, at_once_s: float | None) -> None:
    wav = tmp_path / "fallback.wav"
    write_wav(wav, 500.0, 1.0)
    route = Route(match="*", transfer_targets=(("desk", DESK),), on_orga_failure="desk",
                  orga_failure_announcement=str(wav))
    stack = await Stack(routes=(route,)).start()
    loop = asyncio.get_running_loop()
    transport, listener = await loop.create_datagram_endpoint(
        RtpListener, local_addr=("127.0.0.1", 0))
    try:
        stack.set_faults(fail_calls=1, fail_status=400)  # permanent: no retry, at once
        port = transport.get_extra_info("sockname")[1]
        run = await run_sipp("uac_redirected.xml", stack.sip_port, tmp_path,
                             extra=("-set", "mport", str(port)))
        assert run.returncode == 0, run.stderr
        assert exchange(run) == [">INVITE", "<100", "<180", "<183", "<302", ">ACK"]
        (progress,), (redirect,) = run.received("SIP/2.0 183"), run.received("SIP/2.0 302")
        assert redirect - progress > 0.9  # the 1 s announcement, then the redirect
        if at_once_s is not None:
            assert redirect - progress < at_once_s
        assert "application/sdp" in received_text(tmp_path, "SIP/2.0 183")
        # Heard by content: 1 s of the WAV's 500 Hz tone at its level (a 0.25 sine: -15 dBFS).
        audio = ulaw_decode(b"".join(listener.payloads)).astype(np.float64) / 32768
        assert 48 <= len(listener.payloads) <= 52
        assert dominant_frequency(audio, 8000) == pytest.approx(500, abs=10)
        level = 20 * np.log10(np.sqrt(np.mean(audio[400:-400] ** 2)))
        assert -17.0 < level < -13.0
        await stack.assert_clean()
        assert ended(await stack.metrics(), "orga_fallback") == 1
    finally:
        transport.close()
        await stack.stop()


@pytest.mark.parametrize("stack", [{"routes": (Route(match="*", transfer_targets=(
    ("desk", DESK),)),)}], indirect=True)
async def test_a_route_left_at_reject_still_refuses(stack: Stack, tmp_path: Path) -> None:
    stack.set_faults(fail_calls=3, fail_status=503)
    run = await run_sipp("uac_rejected.xml", stack.sip_port, tmp_path)
    assert run.returncode == 0, run.stderr
    assert exchange(run) == [">INVITE", "<100", "<180", "<503", ">ACK"]
    await stack.assert_clean()
    assert ended(await stack.metrics(), "orga_unavailable") == 1


@pytest.mark.parametrize("stack", [{"routes": (FALLBACK_ROUTE,),
                                    "rtp": {"inactivity_timeout_s": 30.0}}], indirect=True)
@pytest.mark.parametrize(("frag", "result"), [("200 OK", "orga_fallback"),
                                              ("486 Busy Here", "orga_lost")])
async def test_orga_lost_mid_call_is_transferred_to_the_target(
    stack: Stack, tmp_path: Path, frag: str, result: str
) -> None:
    stack.set_faults(media_stop_after_s=1.0)  # Orga's media stops, ICE/DTLS stay up
    # The transferee reports `frag` by NOTIFY and then expects our BYE: after a failed
    # transfer too, since the AI is gone (no call to go back to).
    run = await run_sipp("uac_transferee.xml", stack.sip_port, tmp_path, timeout=30,
                         extra=("-set", "digit", "5", "-set", "frag", frag))
    assert run.returncode == 0, run.stderr
    text = (tmp_path / "messages.log").read_text(errors="replace")
    refer = re.search(r"REFER sip:.*?(?:\r?\n\r?\n)", text, re.S)
    assert refer and re.search(rf"^Refer-To:\s*<{re.escape(DESK)}>", refer.group(0), re.M)
    await stack.assert_clean()
    samples = await stack.metrics()
    assert ended(samples, result) == 1
    assert value_of(samples, "orga_gateway_transfers_total", requested_by="fallback") == 1

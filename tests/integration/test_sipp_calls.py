"""Real-peer tests: SIPp (our own scenarios) against the SIP core on real UDP/TCP sockets.

Each test checks what SIPp saw (its exit code, call counters and message trace), and the
application's events. Timers are shortened (T1=50 ms, T2=400 ms) so the 64·T1 cases take ~3 s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.sip.events import (
    AckReceived,
    ByeReceived,
    CallCancelled,
    DialogEnded,
    InfoReceived,
    InviteReceived,
    ReinviteReceived,
    SipEndReason,
)
from gateway.sip.timers import TimerSettings
from tests.integration.sip_app import Behaviour, SipTestApp
from tests.integration.sipp import SIPP, run_sipp

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SIPP is None, reason="sipp is not installed (apt-get install sip-tester)"),
]

TIMERS = TimerSettings(T1=0.05, T2=0.4, T4=0.5)


async def started(behaviour: Behaviour) -> SipTestApp:
    # Min-SE 3 s (RFC 4028 says 90; ours is configurable) keeps the session-timer test short.
    app = SipTestApp(behaviour, TIMERS, min_se=3)
    await app.start()
    return app


@pytest.fixture
async def app(request: pytest.FixtureRequest) -> AsyncIterator[SipTestApp]:
    behaviour = getattr(request, "param", Behaviour())
    application = await started(behaviour)
    yield application
    await application.stop()


def ends(app: SipTestApp) -> list[tuple[SipEndReason, int | None]]:
    return [(e.reason, e.status) for e in app.of_type(DialogEnded)]  # type: ignore[attr-defined]


@pytest.mark.parametrize("transport", ["u1", "t1"])
async def test_normal_call(app: SipTestApp, tmp_path: Path, transport: str) -> None:
    port = app.udp_port if transport == "u1" else app.tcp_port
    run = await run_sipp("uac_call.xml", port, tmp_path, transport=transport)
    assert run.returncode == 0, run.stderr
    assert (run.successful, run.failed) == (1, 0)
    assert len(run.received("SIP/2.0 200")) == 2  # INVITE and BYE answered
    assert [type(e) for e in app.events] == [InviteReceived, AckReceived, ByeReceived, DialogEnded]
    assert ends(app) == [(SipEndReason.REMOTE_BYE, None)]


async def test_no_ack_means_200_retransmitted_then_bye(app: SipTestApp, tmp_path: Path) -> None:
    run = await run_sipp("uac_no_ack.xml", app.udp_port, tmp_path)
    assert run.returncode == 0, run.stderr
    assert (run.successful, run.failed) == (1, 0)
    oks = run.received("SIP/2.0 200")
    (bye,) = run.received("BYE")
    # RFC 3261 §13.3.1.4: T1, 2·T1, 4·T1, then every T2 until 64·T1 = 3.2 s; then BYE.
    offsets = [t - oks[0] for t in oks[1:]]
    expected = [0.05, 0.15, 0.35, 0.75, 1.15, 1.55, 1.95, 2.35, 2.75, 3.15]
    # The last copy (due 50 ms before the give-up) only goes out if the loop is on time.
    assert len(offsets) in (len(expected) - 1, len(expected)), offsets
    for got, want in zip(offsets, expected, strict=False):
        assert want - 0.01 <= got <= want + 0.15, offsets  # loop lateness on a busy box
    assert 3.2 - 0.02 <= bye - oks[0] <= 3.2 + 0.3
    assert ends(app) == [(SipEndReason.ACK_TIMEOUT, None)]
    assert not app.of_type(AckReceived)


@pytest.mark.parametrize("app", [Behaviour(ring_after=0.15, answer_after=1.0)], indirect=True)
async def test_retransmitted_invite_is_one_call(app: SipTestApp, tmp_path: Path) -> None:
    run = await run_sipp("uac_invite_retransmit.xml", app.udp_port, tmp_path, extra=("-nr",))
    assert run.returncode == 0, run.stderr
    assert (run.successful, run.failed) == (1, 0)
    assert len(run.sent("INVITE")) == 2 and len(app.received("INVITE")) == 2
    (invite_at, _) = app.received("INVITE")
    assert len(run.received("SIP/2.0 100")) == 1  # 100 Trying at once, before the app acts
    # Before the caller's Timer A (T1, SIPp's default 500 ms) would retransmit the INVITE.
    assert app.sent("SIP/2.0 100")[0] - invite_at < TimerSettings().T1
    assert len(run.received("SIP/2.0 180")) == 2  # the retransmission got our last response
    assert len(app.of_type(InviteReceived)) == 1
    assert ends(app) == [(SipEndReason.REMOTE_BYE, None)]


@pytest.mark.parametrize("app", [Behaviour(answer_after=None)], indirect=True)
async def test_cancel_before_answer(app: SipTestApp, tmp_path: Path) -> None:
    run = await run_sipp("uac_cancel.xml", app.udp_port, tmp_path)
    assert run.returncode == 0, run.stderr
    assert (run.successful, run.failed) == (1, 0)
    assert len(run.received("SIP/2.0 487")) == 1
    assert len(app.of_type(CallCancelled)) == 1
    assert ends(app) == [(SipEndReason.CANCELLED, 487)]
    assert app.sent("SIP/2.0 487") and app.received("ACK")


async def test_options_ping(app: SipTestApp, tmp_path: Path) -> None:
    run = await run_sipp("options.xml", app.udp_port, tmp_path)
    assert run.returncode == 0, run.stderr  # the scenario checks Allow/Accept/Supported
    assert (run.successful, run.failed) == (1, 0)
    assert app.events == []


@pytest.mark.parametrize("app", [Behaviour(hang_up_after=0.2)], indirect=True)
@pytest.mark.parametrize("transport", ["u1", "t1"])
async def test_we_hang_up_first(app: SipTestApp, tmp_path: Path, transport: str) -> None:
    port = app.udp_port if transport == "u1" else app.tcp_port
    run = await run_sipp("uac_callee_hangs_up.xml", port, tmp_path, transport=transport)
    assert run.returncode == 0, run.stderr
    assert (run.successful, run.failed) == (1, 0)
    assert len(run.received("BYE")) == 1 and len(run.sent("SIP/2.0 200")) == 1
    assert len(app.sent("BYE")) == 1 and len(app.received("SIP/2.0 200")) == 1
    assert ends(app) == [(SipEndReason.LOCAL_BYE, None)]


async def test_fifty_calls_at_ten_per_second(app: SipTestApp, tmp_path: Path) -> None:
    run = await run_sipp("uac_call.xml", app.udp_port, tmp_path, calls=50, rate=10, timeout=30)
    assert run.returncode == 0, run.stderr
    assert (run.successful, run.failed) == (50, 0)
    assert len(app.of_type(InviteReceived)) == 50
    assert ends(app) == [(SipEndReason.REMOTE_BYE, None)] * 50
    assert app.endpoint.active_calls == 0


@pytest.mark.parametrize("transport", ["u1", "t1"])
async def test_hold_resume_and_dtmf_info(app: SipTestApp, tmp_path: Path, transport: str) -> None:
    port = app.udp_port if transport == "u1" else app.tcp_port
    run = await run_sipp("uac_reinvite_info.xml", port, tmp_path, transport=transport)
    assert run.returncode == 0, run.stderr  # the scenario checks our SDP in each 200
    assert (run.successful, run.failed) == (1, 0)
    offers = app.of_type(ReinviteReceived)
    assert [o.sdp is not None and o.sdp.split(b"a=")[-1].strip() for o in offers] == [  # type: ignore[attr-defined]
        b"sendonly", b"sendrecv"
    ]
    (info,) = app.of_type(InfoReceived)
    assert info.body.startswith(b"Signal=5")  # type: ignore[attr-defined]
    assert len(app.of_type(AckReceived)) == 3  # the call and both re-INVITEs
    assert ends(app) == [(SipEndReason.REMOTE_BYE, None)]


@pytest.mark.parametrize("app", [Behaviour(ring_after=None, answer_after=1.0)], indirect=True)
async def test_invite_retransmitted_before_ringing_gets_100_again(
    app: SipTestApp, tmp_path: Path
) -> None:
    run = await run_sipp(
        "uac_invite_retransmit_trying.xml", app.udp_port, tmp_path, extra=("-nr",)
    )
    assert run.returncode == 0, run.stderr
    assert (run.successful, run.failed) == (1, 0)
    assert len(run.sent("INVITE")) == 2 and len(run.received("SIP/2.0 100")) == 2
    assert len(app.of_type(InviteReceived)) == 1
    assert ends(app) == [(SipEndReason.REMOTE_BYE, None)]


async def test_session_timer_refresh_answered_then_expiry_bye(
    app: SipTestApp, tmp_path: Path
) -> None:
    run = await run_sipp("uac_session_timer.xml", app.udp_port, tmp_path, timeout=15)
    assert run.returncode == 0, run.stderr  # the scenario checks Session-Expires and Require
    assert (run.successful, run.failed) == (1, 0)
    (update_ok,) = [m.at for m in run.messages if m.direction == "received"
                    and m.first_line.startswith("SIP/2.0 200")][1:2]
    (bye,) = run.received("BYE")
    # Refreshed at ~1 s; no refresh after it, so BYE 3 - min(32, 3/3) = 2 s later (RFC 4028 §10).
    assert 2.0 - 0.02 <= bye - update_ok <= 2.0 + 0.3
    assert ends(app) == [(SipEndReason.SESSION_EXPIRED, None)]

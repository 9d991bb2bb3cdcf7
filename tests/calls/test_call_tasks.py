"""Issue 10 item 7: every task of a call lives in the call's TaskGroup and none outlives it.

A `Call` runs with the real RTP session and audio pump on loopback and a fake Orga session,
through each way it can end — a failure in the middle of setup (bad offer, Orga down with the
RTP watchdog already running, the peer failing), the caller cancelling mid-setup, a task of the
call crashing during setup or after the answer, and a normal answered call. After `run()`
returns, no task started since the call began is still pending, and the SIP answer and the
metric result are the ones `outcomes.py` gives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from gateway import call as call_module
from gateway.call import Call, CallContext
from gateway.clock import LoopClock
from gateway.config import parse_config
from gateway.media.ports import PortPool
from gateway.media.rtp_session import RtpSession
from gateway.metrics import Metrics
from gateway.orga.api import OrgaApi
from gateway.orga.errors import OrgaError, OrgaUnavailableError
from gateway.orga.settings import OrgaClientSettings, PeerSettings
from gateway.routes import match_route
from gateway.sip.address import Peer
from gateway.sip.events import ByeReceived, CallCancelled, CallHandle, InviteReceived
from gateway.sip.message import SipRequest
from gateway.sip.parser import parse_message
from tests.calls.fakes import RecordingSignalling

OFFER = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40990 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
)


def _invite(sdp: bytes | None) -> InviteReceived:
    raw = (
        b"INVITE sip:800@127.0.0.1:5080 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-t1\r\n"
        b"From: <sip:caller@127.0.0.1>;tag=a1\r\nTo: <sip:800@127.0.0.1>\r\n"
        b"Call-ID: tasks-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    request = parse_message(raw)
    assert isinstance(request, SipRequest)
    return InviteReceived(CallHandle(1), request, Peer("127.0.0.1", 5999), sdp)


class FakeRemoteTrack:
    """The AI's audio track: silent until `crash` makes the next `recv` fail (a bug)."""

    kind = "audio"

    def __init__(self) -> None:
        self.failure: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def recv(self) -> Any:
        await self.failure
        raise AssertionError("unreachable")

    def crash(self) -> None:
        self.failure.set_exception(RuntimeError("pump bug"))


class FakePeer:
    def __init__(self, track: FakeRemoteTrack) -> None:
        loop = asyncio.get_running_loop()
        self.remote_audio: asyncio.Future[Any] = loop.create_future()
        self.remote_audio.set_result(track)
        self.ended: asyncio.Future[Any] = loop.create_future()
        self.closed = False

    def add_event_listener(self, listener: Callable[[Any], None]) -> None:
        pass

    async def close(self) -> None:
        self.closed = True


class FakeSession:
    def __init__(self, peer: FakePeer) -> None:
        self.peer = peer
        self.conversation_id = "conv-1"
        self.timings = {"calls": 0.01, "total": 0.02}


class Rig:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, port: int) -> None:
        self.config = parse_config({"rtp": {"port_min": port, "port_max": port + 9},
                                    "limits": {"max_calls": 5}}, {"ORGA_API_KEY": "k"})
        self.metrics = Metrics()
        self.signalling = RecordingSignalling()
        self.clock = LoopClock()
        self.ports = PortPool(port, port + 9, 0.0, self.clock)
        self.ctx = CallContext(
            config=self.config, metrics=self.metrics, ports=self.ports,
            api=OrgaApi(OrgaClientSettings("http://127.0.0.1:9", "k")),
            signalling=self.signalling, peer_settings=PeerSettings(),
            advertised_address="127.0.0.1", clock=self.clock,
        )
        self.track = FakeRemoteTrack()
        self.peer = FakePeer(self.track)
        self.session_started = asyncio.Event()
        self.session_result: BaseException | None = None  # None: connect; else raise it
        self.session_blocks = False
        monkeypatch.setattr(call_module, "open_session", self._open_session)

    async def _open_session(self, api: Any, peer_factory: Any, params: Any) -> FakeSession:
        self.session_started.set()
        if self.session_blocks:
            await asyncio.Event().wait()
        if self.session_result is not None:
            raise self.session_result
        return FakeSession(self.peer)

    def call(self, sdp: bytes | None = OFFER) -> Call:
        invite = _invite(sdp)
        route = match_route(self.config.routes, "800", "loopback")
        assert route is not None
        return Call(self.ctx, invite, route, "loopback")

    def ended(self, result: str) -> float:
        return self.metrics.registry.get_sample_value(
            "orga_gateway_calls_ended_total",
            {"result": result, "route": "*", "trunk": "loopback"}) or 0.0

    def sent(self) -> list[tuple[str, int | None]]:
        return [(kind, status) for kind, _, status, _, _ in self.signalling.sent]


def _free_base() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return max(1024, min(port, 65500) & ~1)


@pytest.fixture
async def rig(monkeypatch: pytest.MonkeyPatch) -> Rig:
    return Rig(monkeypatch, _free_base())


def _leftovers(before: set[asyncio.Task[Any]]) -> list[asyncio.Task[Any]]:
    current = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t not in before and t is not current
            and not t.done()]


async def _run(call: Call, during: Callable[[], Any] | None = None
               ) -> tuple[list[asyncio.Task[Any]], set[str]]:
    """Run the call to its end; returns the tasks left pending and the names of the tasks
    that were alive while `during` ran (to show the check has something to find)."""
    before = set(asyncio.all_tasks())
    runner = asyncio.create_task(call.run())
    seen: set[str] = set()
    if during is not None:
        await during()
        seen = {t.get_name() for t in _leftovers(before)}
    await asyncio.wait_for(runner, 10)
    await asyncio.sleep(0)
    return _leftovers(before), seen


async def _until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_bad_offer_fails_setup_and_leaves_nothing(rig: Rig) -> None:
    left, _ = await _run(rig.call(b"v=0\r\nnot sdp"))
    assert left == []
    assert rig.sent() == [("ring", None), ("reject", 488)]
    assert rig.ended("bad_offer") == 1
    assert rig.ports.in_use_count == 0


async def test_orga_down_after_the_port_is_bound(rig: Rig) -> None:
    rig.session_result = OrgaUnavailableError("calls", 502, "bad gateway")
    left, _ = await _run(rig.call())
    assert left == []
    assert rig.sent() == [("ring", None), ("reject", 503)]
    assert rig.signalling.sent[-1][4] == [("Retry-After", "10")]
    assert rig.ended("orga_unavailable") == 1
    assert rig.ports.in_use_count == 0


async def test_peer_failing_before_remote_audio(rig: Rig) -> None:
    failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    failed.set_exception(OrgaError("peer", None, "peer closed"))
    rig.peer.remote_audio = failed
    left, _ = await _run(rig.call())
    assert left == []
    assert rig.sent() == [("ring", None), ("reject", 503)]
    assert rig.peer.closed


async def test_cancel_in_the_middle_of_setup(rig: Rig) -> None:
    rig.session_blocks = True
    call = rig.call()

    async def cancel() -> None:
        await rig.session_started.wait()
        call.sip_event(CallCancelled(call.handle))

    left, seen = await _run(call, cancel)
    assert {"setup tasks-1", "rtp-watchdog"} <= seen
    assert left == []
    assert rig.sent() == [("ring", None)]  # the core answered the CANCEL and sent the 487
    assert rig.ended("cancelled") == 1


async def test_a_task_crashing_during_setup_ends_the_call_with_500(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken_watch(self: RtpSession) -> None:
        await rig.session_started.wait()
        raise RuntimeError("watchdog bug")

    monkeypatch.setattr(RtpSession, "_watch", broken_watch)
    rig.session_blocks = True
    left, _ = await _run(rig.call())
    assert left == []
    assert rig.sent() == [("ring", None), ("reject", 500)]
    assert rig.ended("internal_error") == 1
    assert rig.ports.in_use_count == 0


async def test_answered_call_ends_with_caller_bye(rig: Rig) -> None:
    call = rig.call()

    async def talk_then_bye() -> None:
        await _until(lambda: ("answer", 200) in rig.sent())
        await asyncio.sleep(0.05)
        call.sip_event(ByeReceived(call.handle, call.invite.request))

    left, seen = await _run(call, talk_then_bye)
    assert {"ai-pump-read", "rtp-watchdog"} <= seen
    assert left == []
    assert rig.sent() == [("ring", None), ("answer", 200)]
    assert rig.ended("caller_bye") == 1
    assert rig.peer.closed and rig.ports.in_use_count == 0


async def test_a_task_crashing_after_the_answer_hangs_up(rig: Rig) -> None:
    async def crash() -> None:
        await _until(lambda: ("answer", 200) in rig.sent())
        rig.track.crash()

    left, _ = await _run(rig.call(), crash)
    assert left == []
    assert rig.sent() == [("ring", None), ("answer", 200), ("hang_up", None)]
    assert rig.ended("internal_error") == 1
    assert rig.peer.closed and rig.ports.in_use_count == 0

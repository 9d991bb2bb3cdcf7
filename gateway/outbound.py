"""An outgoing call's life: the gateway dials a number for an operator (`POST /v1/calls`).

The same `Call` with the roles swapped. We are the UAC: an RTP port first, then our INVITE
with our SDP offer to the trunk's `outbound_proxy`; the Orga session is set up while the phone
rings, so the callee does not wait for the AI when they pick up. 180/183 mark the call ringing;
the 2xx's SDP answer fixes the media and the bridge starts. The callee not answering is an
`Outcome` like any other end: 486/600 `busy`, 603 `declined`, 408/480/487 or no final answer
within `ring_timeout_s` (we CANCEL) `no_answer`, anything else `outbound_failed` (a 401/407
is answered once with the trunk's outbound credentials, RFC 3261 §22.2); the Orga
setup failing while it rings CANCELs the INVITE. Once answered the call is like an inbound
one (transfer, tools, BYE from either side).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
from typing import Any

from gateway.call import Call, CallContext
from gateway.call_report import SetupSteps
from gateway.config import Route, TrunkConfig
from gateway.control.actions import OutboundRequest
from gateway.media.downlink import AiAudioPump
from gateway.media.rtp_session import open_from_pool
from gateway.media.uplink import CallerAudioTrack
from gateway.orga.session import open_session
from gateway.outcomes import Outcome, classify
from gateway.sdp import Direction, MediaParams, negotiate, parse_offer
from gateway.sip.address import Peer, Transport
from gateway.sip.dialog import hop_for_uri
from gateway.sip.events import (
    CallAnswered,
    CallFailed,
    CallHandle,
    DialogEnded,
    ProvisionalReceived,
    SipEndReason,
)
from gateway.sip.uri import parse_uri

_STATIC_PT = {"PCMU": 0, "PCMA": 8}
TELEPHONE_EVENT_PT = 101
OUTBOUND_ROUTE = "outbound"  # the route label (metrics) of every outbound call
_E164 = re.compile(r"^\+[1-9][0-9]{5,14}$")


class DialFailed(Exception):
    """Our INVITE did not lead to an answered call; `outcome` says how (errors classify
    themselves, `outcomes.classify`)."""

    def __init__(self, outcome: Outcome, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome


def outcome_of_status(status: int) -> Outcome:
    """The result of a final non-2xx answer to our INVITE."""
    if status in (486, 600):
        return Outcome.BUSY
    if status == 603:
        return Outcome.DECLINED
    if status in (408, 480, 487):
        return Outcome.NO_ANSWER
    return Outcome.OUTBOUND_FAILED


def target_uri(to: str, proxy: Peer) -> str:
    """A number goes to the trunk's proxy as `sip:+49...@proxy`; a SIP URI is used as given."""
    if _E164.match(to):
        host = f"[{proxy.host}]" if ":" in proxy.host else proxy.host
        return f"sip:{to}@{host}:{proxy.port}"
    return to


def proxy_peer(trunk: TrunkConfig) -> Peer:
    assert trunk.outbound_proxy is not None
    return hop_for_uri(parse_uri(trunk.outbound_proxy), Peer("127.0.0.1", 5060, Transport.UDP))


def build_offer(address: str, port: int, codecs: tuple[str, ...], session_id: int) -> bytes:
    """Our SDP offer (RFC 4566/3264): G.711 in preference order, telephone-event, 20 ms."""
    at = "IP6" if ipaddress.ip_address(address).version == 6 else "IP4"
    pts = [str(_STATIC_PT[c]) for c in codecs] + [str(TELEPHONE_EVENT_PT)]
    lines = [
        "v=0", f"o=orga-sip-gateway {session_id} 1 IN {at} {address}", "s=-",
        f"c=IN {at} {address}", "t=0 0", f"m=audio {port} RTP/AVP {' '.join(pts)}",
        *(f"a=rtpmap:{_STATIC_PT[c]} {c}/8000" for c in codecs),
        f"a=rtpmap:{TELEPHONE_EVENT_PT} telephone-event/8000",
        f"a=fmtp:{TELEPHONE_EVENT_PT} 0-15", "a=ptime:20", "a=sendrecv",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def _before_answer() -> MediaParams:
    # Until the answer we know nothing of the far end: send nothing, and keep the inactivity
    # watchdog quiet; the answer replaces these as a whole.
    return MediaParams("0.0.0.0", 9, "PCMU", 0, 8000, 20, TELEPHONE_EVENT_PT,
                       Direction.INACTIVE, on_hold=True)


class OutboundCall(Call):
    """Create from an `OutboundRequest`; `await run()`. `bind(call, handle)` tells the
    registry the SIP handle once the INVITE is out (events are dispatched by it)."""

    def __init__(self, ctx: CallContext, request: OutboundRequest, trunk: TrunkConfig,
                 placeholder: CallHandle, bind: Any) -> None:
        self.request = request
        self._trunk_cfg = trunk
        self._proxy = proxy_peer(trunk)
        host = ctx.advertised_address
        host = f"[{host}]" if ":" in host else host
        caller = request.from_user or trunk.from_user or "orga-sip-gateway"
        route = Route(match=OUTBOUND_ROUTE, trunk=trunk.name, model=request.model,
                      voice=request.voice, temperature=request.temperature,
                      instructions=request.instructions)
        self._init(ctx, placeholder, route, trunk.name, call_id="", caller=caller,
                   callee=request.to, local_uri=f"sip:{caller}@{host}", direction="outbound")
        self._bind = bind
        self._ringing = False
        self._callee_sdp: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    # --- SIP events of our INVITE --------------------------------------------------------------
    def sip_event(self, event: object) -> None:
        if isinstance(event, ProvisionalReceived):
            self._ringing = True
        elif isinstance(event, CallAnswered):
            if not self._callee_sdp.done():
                if event.sdp:
                    self._callee_sdp.set_result(event.sdp)
                else:
                    self._callee_sdp.set_exception(DialFailed(
                        Outcome.OUTBOUND_FAILED, "the 2xx carried no SDP answer"))
        elif isinstance(event, CallFailed):
            self._sip_done = True  # the INVITE transaction is over: no CANCEL owed
            self._end(outcome_of_status(event.status))
            self.log.info("outbound call failed: %d %s", event.status, event.reason)
        elif isinstance(event, DialogEnded) and not self._answered:
            self._sip_done = True
            self._end(Outcome.NO_ANSWER if event.reason is SipEndReason.TIMEOUT
                      else Outcome.OUTBOUND_FAILED)
        else:
            super().sip_event(event)

    # --- setup: dial, set up Orga meanwhile, bridge on the answer -----------------------------
    async def _setup_phase(self) -> Outcome | None:
        setup = self._tasks.create_task(self._setup_failure(), name="outbound setup")
        waiting: set[asyncio.Future[Any]] = {setup, self._stop}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not setup.done():  # the callee refused, the API hung up, or shutdown
            setup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await setup
            return self._stop.result()
        failure = setup.result()
        if failure is None:
            return None
        outcome = classify(failure)
        self.log.log(outcome.disposition.log_level, "outbound call not connected (%s): %s",
                     outcome.result, failure)
        return outcome

    async def _setup(self) -> None:
        cfg = self.ctx.config
        step = SetupSteps(self._clock, self.ctx.metrics, self.record)
        if self.ctx.mcp is not None:
            self._grant = self.ctx.mcp.grant(self)
        rtp = await open_from_pool(
            self.ctx.ports, cfg.rtp.bind, _before_answer(),
            inactivity_timeout_s=cfg.rtp.inactivity_timeout_s,
            max_packet_rate=cfg.security.rtp_max_packets_per_second, clock=self._clock,
            on_dtmf=self.control.on_dtmf, on_timeout=lambda: self._end(Outcome.RTP_TIMEOUT),
            tasks=self._tasks)
        self._rtp, self._port = rtp, rtp.local_address[1]
        offer = build_offer(self.ctx.advertised_address, self._port, cfg.rtp.codecs,
                            self._session_id)
        target = target_uri(self.request.to, self._proxy)
        trunk = self._trunk_cfg
        credentials = ((trunk.outbound_username, trunk.outbound_password.reveal())
                       if trunk.outbound_username and trunk.outbound_password else None)
        handle, self.call_id = self.ctx.signalling.invite(
            target, offer, from_uri=f"<{self.local_uri}>", peer=self._proxy,
            credentials=credentials)
        self.log = self.log.bind(call_id=self.call_id)
        self._bind(self, handle)
        self.log.info("dialling %s via trunk %s", self.request.to, self.trunk)
        self._track = CallerAudioTrack(rtp, self._clock, meter=self._meter, opus=True)
        # The AI's audio goes from the receiver straight into the pump (aiortc_patches).
        self._pump = AiAudioPump(rtp, self._clock, meter=self._meter)
        step.done("media")
        orga = self._tasks.create_task(self._open_orga(), name="outbound orga setup")
        try:
            sdp = await self._await_answer(orga)
            params, _ = negotiate(parse_offer(sdp.decode("utf-8", "replace")), cfg.rtp.codecs,
                                  self.ctx.advertised_address, self._port, self._session_id, 1)
            rtp.update(params)
            # Answered: from here a BYE ends it, whatever happens to the AI side.
            self._answered = True
            self.answered_at = self._clock.now()
            async with asyncio.timeout(cfg.orga.setup_timeout_s):
                remote = await orga
        finally:
            if not orga.done():
                orga.cancel()
        self._pump.start(remote, self._tasks)
        self.ctx.metrics.call_setup(self.answered_at - self.started_at)
        self.ctx.metrics.add_conversation(self.conversation_id or "", self.route_label, self.stats)
        self.log.info("outbound call to %s answered after %.0f ms (trunk %s)", self.callee,
                      (self.answered_at - self.started_at) * 1000, self.trunk)

    async def _await_answer(self, orga: asyncio.Task[Any]) -> bytes:
        """The callee's SDP answer; the Orga setup failing or the ring timeout end it first."""
        deadline = self._clock.now() + self.request.ring_timeout_s
        while True:
            waiting: set[asyncio.Future[Any]] = {self._callee_sdp}
            if not orga.done():
                waiting.add(orga)
            timeout = deadline - self._clock.now()
            done, _ = await asyncio.wait(waiting, timeout=max(0.0, timeout),
                                         return_when=asyncio.FIRST_COMPLETED)
            if self._callee_sdp in done:
                return self._callee_sdp.result()
            if orga in done and orga.exception() is not None:
                raise orga.exception()  # type: ignore[misc]
            if not done:
                raise DialFailed(Outcome.NO_ANSWER,
                                 f"no answer within {self.request.ring_timeout_s:g} s")

    async def _open_orga(self) -> Any:
        """The Orga session while the phone rings; returns the AI's audio track."""
        async with asyncio.timeout(self.ctx.config.orga.setup_timeout_s):
            self._session = await open_session(self.ctx.api, self._orga_peer,
                                               self._session_params())
            for name, seconds in self._session.timings.items():
                if name != "total":
                    self.ctx.metrics.setup_step(name, seconds)
            self.conversation_id = self._session.conversation_id
            self.log = self.log.bind(conversation_id=self.conversation_id)
            return await self._session.peer.remote_audio

    def _end_dialog(self) -> None:
        """BYE once answered; before that CANCEL (our INVITE is still pending)."""
        if self._sip_done:
            return
        if self._answered or self.handle > 0:
            self.ctx.signalling.hang_up(self.handle)
        self._sip_done = True

    @property
    def state(self) -> str:
        if self._stop.done():
            return "ending"
        if self._answered:
            return "answered"
        return "ringing" if self._ringing else "dialing"

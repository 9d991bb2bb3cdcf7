"""One phone call's life: one SIP dialog, one RTP session and one Orga peer, joined here only.

Setup (issue 6 item 1): 180 Ringing at once, then — while the phone rings — SDP negotiation, an
RTP port, the Orga session (client-secrets, ice-config, offer, /calls, ICE+DTLS, data channel),
all inside `orga.setup_timeout_s`; then 200 OK with our SDP and audio both ways. Each step is
timed into the setup histograms.

Teardown happens once, in one place and one order, whatever ended the call (caller BYE or
CANCEL, Orga ending the session, RTP inactivity, max duration, a missing ACK, drain or
shutdown): stop media → close the peer → BYE or final response → release the port → record.
Every way the call ends is an `Outcome` (`outcomes.py`): failures before the answer classify
themselves into the final response and the metric result, and every refusal's headers come from
`outcomes.response_headers`. The call owns every task it starts; nothing of it outlives `run()`.

Its other jobs live next door, as parts the call owns: `call_dialog.py` (the SIP events of its
dialog: BYE, re-INVITE, INFO, NOTIFY), `call_control.py` (`CallControl`: hang-up, transfer and
DTMF requests from the operator API, the agent's tools and DTMF), `call_report.py`
(`CallReport`: metrics, the per-conversation series, the call record, the operator's views) and
`fallback.py` (when Orga cannot take the call).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from gateway import call_dialog, fallback
from gateway.aiortc_patches import tune_receiver
from gateway.call_control import CallControl
from gateway.call_report import CallReport, SetupSteps
from gateway.clock import Clock
from gateway.config import Config, Route
from gateway.control.actions import Actor
from gateway.control.transfer import Transfer
from gateway.logs import ContextAdapter, call_logger
from gateway.media.downlink import AiAudioPump
from gateway.media.ports import PortPool
from gateway.media.rtp_session import RtpSession, open_from_pool
from gateway.media.uplink import CallerAudioTrack
from gateway.media.voice import TurnLatencyMeter
from gateway.metrics import ConversationStats, Metrics
from gateway.orga.api import OrgaApi
from gateway.orga.peer import OrgaPeer
from gateway.orga.session import OrgaSession, open_session
from gateway.orga.settings import McpServerParams, PeerSettings, SessionParams, session_params
from gateway.outcomes import Outcome, classify, response_headers, sip_warning
from gateway.records.record import NULL_SINK, CallRecord, RecordSink
from gateway.records.recording import CallRecording, Recorder
from gateway.sdp import MediaParams, negotiate, parse_offer
from gateway.sip.address import Peer
from gateway.sip.events import CallHandle, InviteReceived, RequestHandle
from gateway.sip.uri import SipUri

if TYPE_CHECKING:
    from gateway.control.mcp_tools import McpGrant, McpTools

log = logging.getLogger(__name__)

MCP_ALIAS = "phone"  # how the agent's tool server is named in params.mcp_server


class CallSignalling(Protocol):
    """The SIP commands a call gives; the app binds them to the endpoint, time and sockets."""

    def ring(self, call: CallHandle) -> None: ...
    def progress(self, call: CallHandle, sdp: bytes) -> None: ...  # 183 + SDP: early media
    def answer(self, call: CallHandle, sdp: bytes) -> None: ...
    def reject(self, call: CallHandle, status: int, *, reason: str | None = None,
               headers: Iterable[tuple[str, str]] = ()) -> None: ...
    def hang_up(self, call: CallHandle) -> None: ...
    def answer_offer(self, call: CallHandle, sdp: bytes) -> None: ...
    def reject_offer(self, call: CallHandle, status: int, *,
                     headers: Iterable[tuple[str, str]] = ()) -> None: ...
    def send_request(self, call: CallHandle, method: str, *,
                     headers: Iterable[tuple[str, str]] = ()) -> RequestHandle: ...
    def invite(self, target: str, sdp: bytes, *, from_uri: str, peer: Peer,
               credentials: tuple[str, str] | None = None) -> tuple[CallHandle, str]: ...


@dataclass(frozen=True, slots=True)
class CallContext:
    """What every call shares; built once by `app.py`."""

    config: Config
    metrics: Metrics
    ports: PortPool
    api: OrgaApi
    signalling: CallSignalling
    peer_settings: PeerSettings
    advertised_address: str  # the address our SDP answer names (public_address or RTP bind)
    clock: Clock  # the loop clock (gateway/clock.py): every time a call reads comes from it
    records: RecordSink = NULL_SINK  # the webhook sender when [webhooks] is configured
    recorder: Recorder | None = None  # when a route has record = true
    mcp: McpTools | None = None  # the agent's tool server, when [mcp] public_url is set


# Setup failures of the Orga leg, which a route's `on_orga_failure` may turn into a redirect.
ORGA_FAILURES = frozenset({Outcome.ORGA_AUTH, Outcome.ORGA_INVALID, Outcome.ORGA_UNAVAILABLE,
                           Outcome.SETUP_TIMEOUT})

def callee_of(invite: InviteReceived) -> str:
    """The dialed number: the request URI's user part ("" when there is none)."""
    uri = invite.request.uri
    return (uri.user_unescaped or "") if isinstance(uri, SipUri) else ""


def caller_of(invite: InviteReceived) -> str:
    """The caller's number: the From URI's user part ("" when there is none)."""
    from_uri = invite.request.from_.sip_uri
    return (from_uri.user_unescaped or "") if from_uri is not None else ""


class Call:
    """Create from an `InviteReceived`, then `await run()`; feed SIP events with `sip_event`."""

    def __init__(
        self, ctx: CallContext, invite: InviteReceived, route: Route, trunk: str
    ) -> None:
        to_uri = invite.request.to.sip_uri
        self.invite = invite
        self._init(
            ctx, invite.call, route, trunk, call_id=invite.request.call_id,
            caller=caller_of(invite), callee=callee_of(invite),
            # Who we are in this dialog (Referred-By): the address the caller dialled.
            local_uri=str(to_uri) if to_uri is not None else f"sip:{ctx.advertised_address}",
        )

    def _init(self, ctx: CallContext, handle: CallHandle, route: Route, trunk: str, *,
              call_id: str, caller: str, callee: str, local_uri: str,
              direction: str = "inbound") -> None:
        """The state every call has, whichever side placed it (`outbound.py` too)."""
        self.ctx = ctx
        self.handle = handle
        self.route = route
        self.route_label = route.label
        self.trunk = trunk
        self.call_id = call_id
        self.caller = caller
        self.callee = callee
        self.local_uri = local_uri
        self.conversation_id: str | None = None
        # The id the operator API and logs use: URL-safe, unguessable, unrelated to Call-ID.
        self.control_id = secrets.token_urlsafe(12)
        self.direction = direction
        self.started_wall = time.time()
        # `call_logger` puts the ids in the record's `ctx`, which the daemon's formatter prints
        # (`call_id=... conversation_id=...`); a plain LoggerAdapter's extra would be dropped.
        self.log: ContextAdapter = call_logger(log, self.call_id)
        loop = asyncio.get_running_loop()
        self._clock = ctx.clock
        self.started_at = self._clock.now()
        self.answered_at: float | None = None
        self._stop: asyncio.Future[Outcome] = loop.create_future()
        self._sip_done = False  # the dialog is over on the SIP side (no BYE/final owed)
        self._answered = False
        self._port: int | None = None
        self._rtp: RtpSession | None = None
        self._track: CallerAudioTrack | None = None
        self._session: OrgaSession | None = None
        self._pump: AiAudioPump | None = None
        self._recording: CallRecording | None = None
        self.record = CallRecord(ctx.records, sip_call_id=self.call_id, direction=direction,
                                 trunk=trunk, route=self.route_label, caller=self.caller,
                                 callee=self.callee, now=self.started_at)
        self._sdp_version = 0
        self._tasks: asyncio.TaskGroup  # set by run(): owns every task of this call
        # How the call ended, once known; before the answer it is also the final response owed,
        # with the Warning of the failure that caused it (an SDP error's).
        self._outcome: Outcome | None = None
        self._warning: tuple[int, str] | None = None
        self._extra_headers: list[tuple[str, str]] = []  # the fallback's Contact
        self._answer_sdp: str | None = None  # our SDP answer, once media is open
        self._session_id = random.randrange(1, 2**31)
        self._grant: McpGrant | None = None  # the agent's tools (gateway/control/mcp_tools.py)
        self.control = CallControl(self)  # hang-up, transfer, DTMF requests (call_control.py)
        self.report = CallReport(self)  # metrics, conversation series, record (call_report.py)
        self._meter = TurnLatencyMeter(on_turn=self.report.turn)

    # --- inputs -------------------------------------------------------------------------------
    def sip_event(self, event: object) -> None:
        """Events of this call's dialog, dispatched by the registry (`call_dialog.py`)."""
        call_dialog.dispatch(self, event)

    def hang_up(self, outcome: Outcome) -> None:
        """End the call from our side (drain, shutdown)."""
        self._end(outcome)

    # --- control requests (operator API, agent tools, DTMF): `call_control.py` decides ------
    def request_hang_up(self, actor: Actor, reason: str | None = None) -> None:
        self.control.request_hang_up(actor, reason)

    def request_transfer(self, target: str, actor: Actor) -> Transfer:
        return self.control.request_transfer(target, actor)

    async def transfer(self, target: str, actor: Actor) -> str:
        return await self.control.transfer_and_wait(target, actor)

    def transfer_targets(self) -> list[str]:
        return self.control.transfer_targets()

    def request_dtmf(self, digits: str) -> None:
        self.control.request_dtmf(digits)

    def dtmf_received(self) -> str:
        return self.control.dtmf_received()

    def _end(self, outcome: Outcome) -> None:
        if not self._stop.done():
            self._stop.set_result(outcome)

    # --- the call -----------------------------------------------------------------------------
    async def run(self) -> None:
        """The whole call. Every task it starts (setup, RTP watchdog, AI audio pump) is a child
        of one `asyncio.TaskGroup`, so when `run()` returns none of them is left; a child that
        crashes ends the call as `internal_error` (500 before the answer, BYE after it)."""
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                try:
                    failed = await self._setup_phase()
                    self._outcome = failed if failed is not None else await self._talk_phase()
                except Exception:
                    self.log.exception("call failed unexpectedly")
                    self._outcome = Outcome.INTERNAL
                except asyncio.CancelledError:
                    # Our task cancelled (shutdown; no response is sent then), or the group
                    # cancelling us because a child failed (its error is raised at the exit).
                    self._outcome = self._outcome or Outcome.SHUTDOWN
                    raise
                finally:
                    await _unstoppable(self._teardown())  # stops every child it started
        except* Exception:
            self.log.exception("a task of the call failed")
            self._outcome = Outcome.INTERNAL
            self._end_dialog()  # a 500 if the teardown (seeing a cancel) owed no response yet
        finally:
            self.report.finish(self._outcome or Outcome.INTERNAL)

    async def _setup_phase(self) -> Outcome | None:
        """Run the setup; return None once answered, else the outcome (response is queued)."""
        self.ctx.signalling.ring(self.handle)
        self.record.ringing(self._clock.now())
        setup = self._tasks.create_task(self._setup_failure(), name=f"setup {self.call_id}")
        waiting: set[asyncio.Future[Any]] = {setup, self._stop}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not setup.done():  # CANCEL, BYE or shutdown while setting up: abort all of it
            setup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await setup
            if self._sip_done:
                self.log.info("caller cancelled during setup")
                return Outcome.CANCELLED
            asked = self._stop.result() if self._stop.done() else None
            return asked if asked in (Outcome.API_HANGUP, Outcome.AGENT_HANGUP) else (
                Outcome.DRAINING)
        failure = setup.result()
        if failure is None:
            return None
        outcome = classify(failure)
        d = outcome.disposition
        self.log.log(d.log_level, "call rejected with %d (%s): %s", d.status, d.result, failure)
        self._warning = sip_warning(failure)
        target = self.route.transfer_target(self.route.on_orga_failure)
        if outcome in ORGA_FAILURES and target is not None:
            return await fallback.redirect(self, target)
        return outcome

    async def _setup_failure(self) -> Exception | None:
        """The setup as a task of the call's group. Its failure is a call outcome (a 503 for
        Orga being down), not a crash of the group, so it is returned, not raised."""
        try:
            await self._setup()
        except Exception as exc:
            return exc
        return None

    async def _setup(self) -> None:
        cfg = self.ctx.config
        step = SetupSteps(self._clock, self.ctx.metrics, self.record)
        if self.ctx.mcp is not None:
            self._grant = self.ctx.mcp.grant(self)
        async with asyncio.timeout(cfg.orga.setup_timeout_s):
            offer = parse_offer((self.invite.sdp or b"").decode("utf-8", "replace"))
            rtp, answer = await self._open_media(offer)
            self._answer_sdp = answer
            # Opus encoded here, on the loop (the Orga peer offers Opus only): half the CPU
            # of aiortc's resample-and-encode thread hand-off per 20 ms (bench/media_path.py).
            self._track = CallerAudioTrack(rtp, self._clock, meter=self._meter, opus=True)
            # The AI's audio goes from the receiver straight into the pump (aiortc_patches).
            self._pump = pump = AiAudioPump(rtp, self._clock, meter=self._meter)
            step.done("media")
            self._session = await open_session(self.ctx.api, self._orga_peer,
                                               self._session_params())
            for name, seconds in self._session.timings.items():
                if name != "total":
                    self.ctx.metrics.setup_step(name, seconds)
                    self.record.step(name, seconds)
            self.conversation_id = self._session.conversation_id
            self.log = self.log.bind(conversation_id=self.conversation_id)
            remote = await self._session.peer.remote_audio
        self.ctx.signalling.answer(self.handle, answer.encode())
        self._answered = True
        self.answered_at = self._clock.now()
        self.ctx.metrics.call_setup(self.answered_at - self.started_at)
        self.record.answered(self.answered_at, self.conversation_id)
        if self.route.record and self.ctx.recorder is not None:
            rtp.tap = self._recording = self.ctx.recorder.open(self.record.call_id,
                                                               self.answered_at)
            pump.play_first(self.ctx.recorder.announcement)  # "this call is recorded"
        pump.start(remote, self._tasks)
        self.ctx.metrics.add_conversation(self.conversation_id or "", self.route_label, self.stats)
        self.log.info(
            "call answered from %s to %s in %.0f ms (route %s, trunk %s)", self.caller,
            self.callee, (self.answered_at - self.started_at) * 1000, self.route_label, self.trunk
        )

    async def _talk_phase(self) -> Outcome:
        assert self._session is not None and self._rtp is not None and self._pump is not None
        max_s = self.ctx.config.limits.max_call_duration_s
        waiters: dict[asyncio.Future[Any], Callable[[], Outcome]] = {
            self._stop: self._stop.result,
            self._session.peer.ended: lambda: (
                Outcome.ORGA_LOST if self._session is not None
                and self._session.peer.ended.result().lost else Outcome.ORGA_ENDED),
            self._pump.track_ended: lambda: Outcome.ORGA_ENDED,
        }
        done, _ = await asyncio.wait(waiters, timeout=max_s, return_when=asyncio.FIRST_COMPLETED)
        if not done:
            return Outcome.MAX_DURATION
        first = next(f for f in waiters if f in done)
        outcome = waiters[first]()
        if outcome is Outcome.ORGA_ENDED:
            self.log.info("Orga session ended (%s)", _describe(first))
        elif outcome is Outcome.ORGA_LOST:
            self.log.warning("Orga session lost (%s)", _describe(first))
            if self.route.on_orga_failure != "reject":
                outcome = await fallback.transfer_after_loss(self)
        return outcome

    async def _teardown(self) -> None:
        # 0. the agent's tools and pending control requests die first
        if self._grant is not None:
            self._grant.revoke()
        self.control.close()
        # 1. stop media
        if self._pump is not None:
            await _quietly(self._pump.stop())
        if self._track is not None:
            self._track.stop()
        # 2. close the peer
        if self._session is not None:
            await _quietly(self._session.peer.close())
        # 3. BYE for an answered call, the final response for one that failed in setup
        self._end_dialog()
        # 4. release the port
        if self._rtp is not None:
            await _quietly(self._rtp.close())
        if self._port is not None:
            self.ctx.ports.release(self._port)
            self._port = None
        # 5. finish the recording (encoded off the loop) so the record can name it
        if self._recording is not None:
            self.record.recording(await self._recording.close())

    def _end_dialog(self) -> None:
        """BYE for an answered call, the final response for one that ended in setup; nothing
        when the dialog is already over, or at shutdown (an outcome without a status)."""
        if self._sip_done:
            return
        if self._answered:
            self.ctx.signalling.hang_up(self.handle)
        elif self._outcome is not None and self._outcome.disposition.status is not None:
            self._refuse(self._outcome, self._warning)
        else:
            return
        self._sip_done = True

    # --- helpers ------------------------------------------------------------------------------
    async def _open_media(self, offer: Any) -> tuple[RtpSession, str]:
        """Bind an RTP port from the pool for the negotiated media; return it and our answer.

        The negotiated `MediaParams` do not depend on our port, only the answer SDP does, so
        the answer is built once the port is bound (`open_from_pool` skips ports another
        process holds).
        """
        cfg = self.ctx.config
        params, _ = negotiate(offer, cfg.rtp.codecs, self.ctx.advertised_address, 0,
                              self._session_id, self._sdp_version, srtp=self._srtp_policy())
        rtp = await open_from_pool(
            self.ctx.ports, cfg.rtp.bind, params,
            inactivity_timeout_s=cfg.rtp.inactivity_timeout_s,
            max_packet_rate=cfg.security.rtp_max_packets_per_second,
            clock=self._clock,
            on_dtmf=self.control.on_dtmf,
            on_timeout=lambda: self._end(Outcome.RTP_TIMEOUT),
            tasks=self._tasks,
            on_srtp_failure=self.ctx.metrics.srtp_failure,
        )
        self._rtp, self._port = rtp, rtp.local_address[1]
        _, answer = self._negotiate(offer, params)  # same keys: the session already has them
        return rtp, answer

    def _negotiate(self, offer: Any, current: MediaParams) -> tuple[MediaParams, str]:
        """Our answer on our port; SRTP keys stay those of `current` unless the peer re-keyed."""
        assert self._port is not None
        self._sdp_version += 1
        return negotiate(offer, self.ctx.config.rtp.codecs, self.ctx.advertised_address,
                         self._port, self._session_id, self._sdp_version,
                         srtp=self._srtp_policy(), previous_srtp=current.srtp)

    def _srtp_policy(self) -> str:
        """The trunk's `srtp` setting ("off", "optional", "required")."""
        trunk = next((t for t in self.ctx.config.trunks if t.name == self.trunk), None)
        return trunk.srtp if trunk is not None else "optional"

    def _orga_peer(self, ice_servers: list[Any]) -> OrgaPeer:
        """This call's Orga peer (`open_session`'s factory): the caller track's Opus packets
        go out direct and the AI's audio goes from the receiver straight into the pump
        (aiortc_patches); the report hears the session's events from before the offer, so a
        greeting sent when the data channel opens is not lost."""
        track, pump = self._track, self._pump
        assert track is not None and pump is not None
        peer = OrgaPeer(track, self.ctx.peer_settings, self._session_params(), ice_servers,
                        receiver_tuner=lambda r: tune_receiver(
                            r, deliver=pump.feed_pcm, on_loss=pump.lost),
                        encoded_track=True)
        peer.add_event_listener(self.report.orga_event)
        return peer

    def _session_params(self) -> SessionParams:
        params = session_params(self.ctx.config.orga, self.route, caller=self.caller,
                                callee=self.callee, call_id=self.call_id)
        if self._grant is None:
            return params
        return replace(params, mcp_server=McpServerParams(self.control_id, self._grant.url,
                                                          MCP_ALIAS))

    def _refuse(self, outcome: Outcome, warning: tuple[int, str] | None) -> None:
        """The final response of a call that failed before the answer."""
        d = outcome.disposition
        assert d.status is not None, outcome
        headers = response_headers(d, agent=self.ctx.advertised_address, warning=warning)
        self.ctx.signalling.reject(self.handle, d.status, reason=d.reason,
                                   headers=[*headers, *self._extra_headers])

    @property
    def state(self) -> str:
        if self._stop.done():
            return "ending"
        return "answered" if self._answered else "ringing"

    def stats(self) -> ConversationStats:
        return self.report.stats()

    def info(self) -> dict[str, object]:
        """One call of the operator API (`GET /v1/calls/{id}`)."""
        return self.report.info()

    def describe(self) -> dict[str, object]:
        """One entry of `GET /calls`."""
        return self.report.describe()


def _describe(future: asyncio.Future[Any]) -> str:
    if future.cancelled() or future.exception() is not None:
        return "closed"
    result = future.result()
    return getattr(result, "value", str(result))


async def _unstoppable(coro: Coroutine[Any, Any, None]) -> None:
    """Run `coro` to its end even if our task is cancelled meanwhile (teardown at shutdown);
    the cancellation is passed on afterwards."""
    task = asyncio.ensure_future(coro)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


async def _quietly(awaitable: Awaitable[Any]) -> None:
    """Teardown steps must all run: log a failing one and go on."""
    try:
        await awaitable
    except Exception:
        log.exception("teardown step failed")

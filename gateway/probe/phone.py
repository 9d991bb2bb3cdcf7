"""The probe's phone: one outgoing call (UAC) on our SIP core, transports and RTP session.

`place_call(target, options)` resolves the target, binds a SIP transport (UDP or TCP) and an RTP
port on `local_ip`, sends an INVITE whose SDP offers G.711 (PCMU and PCMA, or just the one asked
for) plus telephone-event (RFC 4733) with ptime 20, and follows the call: provisional responses
(timed), the 2xx (the core ACKs it, RFC 3261 §13.2.2.4) or a failure. Once answered it talks
and listens (`media.py`) for `seconds`, hangs up with BYE (or notes the far end's BYE), and
returns a `ProbeReport`. The answer SDP is read with the gateway's own offer/answer code
(`sdp.negotiate` on the answer: the codec the far end chose, its address, and its direction
reversed into ours, RFC 3264 §6.1). Each call has its own endpoint and sockets, so many probes
run concurrently in one process or many.

Setup problems the caller must fix (a bad URI, an unresolvable host, an address we cannot bind)
raise `ProbeError`; everything that happens on the network ends up in the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path

from gateway import __version__
from gateway.clock import LoopClock
from gateway.media.rtp_session import RtpSession
from gateway.media.srtp import SrtpKey, SrtpParams, SrtpSuite
from gateway.media.voice import EnergyVad
from gateway.probe.audio import Pcm, WavError, read_wav, split_frames, spoken_phrase, write_wav
from gateway.probe.media import ProbeMedia
from gateway.probe.report import ProbeReport, Provisional
from gateway.sdp import Direction, MediaParams, SdpNegotiationError, negotiate, parse_offer
from gateway.sip.address import Peer, Transport
from gateway.sip.core import EndpointConfig
from gateway.sip.endpoint import SipEndpoint
from gateway.sip.errors import ParseError
from gateway.sip.events import (
    ByeCompleted,
    ByeReceived,
    CallAnswered,
    CallFailed,
    CallHandle,
    DialogEnded,
    Event,
    InviteReceived,
    ProvisionalReceived,
    ReinviteReceived,
    SipEndReason,
)
from gateway.sip.timers import DEFAULT_TIMERS, TimerSettings
from gateway.sip.uri import SipUri, parse_uri
from gateway.transport.driver import SipDriver
from gateway.transport.tcp import TcpTransport
from gateway.transport.tls import TlsTransport
from gateway.transport.tls_context import TlsConfigError, TlsContexts, TlsFiles
from gateway.transport.udp import UdpTransport

log = logging.getLogger(__name__)

CODECS = ("PCMU", "PCMA")
_STATIC_PT = {"PCMU": 0, "PCMA": 8}
TELEPHONE_EVENT_PT = 101


class ProbeError(Exception):
    """The probe cannot place the call at all: bad target or options, an unplayable WAV, an
    unresolvable host, an address it cannot bind."""


@dataclass(frozen=True, slots=True)
class ProbeOptions:
    transport: str | None = None  # "udp" | "tcp" | "tls"; None: the URI's ;transport=, else UDP
    play: Path | None = None  # a 16-bit WAV to say instead of the built-in phrase
    phrase: Pcm | None = field(default=None, compare=False)  # or 8 kHz s16 samples (library)
    record: Path | None = None  # write what we hear (8 kHz mono s16 WAV)
    seconds: float = 8.0  # from the answer to our BYE
    turns: int = 1  # say the phrase this many times, each after the previous reply
    codec: str | None = None  # offer only this codec; None: PCMU and PCMA
    local_ip: str | None = None  # None: the address the OS would use to reach the target
    answer_timeout_s: float = 30.0  # give up (CANCEL) if no final response by then
    from_user: str = "probe"
    timers: TimerSettings = DEFAULT_TIMERS
    srtp: bool = False  # offer RTP/SAVP with an SDES key and require SRTP in the answer
    ca_file: str | None = None  # TLS: the CA that signed the far end's certificate (None: system)

# The one suite the probe offers: every SDES implementation has it (RFC 4568 §6.2).
PROBE_SUITE = SrtpSuite.AES_CM_128_HMAC_SHA1_80


def build_offer(address: str, port: int, codecs: tuple[str, ...], session_id: int,
                srtp_key: SrtpKey | None = None) -> bytes:
    """Our SDP offer (RFC 4566/3264): G.711 in preference order, telephone-event, 20 ms; with
    `srtp_key`, RTP/SAVP and that key in one a=crypto line (RFC 4568)."""
    at = "IP6" if ipaddress.ip_address(address).version == 6 else "IP4"
    pts = [str(_STATIC_PT[c]) for c in codecs] + [str(TELEPHONE_EVENT_PT)]
    lines = [
        "v=0",
        f"o=probe {session_id} {session_id} IN {at} {address}",
        "s=orga-sip-gateway probe",
        f"c=IN {at} {address}",
        "t=0 0",
        f"m=audio {port} {'RTP/SAVP' if srtp_key else 'RTP/AVP'} {' '.join(pts)}",
        *(f"a=rtpmap:{_STATIC_PT[c]} {c}/8000" for c in codecs),
        f"a=rtpmap:{TELEPHONE_EVENT_PT} telephone-event/8000",
        f"a=fmtp:{TELEPHONE_EVENT_PT} 0-15",
        "a=ptime:20",
        "a=sendrecv",
    ]
    if srtp_key is not None:
        lines.append(f"a=crypto:1 {PROBE_SUITE.value} inline:{srtp_key.inline()}")
    return ("\r\n".join(lines) + "\r\n").encode()


def media_from_answer(
    sdp: bytes, codecs: tuple[str, ...], local_ip: str, local_port: int,
    srtp_key: SrtpKey | None = None,
) -> MediaParams:
    """The negotiated media from the far end's answer. Raises `SdpNegotiationError`.

    With `srtp_key` (ours, from the offer) the answer must accept SRTP: its a=crypto line is
    the far end's key, ours protects what we send."""
    params, _ = negotiate(
        parse_offer(sdp.decode("utf-8", "replace")), codecs, local_ip, local_port, 0, 0,
        srtp="required" if srtp_key is not None else "off",
    )
    if srtp_key is None or params.srtp is None:
        return params
    theirs = params.srtp
    if theirs.suite is not PROBE_SUITE or theirs.tag != 1:
        raise SdpNegotiationError(f"answer chose crypto {theirs.tag} {theirs.suite.value}, "
                                  f"not the offered 1 {PROBE_SUITE.value}", 306)
    return replace(params, srtp=SrtpParams(PROBE_SUITE, 1, srtp_key, theirs.remote))


def _placeholder_params() -> MediaParams:
    # Before the answer we know nothing about the far end: send nothing (hold address), and
    # keep the inactivity watchdog quiet (inactive); the answer replaces this as a whole.
    return MediaParams("0.0.0.0", 9, "PCMU", 0, 8000, 20, TELEPHONE_EVENT_PT,
                       Direction.INACTIVE, on_hold=True)


def _route_source(ip: str, port: int) -> str:
    """The local address the routing table picks for `ip` (a UDP connect sends no packet)."""
    family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect((ip, port))
        return str(sock.getsockname()[0])


def _source_audio(options: ProbeOptions) -> Pcm:
    if options.phrase is not None:
        return options.phrase
    if options.play is not None:
        return read_wav(options.play)
    return spoken_phrase()


async def place_call(target: str, options: ProbeOptions | None = None) -> ProbeReport:
    """Call `target` (a sip: URI), talk, listen, hang up; return what was measured."""
    options = options or ProbeOptions()
    phone = _Phone(target, options)
    try:
        await phone.open()
        return await phone.run()
    finally:
        await phone.close()


class _Phone:
    def __init__(self, target: str, options: ProbeOptions) -> None:
        self.target = target
        self.options = options
        self.loop = asyncio.get_running_loop()
        if options.turns < 1:
            raise ProbeError("turns must be at least 1")
        if options.codec is not None and options.codec.upper() not in CODECS:
            raise ProbeError(f"codec must be one of {', '.join(CODECS)}")
        self.codecs = (options.codec.upper(),) if options.codec else CODECS
        try:
            uri = parse_uri(target)
        except ParseError as exc:
            raise ProbeError(f"bad target {target!r}: {exc}") from exc
        if not isinstance(uri, SipUri) or uri.scheme != "sip":
            raise ProbeError(f"target must be a sip: URI, not {target!r}")
        self.uri = uri
        name = options.transport or uri.param("transport") or "udp"
        try:
            self.transport = Transport(name.upper())
        except ValueError as exc:
            raise ProbeError(f"unknown transport {name!r} (udp, tcp or tls)") from exc
        try:
            audio = _source_audio(options)
        except WavError as exc:
            raise ProbeError(str(exc)) from exc
        vad = EnergyVad()
        frames = split_frames(audio)
        self.media = ProbeMedia(frames, [vad.voiced(f) for f in frames],
                                record=options.record is not None, turns=options.turns)
        self.endpoint = SipEndpoint(EndpointConfig(
            user_agent=f"orga-sip-gateway-probe/{__version__}",
            contact_user=options.from_user,
            timers=options.timers,
            session_expires=None,  # probe calls are short: no RFC 4028 refreshes
        ))
        self.driver = SipDriver(self.endpoint, self._on_event, self.loop)
        self.sip: UdpTransport | TcpTransport | None = None
        self.srtp_key = SrtpKey.generate(PROBE_SUITE) if options.srtp else None
        self.rtp: RtpSession | None = None
        self.local_ip = ""
        self.peer: Peer | None = None
        self.offer = b""
        self.call: CallHandle | None = None
        # What happened, in loop time.
        self.invite_at = 0.0
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.provisional: list[Provisional] = []
        self.status: int | None = None
        self.reason: str | None = None
        self.error: str | None = None
        self.end_reason: SipEndReason | None = None
        self.remote_bye = False
        self.params: MediaParams | None = None
        self.answered = asyncio.Event()
        self.ended = asyncio.Event()
        self.bye_done = asyncio.Event()

    # ----------------------------------------------------------------------- setup

    async def open(self) -> None:
        host = self.uri.host.strip("[]")
        port = self.uri.port or (5061 if self.transport is Transport.TLS else 5060)
        kind = socket.SOCK_DGRAM if self.transport is Transport.UDP else socket.SOCK_STREAM
        try:
            infos = await self.loop.getaddrinfo(host, port, type=kind)
        except OSError as exc:
            raise ProbeError(f"cannot resolve {host}: {exc}") from exc
        # Prefer IPv4 when a name has both (most SIP deployments listen on IPv4 only).
        infos.sort(key=lambda info: info[0] != socket.AF_INET)
        ip = str(infos[0][4][0])
        self.peer = Peer(ip, port, self.transport)
        try:
            self.local_ip = self.options.local_ip or _route_source(ip, port)
        except OSError as exc:
            raise ProbeError(f"no route to {ip}: {exc}") from exc
        try:
            if self.transport is Transport.UDP:
                self.sip = await UdpTransport.start(self.driver, self.local_ip, 0)
            elif self.transport is Transport.TLS:
                self.sip = await TlsTransport.listen(self.driver, self._tls_contexts(),
                                                     self.local_ip, 0)
            else:
                self.sip = await TcpTransport.start(self.driver, self.local_ip, 0)
            self.rtp = await RtpSession.open(
                self.local_ip, 0, _placeholder_params(), clock=LoopClock(), jitter=self.media.tap,
                inactivity_timeout_s=self.options.seconds + 60.0,
            )
        except OSError as exc:
            raise ProbeError(f"cannot bind on {self.local_ip}: {exc}") from exc
        self.media.attach(self.rtp)
        self.offer = build_offer(
            self.local_ip, self.rtp.local_address[1], self.codecs, random.getrandbits(31),
            self.srtp_key,
        )

    def _tls_contexts(self) -> TlsContexts:
        """A client's TLS: the far end's certificate verified against `ca_file` (or the system
        store) and the target's name; no certificate of our own."""
        try:
            return TlsContexts(TlsFiles("", "", server_ca=self.options.ca_file),
                               lambda host: None)
        except TlsConfigError as exc:
            raise ProbeError(str(exc)) from exc

    async def close(self) -> None:
        if self.rtp is not None:
            await self.rtp.close()
        if isinstance(self.sip, TcpTransport):
            await self.sip.close()
        elif self.sip is not None:
            self.sip.close()
        self.driver.close()

    # ------------------------------------------------------------------------ call

    async def run(self) -> ProbeReport:
        assert self.peer is not None and self.rtp is not None
        log.info("calling %s via %s", self.target, self.peer)
        self.invite_at = self.loop.time()
        host = f"[{self.local_ip}]" if ":" in self.local_ip else self.local_ip
        from_uri = f"<sip:{self.options.from_user}@{host}>"
        peer = self.peer
        self.call = self.driver.run(lambda now: self.endpoint.invite(
            self.uri, now, sdp=self.offer, from_uri=from_uri, peer=peer,
        ))
        answered = asyncio.ensure_future(self.answered.wait())
        ended = asyncio.ensure_future(self.ended.wait())
        try:
            await asyncio.wait({answered, ended}, timeout=self.options.answer_timeout_s,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            answered.cancel()
            ended.cancel()
        if not self.answered.is_set() and not self.ended.is_set():
            self.error = f"no answer within {self.options.answer_timeout_s:g} s"
            self._hang_up()
        if self.answered.is_set() and self.params is not None and not self.ended.is_set():
            await self._talk()
        if self.answered.is_set() and self.options.record is not None:
            write_wav(self.options.record, self.media.recording())
        return self._report()

    async def _talk(self) -> None:
        media_task = asyncio.create_task(self.media.run(), name="probe-media")
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ended.wait(), self.options.seconds)
        finally:
            media_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await media_task
        if not self.ended.is_set():
            self._hang_up()
            # Keep the socket open until the BYE is answered (or a few retransmissions' worth)
            # so a lost BYE is retransmitted by the core rather than left to RTP timeouts.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.bye_done.wait(), 4 * self.options.timers.T1)

    def _hang_up(self) -> None:
        call = self.call
        if call is not None:
            self.driver.run(lambda now: self.endpoint.hang_up(call, now))

    # ---------------------------------------------------------------------- events

    def _on_event(self, event: Event) -> None:
        now = self.loop.time()
        if isinstance(event, ProvisionalReceived):
            log.info("%d %s", event.status, event.reason)
            self.provisional.append(Provisional(event.status, event.reason, now - self.invite_at))
            if event.sdp:
                self._apply_answer(event.sdp)  # early media: listen from now on
        elif isinstance(event, CallAnswered):
            self.answered_at = now
            self.status, self.reason = event.response.status, event.response.reason
            log.info("%d %s after %.3f s", self.status, self.reason, now - self.invite_at)
            if event.sdp is None:
                self._give_up("the 2xx carried no SDP answer")
            elif self._apply_answer(event.sdp):
                self.answered.set()
        elif isinstance(event, CallFailed):
            self.status, self.reason = event.status, event.reason
            log.info("call failed: %d %s", event.status, event.reason)
        elif isinstance(event, ByeReceived):
            self.remote_bye = True
            log.info("the far end hung up")
        elif isinstance(event, DialogEnded):
            self.ended_at = now
            # Its status may be our own (487 after our CANCEL): only responses set `status`.
            self.end_reason = event.reason
            self.ended.set()
        elif isinstance(event, ByeCompleted):
            self.bye_done.set()  # our BYE has its final response: the sockets may close
        elif isinstance(event, ReinviteReceived):
            self._reinvite(event)
        elif isinstance(event, InviteReceived):
            call = event.call
            self.driver.run(lambda now: self.endpoint.reject(call, 603, now))

    def _apply_answer(self, sdp: bytes) -> bool:
        assert self.rtp is not None
        try:
            params = media_from_answer(sdp, self.codecs, self.local_ip,
                                       self.rtp.local_address[1], self.srtp_key)
        except SdpNegotiationError as exc:
            self._give_up(f"unusable SDP answer: {exc.warning}")
            return False
        self.params = params
        self.rtp.update(params)
        return True

    def _give_up(self, why: str) -> None:
        self.error = why
        log.warning("%s; hanging up", why)
        self._hang_up()

    def _reinvite(self, event: ReinviteReceived) -> None:
        """A re-INVITE/UPDATE: answer its offer as the gateway would, or re-offer ours."""
        assert self.rtp is not None
        call = event.call
        if event.sdp is None:
            offer = self.offer
            self.driver.run(lambda now: self.endpoint.answer_offer(call, offer, now))
            return
        try:
            params, answer = negotiate(
                parse_offer(event.sdp.decode("utf-8", "replace")), self.codecs, self.local_ip,
                self.rtp.local_address[1], 1, 2,
                srtp="required" if self.srtp_key is not None else "off",
                previous_srtp=self.params.srtp if self.params is not None else None,
            )
        except SdpNegotiationError:
            self.driver.run(lambda now: self.endpoint.reject_offer(call, 488, now))
            return
        self.params = params
        self.rtp.update(params)
        body = answer.encode()
        self.driver.run(lambda now: self.endpoint.answer_offer(call, body, now))

    # ---------------------------------------------------------------------- report

    def _report(self) -> ProbeReport:
        base = ProbeReport(
            target=self.target,
            transport=self.transport.value.lower(),
            connected=False,
            status=self.status,
            reason=self.reason,
            error=self.error,
            provisional=tuple(self.provisional),
            local_sip=f"{self.local_ip}:{self.sip.local_addr[1]}" if self.sip else None,
        )
        if not self.answered.is_set() or self.rtp is None or self.answered_at is None:
            return base
        result = self.media.result()
        stats = self.rtp.stats
        first = result.first_audio_at
        ended_at = self.ended_at if self.ended_at is not None else self.loop.time()
        if self.remote_bye:
            ended_by = "remote"
        elif self.end_reason in (SipEndReason.LOCAL_BYE, None):
            ended_by = "probe"
        else:
            ended_by = self.end_reason.value
        remote = self.rtp.latched or self.rtp.remote
        return replace(
            base,
            connected=True,
            codec=self.params.codec if self.params else None,
            srtp=self.params.srtp.suite.value if self.params and self.params.srtp else None,
            setup_s=self.answered_at - self.invite_at,
            first_audio_s=None if first is None else max(0.0, first - self.answered_at),
            turn_latency_s=result.turn_latency_s,
            turn_latencies_s=result.turn_latencies_s,
            turns=len(result.turns),
            turns_answered=result.turns_answered,
            reply_heard=result.reply_heard,
            reply_speech_s=result.reply_speech_s,
            heard_hz=result.heard_hz,
            heard_dbfs=result.heard_dbfs,
            spoke_s=result.spoke_s,
            packets_sent=stats.sent.packets,
            packets_received=stats.received.packets,
            packets_lost=stats.received.lost,
            jitter_ms=stats.received.jitter_ms,
            max_gap_s=result.max_gap_s,
            onset_delays_s=result.onset_delays_s,
            duration_s=ended_at - self.answered_at,
            ended_by=ended_by,
            recorded=str(self.options.record) if self.options.record else None,
            local_rtp=f"{self.local_ip}:{self.rtp.local_address[1]}",
            remote_rtp=f"{remote[0]}:{remote[1]}",
        )

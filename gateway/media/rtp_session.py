"""One call's RTP endpoint on the phone leg: UDP socket, symmetric RTP, stats, inactivity.

Owns (RFC 3550 §6.4.1 / A.1 / A.8, RFC 4961 symmetric RTP, RFC 4733 routing):
- one asyncio UDP endpoint bound to the call's local address/port;
- latching: the source of the first valid packet becomes the peer (logged when it differs
  from the SDP, the usual NAT case); later packets from other sources are dropped and counted;
  a re-INVITE with a new address/port un-latches so the new source can be learnt;
- SSRC changes (re-INVITE, SBC failover) reset sequence state without a glitch (the jitter
  buffer keeps playing what it holds);
- routing: our G.711 payload type → jitter buffer, telephone-event → DTMF receiver (never the
  decoder), anything else dropped and counted;
- a per-call packet-rate cap (token bucket) so a flood into one port cannot starve the loop;
- counters per direction and the RFC 3550 interarrival jitter;
- SRTP (SDES keys in `MediaParams.srtp`): packets are unprotected before anything else reads
  them and protected last before `sendto` (`media/srtp.py`); a packet that fails is dropped and
  counted, and only an authenticated packet can latch the peer address;
- an inactivity timeout (no RTP for `inactivity_timeout_s`, suspended while on hold) that sets
  `timed_out` and calls `on_timeout`, which the call turns into a BYE;
- an optional `tap` that sees each audio packet received and sent (call recording).

Time comes from the injected `Clock` (the loop clock; tests step a fake one); the watchdog task
only polls `check_inactivity`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from gateway.clock import Clock
from gateway.media.dtmf import DtmfReceived, TelephoneEventReceiver
from gateway.media.jitter import JitterBuffer
from gateway.media.ports import PortPool
from gateway.media.rtp import (
    SEQ_MOD,
    RtpParseError,
    RtpSenderState,
    SequenceExtender,
    build_rtp,
    is_rtcp,
    parse_rtp,
)
from gateway.media.srtp import SrtpContext
from gateway.sdp import MediaParams

logger = logging.getLogger(__name__)

Address = tuple[str, int]


@dataclass(slots=True)
class ReceiveStats:
    packets: int = 0
    bytes: int = 0
    lost: int = 0  # RFC 3550 A.3: expected - received, over all SSRCs of the call
    late: int = 0
    duplicates: int = 0
    jitter_ms: float = 0.0  # RFC 3550 A.8 interarrival jitter of the current SSRC
    foreign_dropped: int = 0
    rate_dropped: int = 0
    invalid: int = 0
    unknown_payload_type: int = 0
    dtmf_packets: int = 0
    ssrc_changes: int = 0
    audio_seconds: float = 0.0  # caller audio received (payload samples / clock rate)
    srtp_failures: int = 0  # failed SRTP authentication, replay or parsing (dropped)


@dataclass(slots=True)
class SendStats:
    packets: int = 0
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class RtpStats:
    received: ReceiveStats
    sent: SendStats


class _SsrcState:
    """Loss and jitter bookkeeping for one incoming SSRC."""

    __slots__ = ("base", "ext", "jitter", "received", "transit")

    def __init__(self) -> None:
        self.ext = SequenceExtender()
        self.base: int | None = None
        self.received = 0
        self.transit: int | None = None
        self.jitter = 0.0

    def lost(self) -> int:
        if self.base is None or self.ext.highest is None:
            return 0
        return max(0, self.ext.highest - self.base + 1 - self.received)


class RtpTap(Protocol):
    """Sees each audio packet of the phone leg (a call recording); must only queue, on the loop."""

    def received(self, payload: bytes, codec: str, timestamp: int, now: float) -> None: ...
    def sent(self, payload: bytes, codec: str, timestamp: int, now: float) -> None: ...


class RtpSession:
    """Create with `await RtpSession.open(...)`; always `await close()`."""

    def __init__(
        self,
        params: MediaParams,
        *,
        clock: Clock,
        jitter: JitterBuffer | None = None,
        inactivity_timeout_s: float = 30.0,
        max_packet_rate: float = 200.0,
        on_dtmf: Callable[[DtmfReceived], None] | None = None,
        on_timeout: Callable[[], None] | None = None,
        watchdog_interval_s: float = 1.0,
        on_srtp_failure: Callable[[str], None] | None = None,
    ) -> None:
        self._params = params
        self._on_srtp_failure = on_srtp_failure
        self._srtp = SrtpContext(params.srtp, on_srtp_failure) if params.srtp else None
        self._clock = clock
        self.jitter = jitter or JitterBuffer(clock_rate=params.clock_rate,
                                             frame_ms=params.ptime_ms)
        self._inactivity_timeout_s = inactivity_timeout_s
        self._on_dtmf = on_dtmf
        self._on_timeout = on_timeout
        self._watchdog_interval_s = watchdog_interval_s
        self._transport: asyncio.DatagramTransport | None = None
        self._latched: Address | None = None
        self._ssrc: int | None = None
        self._ssrc_state = _SsrcState()
        self._lost_before = 0  # losses of earlier SSRCs
        self._dtmf = TelephoneEventReceiver(params.clock_rate)
        self._last_activity = self._clock.now()
        # Called after each packet enters the jitter buffer: the caller track wakes on it.
        self.on_audio: Callable[[], None] | None = None
        # Token bucket: refills at max_packet_rate/s, holds one second's worth.
        self._rate = max_packet_rate
        self._tokens = max_packet_rate
        self._tokens_at = self._clock.now()
        self._sender = RtpSenderState(
            params.payload_type, random.getrandbits(32), random.getrandbits(16),
            random.getrandbits(32),
        )
        self._recv = ReceiveStats()
        self._audio_samples = 0
        self._sent = SendStats()
        self._watchdog: asyncio.Task[None] | None = None
        # While a DTMF event is being sent (RFC 4733 §2.5), audio only advances the timestamp.
        self.sending_event = False
        self.timed_out: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closed = False
        self.tap: RtpTap | None = None

    # ------------------------------------------------------------ lifecycle

    @classmethod
    async def open(
        cls,
        local_address: str,
        local_port: int,
        params: MediaParams,
        *,
        clock: Clock,
        jitter: JitterBuffer | None = None,
        inactivity_timeout_s: float = 30.0,
        max_packet_rate: float = 200.0,
        on_dtmf: Callable[[DtmfReceived], None] | None = None,
        on_timeout: Callable[[], None] | None = None,
        watchdog_interval_s: float = 1.0,
        on_srtp_failure: Callable[[str], None] | None = None,
        tasks: asyncio.TaskGroup | None = None,
    ) -> RtpSession:
        """Bind `local_address:local_port` (0 = ephemeral) and start the inactivity watchdog
        (in `tasks`, the owning call's task group, when given)."""
        session = cls(
            params, clock=clock, jitter=jitter, inactivity_timeout_s=inactivity_timeout_s,
            max_packet_rate=max_packet_rate, on_dtmf=on_dtmf, on_timeout=on_timeout,
            watchdog_interval_s=watchdog_interval_s, on_srtp_failure=on_srtp_failure,
        )
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(session), local_addr=(local_address, local_port)
        )
        session._transport = transport
        spawn = tasks.create_task if tasks is not None else asyncio.create_task
        session._watchdog = spawn(session._watch(), name="rtp-watchdog")
        return session

    @property
    def local_address(self) -> Address:
        assert self._transport is not None
        sockname: Address = self._transport.get_extra_info("sockname")[:2]
        return sockname

    @property
    def params(self) -> MediaParams:
        return self._params

    @property
    def remote(self) -> Address:
        """Where we send: the latched source, else what the SDP said."""
        return self._latched or (self._params.remote_address, self._params.remote_port)

    @property
    def latched(self) -> Address | None:
        return self._latched

    @property
    def stats(self) -> RtpStats:
        received = replace(
            self._recv,
            lost=self._lost_before + self._ssrc_state.lost(),
            jitter_ms=self._ssrc_state.jitter * 1000.0 / self._params.clock_rate,
            late=self.jitter.stats.late,
            duplicates=self.jitter.stats.duplicates,
            audio_seconds=self._audio_samples / self._params.clock_rate,
        )
        return RtpStats(received, replace(self._sent))

    def update(self, params: MediaParams) -> None:
        """Apply a re-INVITE's negotiated media without dropping the call."""
        old = self._params
        self._params = params
        if (old.remote_address, old.remote_port) != (params.remote_address, params.remote_port):
            self._latched = None  # learn the new source (symmetric RTP again)
        if old.payload_type != params.payload_type:
            self._sender.payload_type = params.payload_type
        if params.srtp is None:
            self._srtp = None
        elif self._srtp is None:
            self._srtp = SrtpContext(params.srtp, self._on_srtp_failure)
        else:
            self._srtp.update(params.srtp)  # re-keys only a direction whose key changed
        self._last_activity = self._clock.now()  # hold/resume restarts the timer

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            # A watchdog that crashed was reported by the task group that owns it.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watchdog
        if self._transport is not None:
            self._transport.close()
        self._srtp = None  # libsrtp's contexts (and key copies) end with the call, not at GC
        for event in self._dtmf.flush():
            self._emit_dtmf(event)

    # -------------------------------------------------------------- sending

    def send_audio(self, payload: bytes, samples: int, marker: bool = False) -> bool:
        """Send one G.711 frame. Timestamps advance even when hold suppresses sending."""
        if self.sending_event:
            self.skip_samples(samples)
            return False
        timestamp = self._sender.timestamp
        data = self._sender.next_packet(payload, samples, marker)
        if self._transport is None or self._closed or not self._params.send_enabled:
            return False
        if not self._transmit(data):
            return False
        if self.tap is not None:
            self.tap.sent(payload, self._params.codec, timestamp, self._clock.now())
        return True

    @property
    def send_timestamp(self) -> int:
        """The RTP timestamp the next outgoing audio packet would carry."""
        return self._sender.timestamp

    def send_event(self, payload: bytes, timestamp: int, marker: bool = False) -> bool:
        """One RFC 4733 telephone-event packet, in the audio's SSRC and sequence space."""
        pt = self._params.telephone_event_pt
        if pt is None or self._transport is None or self._closed or not self._params.send_enabled:
            return False
        sender = self._sender
        data = build_rtp(pt, sender.sequence, timestamp, sender.ssrc, payload, marker)
        sender.sequence = (sender.sequence + 1) % SEQ_MOD
        return self._transmit(data)

    def _transmit(self, data: bytes) -> bool:
        """Protect (SRTP) and send one packet we built; False when SRTP refused it."""
        assert self._transport is not None
        if self._srtp is not None:
            protected = self._srtp.protect(data)
            if protected is None:
                return False
            data = protected
        self._transport.sendto(data, self.remote)
        self._sent.packets += 1
        self._sent.bytes += len(data)
        return True

    def skip_samples(self, samples: int) -> None:
        """Advance the outgoing timestamp without sending (no keepalive while AI is quiet)."""
        self._sender.timestamp = (self._sender.timestamp + samples) % (1 << 32)

    # ------------------------------------------------------------ receiving

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if self._closed:
            return  # a packet read as the call ended: its SRTP context is already gone
        now = self._clock.now()
        addr = (addr[0], addr[1])
        # Foreign packets are dropped before the rate cap: a flood from another address must
        # not spend the latched caller's tokens (that would starve the call it attacks).
        if self._latched is not None and addr != self._latched:
            self._recv.foreign_dropped += 1
            return
        if not self._take_token(now):
            self._recv.rate_dropped += 1
            return
        if is_rtcp(data):
            return  # rtcp-mux RTCP (or SRTCP): we send none and need none of its reports
        if self._srtp is not None:
            clear = self._srtp.unprotect(data)
            if clear is None:
                self._recv.srtp_failures += 1
                return
            data = clear
        try:
            packet = parse_rtp(data)
        except RtpParseError:
            self._recv.invalid += 1
            return
        pt = packet.payload_type
        params = self._params
        is_dtmf = pt == params.telephone_event_pt
        if pt != params.payload_type and not is_dtmf:
            self._recv.unknown_payload_type += 1
            return
        if self._latched is None:
            self._latched = addr
            if addr != (params.remote_address, params.remote_port):
                logger.info("RTP latched to %s:%d (SDP said %s:%d)", *addr,
                            params.remote_address, params.remote_port)
        if packet.ssrc != self._ssrc:
            if self._ssrc is not None:
                self._recv.ssrc_changes += 1
                self._lost_before += self._ssrc_state.lost()
                self._ssrc_state = _SsrcState()
                self.jitter.reset()
                for event in self._dtmf.flush():
                    self._emit_dtmf(event)
            self._ssrc = packet.ssrc
        self._last_activity = now
        self._recv.packets += 1
        self._recv.bytes += len(data)
        self._account(packet.sequence, packet.timestamp, now)
        if is_dtmf:
            self._recv.dtmf_packets += 1
            self.jitter.mark_non_audio(packet.sequence)
            for event in self._dtmf.receive(packet.ssrc, packet.timestamp, packet.payload):
                self._emit_dtmf(event)
            if self.on_audio is not None:
                self.on_audio()
            return
        self.jitter.push(packet.sequence, packet.payload)
        self._audio_samples += len(packet.payload)  # G.711: one octet per sample
        if self.tap is not None:
            self.tap.received(packet.payload, params.codec, packet.timestamp, now)
        if self.on_audio is not None:
            self.on_audio()

    def _account(self, seq: int, ts: int, now: float) -> None:
        st = self._ssrc_state
        ext = st.ext.extend(seq)
        if st.base is None:
            st.base = ext
        st.received += 1
        # RFC 3550 A.8: J += (|D| - J) / 16 with transit in timestamp units.
        arrival = int(now * self._params.clock_rate)
        transit = arrival - ts
        if st.transit is not None:
            d = abs(transit - st.transit)
            if d < self._params.clock_rate * 10:  # ignore timestamp jumps (new talkspurt base)
                st.jitter += (d - st.jitter) / 16.0
        st.transit = transit

    def _take_token(self, now: float) -> bool:
        self._tokens = min(self._rate, self._tokens + (now - self._tokens_at) * self._rate)
        self._tokens_at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _emit_dtmf(self, event: DtmfReceived) -> None:
        if self._on_dtmf is not None:
            self._on_dtmf(event)

    # ----------------------------------------------------------- inactivity

    def check_inactivity(self) -> bool:
        """True (and `timed_out` set) once no RTP arrived for the timeout, unless on hold."""
        if self.timed_out.done():
            return True
        params = self._params
        if params.on_hold or not params.receive_enabled:
            self._last_activity = self._clock.now()  # the timer restarts when the hold ends
            return False
        if self._clock.now() - self._last_activity < self._inactivity_timeout_s:
            return False
        logger.info("RTP inactivity timeout after %.0f s", self._inactivity_timeout_s)
        self.timed_out.set_result(None)
        if self._on_timeout is not None:
            self._on_timeout()
        return True

    async def _watch(self) -> None:
        while not self.check_inactivity():
            await asyncio.sleep(self._watchdog_interval_s)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, session: RtpSession) -> None:
        self._session = session

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self._session.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a peer that is gone: the inactivity timer handles it.
        logger.debug("RTP socket error: %s", exc)


async def open_from_pool(
    pool: PortPool,
    local_address: str,
    params: MediaParams,
    *,
    attempts: int = 8,
    **kwargs: Any,
) -> RtpSession:
    """Acquire a port from `pool` and bind a session on it.

    A port the pool thinks free may still be held by another process on this host; such a
    port is released back (it goes to quarantine) and the next one is tried. Raises
    `PortsExhausted` when the pool is empty, or the last `OSError` after `attempts` tries.
    The caller releases `session.local_address[1]` to the pool after `close()`.
    """
    error: OSError | None = None
    for _ in range(attempts):
        port = pool.acquire()
        try:
            return await RtpSession.open(local_address, port, params, **kwargs)
        except OSError as exc:
            logger.warning("RTP port %d not bindable (%s); trying another", port, exc)
            pool.release(port)
            error = exc
    assert error is not None
    raise error

"""Every place the gateway reaches into aiortc's or aioice's internals, and the versions it was
tested with (pinned in pyproject.toml, checked at start by `check_versions`).

1. The AI leg's audio receiver (`tune_receiver`). aiortc's `RTCRtpReceiver` buffers audio in
   a `JitterBuffer(capacity=16, prefetch=4)` (80 ms before the first frame, ~280 ms standing
   delay after one loss) and decodes in its own thread, handing every frame across threads
   back to the loop into the remote track's queue. We swap its private
   `_RTCRtpReceiver__jitter_buffer` for an adapter with the same `add(packet) -> (pli, frame)`
   contract that runs our `LowDelayReorderBuffer` (media/reorder.py), decodes Opus right here
   on the loop (libopus, straight to the phone's 8 kHz) and hands the samples to `deliver` —
   the `AiAudioPump.feed_pcm` of the call — in the same call stack. It always returns "no
   frame", so aiortc's decoder thread idles and the track's queue stays empty (it only
   carries the end-of-stream marker).
2. ICE host candidates (`restrict_host_addresses`). aioice enumerates every interface address
   itself and always skips 127.0.0.1. We override `get_component_candidates` on each aioice
   `Connection` of one peer connection so the configured addresses (`[orga] ice_addresses`;
   loopback in tests and the demo) replace the enumerated ones, for that peer only.
3. FFmpeg's thread pools (`single_threaded_ffmpeg`). Every FFmpeg filter graph — our
   resamplers, and the one PyAV builds inside each audio encoder, which Python cannot reach —
   starts a pool of about one native thread per core. Audio filters here are not
   slice-threaded, so those threads only idle, cost memory, and come and go with every call (4
   per call on 2 cores, ~2 per core per call elsewhere). `av_cpu_force_count(1)`, public
   libavutil API, makes FFmpeg size every automatic pool as for one core: none is started.
   We call it in the libavutil PyAV has loaded, found through /proc/self/maps (Linux).

4. The AI leg's RTP, packet by packet (`tune_sender`, and `tune_receiver` from the second
   packet on). aiortc's per-packet path is Python all the way to the socket: a task wake-up
   and four coroutines per received packet (aioice's queue → DTLS → router → receiver), and
   per sent packet an `RtpPacket`, two `datetime` clock reads, header serialisation and four
   coroutines (DTLS → ICE transport → connection → protocol). We keep aiortc for ICE, DTLS,
   SCTP and RTCP, and for the audio's RTP use its own pieces directly — the DTLS transport's
   SRTP sessions, its header-extension map and router, the nominated ICE pair — from aioice's
   socket callback (receive) and from the callback in which the track pushes a packet (send:
   the phone packet's own). Received audio is routed by aiortc's router once per stream and
   then read with the phone leg's parser (`media.rtp.parse_rtp`), not aiortc's. Wire bytes,
   receiver statistics, sources and sender-report counters stay as aiortc keeps them
   (tests/media/test_two_peers.py). Measured
   (`bench/media_path.py`, 20 calls): 2.10 → 1.74 % of a core per call.

5. The send-only video m-line (`tune_send_only_video`). Nothing is ever received on it, but
   aiortc builds every video receiver a REMB bandwidth estimator whose rate counter holds
   1,000 bucket objects. Per call that was more than half the objects of the call's aiortc
   graph, all of which the garbage collector walks in every full collection while the call is
   in flight; we drop the estimator (aiortc's audio receivers have none, and each use checks).
   The sender gets `tune_sender`.

Why the versions are checked rather than trusted: private names can change in any release;
an untested aiortc or aioice must stop the gateway at start with a message that says what to
do, not degrade calls silently at run time.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import struct
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from importlib import metadata
from typing import Any

import pylibsrtp
from aioice.ice import StunProtocol
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver, clock
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtcrtpsender import random_sequence_number
from aiortc.rtp import RtpPacket, is_rtcp
from aiortc.utils import random32

from gateway.media.reorder import LowDelayReorderBuffer, ReorderStats
from gateway.media.rtp import RtpParseError, parse_rtp
from gateway.media.transcode import PHONE_RATE, EncodedPacket, OpusMonoDecoder, Pcm
from gateway.procmaps import mapped

logger = logging.getLogger(__name__)

# The release series these patches were written and tested against (pyproject.toml pins them).
TESTED = {"aiortc": "1.16", "aioice": "0.13"}

_RECEIVER_INTERNALS = ("_RTCRtpReceiver__jitter_buffer", "_RTCRtpReceiver__codecs")


class UntestedVersionError(RuntimeError):
    """aiortc/aioice is not the version our patches were tested with."""


def check_versions(installed: Callable[[str], str] = metadata.version) -> None:
    """Raise `UntestedVersionError` unless aiortc and aioice are the tested series, and the
    internals we patch are where we expect them."""
    for dist, series in TESTED.items():
        version = installed(dist)
        if version != series and not version.startswith(series + "."):
            raise UntestedVersionError(
                f"{dist} {version} is installed, but gateway/aiortc_patches.py was tested with "
                f"{dist} {series}.x only — install {dist}=={series}.* (as pyproject.toml pins) "
                "or re-test those patches against the new version"
            )
    from aioice import Connection

    if not all(hasattr(cls, name) for cls, name in (
        (RTCRtpReceiver, "_handle_rtp_packet"), (RTCRtpSender, "_run_rtp"),
        (Connection, "get_component_candidates"), (Connection, "data_received"),
    )):
        raise UntestedVersionError("aiortc/aioice internals patched by "
                                   "gateway/aiortc_patches.py are missing")


# ------------------------------------------------------------------ 1. the audio receiver


class _ReceiverAdapter:
    """Duck-types aiortc's `JitterBuffer` for `RTCRtpReceiver._handle_rtp_packet`."""

    capacity = 16  # read by nothing on the audio path; kept for parity with aiortc's class

    def __init__(self, receiver: Any, buffer: LowDelayReorderBuffer,
                 deliver: Callable[[Pcm], None], rate: int,
                 on_loss: Callable[[int], None] | None = None) -> None:
        self._codecs: dict[int, Any] = receiver._RTCRtpReceiver__codecs
        self._receiver = receiver
        self._direct = False
        self.buffer = buffer
        self._decoder = OpusMonoDecoder(rate)
        self._deliver = deliver
        self._on_loss = on_loss
        self._opus: dict[int, tuple[Any, bool]] = {}
        self.not_opus = 0

    def add(self, packet: Any) -> tuple[bool, None]:
        if not self._direct:
            # The first packet came aiortc's way: the DTLS transport is up and bundled now,
            # so the ones after it can take the direct path (section 4).
            self._direct = True
            _receive_directly(self._receiver, self)
        lost = self.buffer.stats.lost
        released = self.buffer.add(packet.sequence_number, packet.timestamp, packet._data)
        if self._on_loss is not None and self.buffer.stats.lost > lost:
            self._on_loss(self.buffer.stats.lost - lost)  # before the audio after the gap
        if not released:
            return False, None
        if not self._is_opus(packet.payload_type):
            self.not_opus += len(released)  # the Orga peer negotiates Opus only (peer.py)
            return False, None
        for _, data in released:
            pcm = self._decoder.decode(data)
            if pcm is not None:
                self._deliver(pcm)
        return False, None

    def _is_opus(self, payload_type: int) -> bool:
        """Whether `payload_type` is Opus, as negotiated now: aiortc's codec object is looked
        up per packet, its name read once per object (`name` splits the MIME type on every
        read)."""
        codec = self._codecs.get(payload_type)
        if codec is None:
            return False
        known = self._opus.get(payload_type)
        if known is None or known[0] is not codec:
            known = self._opus[payload_type] = (codec, codec.name.lower() == "opus")
        return known[1]


def tune_receiver(receiver: RTCRtpReceiver, deliver: Callable[[Pcm], None],
                  max_hold: int = 0, on_loss: Callable[[int], None] | None = None,
                  rate: int = PHONE_RATE) -> None:
    """Install the low-delay path on an Opus audio receiver: each packet's audio goes to
    `deliver` as mono s16 samples at `rate` (libopus decodes to 8, 12, 16, 24 or 48 kHz
    itself), and `on_loss(n)` hears of each sequence gap (n packets lost on the way) as it is
    found.

    Call it right after `addTransceiver("audio", ...)`, before media flows.
    """
    missing = [name for name in _RECEIVER_INTERNALS if not hasattr(receiver, name)]
    if missing:
        raise UntestedVersionError(f"aiortc receiver internals changed: {', '.join(missing)}")
    adapter = _ReceiverAdapter(receiver, LowDelayReorderBuffer(max_hold), deliver, rate,
                               on_loss)
    receiver._RTCRtpReceiver__jitter_buffer = adapter  # type: ignore[attr-defined]


def receiver_stats(receiver: RTCRtpReceiver) -> ReorderStats | None:
    """The low-delay buffer's counters, if `tune_receiver` was applied."""
    jb = getattr(receiver, "_RTCRtpReceiver__jitter_buffer", None)
    return jb.buffer.stats if isinstance(jb, _ReceiverAdapter) else None


# ------------------------------------------------------------------ 2. ICE host candidates


def _ice_connections(pc: RTCPeerConnection) -> Iterator[Any]:
    seen: set[int] = set()
    transports = [t.sender.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    for dtls in transports:
        # RTCDtlsTransport -> RTCIceTransport -> RTCIceGatherer -> aioice.Connection
        connection = dtls.transport.iceGatherer._connection
        if id(connection) not in seen:
            seen.add(id(connection))
            yield connection


def restrict_host_addresses(pc: RTCPeerConnection, addresses: Sequence[str] | None) -> int:
    """Make every ICE connection of `pc` gather host candidates on `addresses` only.

    None keeps aioice's enumeration (all non-loopback addresses). Returns the number of ICE
    connections changed. Must run after all transceivers and the data channel exist and
    before `setLocalDescription` (which gathers).
    """
    if addresses is None:
        return 0
    fixed = list(addresses)
    count = 0
    for connection in _ice_connections(pc):
        original = getattr(connection, "get_component_candidates", None)
        if original is None:  # aioice changed: fail loudly rather than gather everywhere
            raise UntestedVersionError("aioice Connection has no get_component_candidates")

        async def get_component_candidates(
            component: int, addresses: list[str], timeout: int = 5, _orig: Any = original
        ) -> Any:
            return await _orig(component=component, addresses=fixed, timeout=timeout)

        connection.get_component_candidates = get_component_candidates
        count += 1
    return count


def stun_and_turn_servers(pc: RTCPeerConnection) -> list[tuple[Any, Any]]:
    """(stun_server, turn_server) of each ICE connection: lets tests prove none is contacted."""
    return [(c.stun_server, c.turn_server) for c in _ice_connections(pc)]


# ------------------------------------------------------------------ 3. FFmpeg's thread pools


def single_threaded_ffmpeg(maps: str = "/proc/self/maps") -> bool:
    """Make FFmpeg start no automatic thread pools in this process (see 3. above). Returns False
    (and logs) where it cannot: per-call threads then still end with each call (`close()` in
    media/transcode.py), there are just more of them while calls run."""
    import av  # noqa: F401  (loads the libavutil we must change)

    paths = mapped("libavutil", maps)
    if len(paths) != 1:
        logger.warning("FFmpeg thread pools left as they are: libavutil not found once in "
                       "%s (%d matches)", maps, len(paths))
        return False
    try:
        ctypes.CDLL(paths.pop()).av_cpu_force_count(1)
    except (OSError, AttributeError) as exc:
        logger.warning("FFmpeg thread pools left as they are: %s", exc)
        return False
    return True


# ------------------------------------------------------------------ 4. the AI leg's RTP, direct


class _AudioPacket:
    """The fields of one received audio packet that the receiver's statistics and our adapter
    read (aiortc's `RtpPacket` names); one per receiver, refilled per packet."""

    __slots__ = ("_data", "payload_type", "sequence_number", "timestamp")

    def __init__(self) -> None:
        self.payload_type = self.sequence_number = self.timestamp = 0
        self._data = b""


def _receive_directly(receiver: Any, adapter: _ReceiverAdapter) -> None:
    """Hand the audio's SRTP packets from aioice's socket callback to `adapter`, in that call.

    aiortc queues every datagram in the ICE connection's `asyncio.Queue`, wakes the DTLS
    transport's task, and walks four coroutines (DTLS → router → receiver → jitter buffer)
    per packet. Here, SRTP for our receiver is unprotected with the DTLS transport's own
    session right in `Connection.data_received`; the receiver's statistics (its RTCP receiver
    reports) and sources (`getSynchronizationSources`, the dead-leg check) are kept as aiortc
    keeps them. The first packet of a stream is parsed and routed by aiortc's parser and
    router; once the router has given an SSRC and payload type to our receiver, that
    stream's packets are only split into their fields by the phone leg's parser
    (`media.rtp.parse_rtp`) — no aiortc `RtpPacket`, no header-extension parse, no routing
    per packet. DTLS, SCTP, RTCP and RTP for any other receiver still go aiortc's way. A
    decode failure is counted by the adapter; an exception here reaches the event loop's
    handler and leaves the socket running.
    """
    dtls = receiver.transport
    connection = dtls.transport.iceGatherer._connection
    slow = connection.data_received
    srtp, extensions, router = dtls._rx_srtp, dtls._rtp_header_extensions_map, dtls._rtp_router
    streams: dict[int, StreamStatistics] = receiver._RTCRtpReceiver__remote_streams
    active: dict[int, Any] = receiver._RTCRtpReceiver__active_ssrc
    codecs: dict[int, Any] = receiver._RTCRtpReceiver__codecs
    ours: set[tuple[int, int]] = set()  # (SSRC, payload type) the router gave our receiver
    fields = _AudioPacket()

    def data_received(data: bytes, component: int) -> None:
        if not 127 < data[0] < 192 or is_rtcp(data) or dtls._state is not DtlsState.CONNECTED:
            slow(data, component)
            return
        try:
            clear = srtp.unprotect(data)
        except pylibsrtp.Error:
            return  # as aiortc: a packet that fails authentication is dropped
        try:
            pt, seq, ts, ssrc, _, payload = parse_rtp(clear)
        except RtpParseError:
            return  # as aiortc: a packet it cannot parse is dropped
        if (ssrc, pt) not in ours and not route(clear, ssrc, pt):
            return
        if not receiver._enabled:
            return
        active[ssrc] = clock.current_datetime()
        fields.payload_type, fields.sequence_number, fields.timestamp = pt, seq, ts
        fields._data = payload  # aiortc's depayload, for audio
        stats = streams.get(ssrc)
        if stats is None:
            stats = streams[ssrc] = StreamStatistics(codecs[pt].clockRate)
        stats.add(fields)  # type: ignore[arg-type]  # reads the fields RtpPacket has
        adapter.add(fields)

    def route(clear: bytes, ssrc: int, pt: int) -> bool:
        """A stream's first packet: aiortc's router decides; True if it is ours."""
        try:
            packet = RtpPacket.parse(clear, extensions)
        except ValueError:
            return False  # as aiortc: e.g. a malformed header extension
        target = router.route_rtp(packet)
        if target is not receiver:
            if target is not None:  # another m-line's receiver: aiortc's own handling
                _spawn(target._handle_rtp_packet(packet, arrival_time_ms=clock.current_ms()))
            return False
        if pt not in codecs:
            return False
        ours.add((ssrc, pt))
        return True

    connection.data_received = data_received
    for protocol in connection._protocols:
        # aioice tries to parse every datagram as STUN and takes the ValueError as "data". A
        # STUN message starts with two zero bits (RFC 8489 §5); (S)RTP with 0b10: those go
        # straight on. Only aioice's own UDP protocol; a TURN relay keeps aioice's path.
        if type(protocol) is StunProtocol:
            protocol.datagram_received = _skip_stun_parse(protocol, data_received)  # type: ignore[method-assign,assignment]


def _skip_stun_parse(protocol: Any, data_received: Callable[[bytes, int], None]
                     ) -> Callable[[bytes, Any], None]:
    slow = protocol.datagram_received
    component = protocol.local_candidate.component

    def datagram_received(data: bytes, addr: Any) -> None:
        if data and data[0] > 127:
            data_received(data, component)
        else:
            slow(data, addr)

    return datagram_received


_spawned: set[asyncio.Task[None]] = set()


def _spawn(coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.ensure_future(coro)
    _spawned.add(task)
    task.add_done_callback(_spawned.discard)


def tune_sender(sender: RTCRtpSender) -> None:
    """Send what the sender's track pushes straight to the network, without aiortc's per-packet
    machinery; for a sender without a track, only wait.

    The track must push encoded Opus packets (`av.Packet` with pts in the 48 kHz RTP clock)
    through `push_to(send)`: `CallerAudioTrack(opus=True)`, which calls `send` from the phone
    packet's own receive callback. Per packet, aiortc's `_run_rtp` wakes its task to pull the
    track, builds an `RtpPacket`, reads the wall clock through `datetime` twice, serialises
    header extensions and walks four coroutines (DTLS → ICE transport → ICE connection →
    protocol) to the socket. Here no task wakes; the header, with the same extensions, is
    serialised once by aiortc and only sequence number and timestamp change per packet,
    protected with the DTLS transport's SRTP session and handed to the nominated ICE pair's
    transport. The header is aiortc's (one SSRC, the mid extension, marker set, as
    `tests/media/test_two_peers.py` checks on what the far end parses); the sender's counters
    feed its RTCP sender reports as before (same test). No RTP history is kept: aiortc
    negotiates no NACK for audio.

    A sender without a track (our send-only video m-line) would wake every 20 ms in aiortc's
    loop to look for one; here it looks once a second. Call before media starts
    (`setLocalDescription`/`setRemoteDescription` start the sender).
    """
    if not hasattr(sender, "_run_rtp") or not hasattr(sender, "_RTCRtpSender__rtp_started"):
        raise UntestedVersionError("aiortc sender internals changed: _run_rtp")

    async def run_rtp(codec: Any) -> None:
        await _run_direct(sender, codec)

    sender._run_rtp = run_rtp  # type: ignore[method-assign]


_ESTIMATOR = "_RTCRtpReceiver__remote_bitrate_estimator"


def tune_send_only_video(transceiver: RTCRtpTransceiver) -> None:
    """Our send-only video m-line: its sender waits without aiortc's 20 ms loop (`tune_sender`)
    and its receiver, which nothing reaches, goes without aiortc's bandwidth estimator (5.)."""
    tune_sender(transceiver.sender)
    receiver = transceiver.receiver
    if not hasattr(receiver, _ESTIMATOR):
        raise UntestedVersionError("aiortc receiver internals changed: remote bitrate estimator")
    setattr(receiver, _ESTIMATOR, None)


def _wire_header(sender: Any, codec: Any) -> tuple[bytearray, bool]:
    """The RTP header aiortc would write for our packets (payload left off), and whether it
    is the same for every packet apart from sequence number and timestamp."""
    template = RtpPacket(payload_type=codec.payloadType, sequence_number=0, timestamp=0)
    template.ssrc = sender._ssrc
    template.marker = 1  # aiortc marks the last packet of each frame: every audio packet
    template.extensions.mid = sender._RTCRtpSender__mid
    extensions = sender._RTCRtpSender__rtp_header_extensions_map
    template.extensions.abs_send_time = 0
    first = template.serialize(extensions)
    template.extensions.abs_send_time = 0xABCDEF
    return bytearray(first), first == template.serialize(extensions)


_NTP_UNIX_OFFSET_S = 2_208_988_800  # 1900-01-01 to 1970-01-01, the NTP and Unix epochs


def ntp_now() -> int:
    """The wall clock as a 64-bit NTP timestamp, what `aiortc.clock.current_ntp_time` returns
    (through two `datetime`s; this is a float and two integer operations per packet)."""
    now = time.time()
    seconds = int(now)
    return ((seconds + _NTP_UNIX_OFFSET_S) << 32) | int((now - seconds) * 4294967296.0)


async def _run_direct(sender: Any, codec: Any) -> None:
    sender._RTCRtpSender__rtp_started.set()
    track = sender.track
    try:
        while track is None:
            await asyncio.sleep(1.0)
            track = sender.track
        if not hasattr(track, "push_to"):
            raise UntestedVersionError("tune_sender needs a track that pushes encoded packets")
        header, fixed = _wire_header(sender, codec)
        if not fixed:  # abs-send-time for audio: aiortc does not offer it, so no answer has it
            raise UntestedVersionError("audio RTP header extensions vary per packet")
        dtls = sender.transport
        connection = dtls.transport.iceGatherer._connection
        srtp = dtls._tx_srtp
        sequence_number = random_sequence_number()
        timestamp_origin = random32()
        ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def send(encoded: Any) -> None:
            """One packet from the track, in the phone packet's (or the track timer's) call."""
            nonlocal sequence_number
            if ended.done():
                return
            try:
                if not isinstance(encoded, EncodedPacket):
                    raise UntestedVersionError("tune_sender needs a track of encoded packets")
                if dtls._state is not DtlsState.CONNECTED:
                    raise ConnectionError("Cannot send encrypted RTP, not connected")
                if encoded.pts is None:
                    raise ValueError("an encoded packet without pts: no RTP timestamp for it")
                payload = bytes(encoded)
                timestamp = (timestamp_origin + encoded.pts) & 0xFFFFFFFF  # pts: 48 kHz
                struct.pack_into("!HI", header, 2, sequence_number, timestamp)
                protected = srtp.protect(bytes(header) + payload)
                pair = connection._nominated.get(1)
                if pair is None:
                    raise ConnectionError("Cannot send data, not connected")
                # StunProtocol.send_data is a coroutine that only does this (and a TURN
                # relay's transport takes the same call).
                pair.protocol.transport.sendto(protected, pair.remote_addr)
            except ConnectionError:
                ended.set_result(None)  # as aiortc: the sender ends quietly
                return
            except Exception as exc:
                ended.set_exception(exc)
                return
            sender._RTCRtpSender__ntp_timestamp = ntp_now()
            sender._RTCRtpSender__rtp_timestamp = timestamp
            sender._RTCRtpSender__octet_count += len(payload)
            sender._RTCRtpSender__packet_count += 1
            sequence_number = (sequence_number + 1) & 0xFFFF

        def on_ended() -> None:
            if not ended.done():
                ended.set_result(None)

        track.on("ended", on_ended)
        if track.readyState != "live":
            return
        track.push_to(send)
        await ended
    except (asyncio.CancelledError, ConnectionError, MediaStreamError):
        pass
    except Exception:  # as aiortc: log, and let stop() finish
        logger.exception("AI leg RTP sender failed")
    finally:
        if track is not None:
            track.stop()
        sender._RTCRtpSender__rtp_exited.set()

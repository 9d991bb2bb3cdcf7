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

Why the versions are checked rather than trusted: private names can change in any release;
an untested aiortc or aioice must stop the gateway at start with a message that says what to
do, not degrade calls silently at run time.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpReceiver

from gateway.media.reorder import LowDelayReorderBuffer, ReorderStats
from gateway.media.transcode import PHONE_RATE, OpusMonoDecoder, Pcm

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

    if not hasattr(RTCRtpReceiver, "_handle_rtp_packet") or not hasattr(
        Connection, "get_component_candidates"
    ):
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
        self.buffer = buffer
        self._decoder = OpusMonoDecoder(rate)
        self._deliver = deliver
        self._on_loss = on_loss
        self.not_opus = 0

    def add(self, packet: Any) -> tuple[bool, None]:
        lost = self.buffer.stats.lost
        released = self.buffer.add(packet.sequence_number, packet.timestamp, packet._data)
        if self._on_loss is not None and self.buffer.stats.lost > lost:
            self._on_loss(self.buffer.stats.lost - lost)  # before the audio after the gap
        if not released:
            return False, None
        codec = self._codecs.get(packet.payload_type)
        if codec is None or codec.name.lower() != "opus":
            self.not_opus += len(released)  # the Orga peer negotiates Opus only (peer.py)
            return False, None
        for _, data in released:
            pcm = self._decoder.decode(data)
            if pcm is not None:
                self._deliver(pcm)
        return False, None


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

    try:
        with open(maps) as f:
            paths = {line.split()[-1] for line in f if "libavutil" in line.split()[-1]}
    except OSError:
        paths = set()
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

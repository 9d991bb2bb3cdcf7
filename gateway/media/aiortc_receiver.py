"""Low-delay replacement for aiortc's audio receive jitter buffer (AI → caller direction).

Why: aiortc 1.16's `RTCRtpReceiver` gives audio a `JitterBuffer(capacity=16, prefetch=4)`: a
frame leaves only when 4 later packets have arrived (80 ms), and one lost packet blocks output
until the 16-slot ring overflows, after which the standing delay stays ~280 ms for the rest of
the call (aiortc issue #543; field notes §4). A gateway cannot afford either: the AI's reply
reaches the caller that much later on every turn.

What replaces it: `LowDelayReorderBuffer` releases each packet the moment it is next in
sequence. A gap holds later packets for at most `max_hold` packets; then the missing packet is
declared lost and everything held is released at once. The default is 0: a gap is a loss at
once. Why not wait 20 ms for a reordered packet: the pump downstream already plays a
concealment frame for the missing slot, so waiting would only move the held frames 20 ms later
and that 20 ms would stay until the AI's next pause (bench/media_path.py, 10 calls, 1 % loss:
AI→caller p99 72 ms with max_hold=1, 45-50 ms with 0; separate runs on a shared machine).
Reordering on one audio flow is rare; a reordered packet then costs one concealed frame.
Either way, no loss leaves standing delay. Jitter absorption for this direction lives in one
place: the `AiAudioPump` playout queue (bounded in ms, shrinks in silence).

Decoding: with `decode_on_loop` (default) Opus packets are decoded right here with our own
mono decoder and the frames are put on the receiver's track queue, skipping aiortc's decoder
thread and its per-frame cross-thread hand-off (field notes §3: the top GIL cost).

The patch, in one place: `tune_receiver(receiver)` swaps the receiver's private
`_RTCRtpReceiver__jitter_buffer` for an adapter with the same `add(packet) -> (pli, frame)`
contract. When a gap closes and several frames are released together, all but the last are
queued to the receiver's decoder exactly as the receiver itself does (timestamp mapped by the
receiver's own mapper, same codec), and the last is returned to the receiver. The private
names are checked up front; if a future aiortc renames them, `tune_receiver` logs and returns
False, leaving aiortc's default buffer (audio still works, just with aiortc's delay), and
tests/media/test_two_peers.py (which asserts True on a real receiver) fails so the upgrade is
noticed.

Call it on the audio transceiver's receiver right after `addTransceiver("audio", ...)`, before
media flows: `tune_receiver(transceiver.receiver)`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aiortc import RTCRtpReceiver
from aiortc.jitterbuffer import JitterFrame

from gateway.media.rtp import SEQ_MOD, seq_delta
from gateway.media.transcode import OpusMonoDecoder

logger = logging.getLogger(__name__)

_RESYNC_GAP = 100  # a jump this large is a new stream (or a sender reset), not loss


@dataclass(slots=True)
class ReorderStats:
    released: int = 0
    lost: int = 0
    late: int = 0
    duplicates: int = 0
    resyncs: int = 0


class LowDelayReorderBuffer:
    """Pure sequencing logic: `add` returns the payloads it releases, in order."""

    def __init__(self, max_hold: int = 0) -> None:
        if max_hold < 0:
            raise ValueError("max_hold must be >= 0")
        self._max_hold = max_hold
        self._next: int | None = None
        self._held: dict[int, tuple[int, bytes]] = {}  # seq -> (timestamp, data)
        self.stats = ReorderStats()

    @property
    def held(self) -> int:
        return len(self._held)

    def add(self, sequence: int, timestamp: int, data: bytes) -> list[tuple[int, bytes]]:
        if self._next is None:
            self._next = sequence
        d = seq_delta(sequence, self._next)
        if d < 0:
            self.stats.late += 1  # its slot was already given up: playing it now adds delay
            return []
        if sequence in self._held:
            self.stats.duplicates += 1
            return []
        if d >= _RESYNC_GAP:
            out = self._release_all()
            self.stats.resyncs += 1
            self._next = sequence
            out.extend(self._release_run_from(sequence, timestamp, data))
            return out
        if d == 0:
            return self._release_run_from(sequence, timestamp, data)
        self._held[sequence] = (timestamp, data)
        if len(self._held) > self._max_hold:
            # Give up on the gap: count the missing packets lost and release what we hold.
            first = min(self._held, key=lambda s: seq_delta(s, self._next or 0))
            self.stats.lost += seq_delta(first, self._next)
            self._next = first
            ts, payload = self._held.pop(first)
            return self._release_run_from(first, ts, payload)
        return []

    def _release_run_from(self, sequence: int, timestamp: int, data: bytes) -> list[
        tuple[int, bytes]
    ]:
        out = [(timestamp, data)]
        nxt = (sequence + 1) % SEQ_MOD
        while nxt in self._held:
            out.append(self._held.pop(nxt))
            nxt = (nxt + 1) % SEQ_MOD
        self._next = nxt
        self.stats.released += len(out)
        return out

    def _release_all(self) -> list[tuple[int, bytes]]:
        base = self._next or 0
        order = sorted(self._held, key=lambda s: seq_delta(s, base))
        out = [self._held.pop(s) for s in order]
        self.stats.released += len(out)
        return out


class _AiortcAdapter:
    """Duck-types aiortc's `JitterBuffer` for `RTCRtpReceiver._handle_rtp_packet`."""

    capacity = 16  # read by nothing on the audio path; kept for parity with aiortc's class

    def __init__(
        self, receiver: Any, buffer: LowDelayReorderBuffer, decoder: OpusMonoDecoder | None
    ) -> None:
        self._receiver = receiver
        self.buffer = buffer
        self._decoder = decoder
        self._pts = 0

    def add(self, packet: Any) -> tuple[bool, JitterFrame | None]:
        released = self.buffer.add(packet.sequence_number, packet.timestamp, packet._data)
        if not released:
            return False, None
        r = self._receiver
        codec = r._RTCRtpReceiver__codecs.get(packet.payload_type)
        track = getattr(r, "_track", None)
        if (
            self._decoder is not None
            and codec is not None
            and codec.name.lower() == "opus"
            and track is not None
            and track.readyState == "live"
        ):
            # Decode here, on the loop, and hand frames straight to the track's queue:
            # no decoder-thread hop per frame (aiortc's thread then just idles).
            for _, data in released:
                for frame in self._decoder.decode(data):
                    frame.pts = self._pts
                    self._pts += frame.samples
                    track._queue.put_nowait(frame)
            return False, None
        if len(released) > 1 and codec is not None and r._RTCRtpReceiver__decoder_thread:
            mapper = r._RTCRtpReceiver__timestamp_mapper
            for ts, data in released[:-1]:
                r._RTCRtpReceiver__decoder_queue.put(
                    (codec, JitterFrame(data=data, timestamp=mapper.map(ts)))
                )
        ts, data = released[-1]
        return False, JitterFrame(data=data, timestamp=ts)


_REQUIRED = (
    "_RTCRtpReceiver__jitter_buffer",
    "_RTCRtpReceiver__codecs",
    "_RTCRtpReceiver__decoder_queue",
    "_RTCRtpReceiver__timestamp_mapper",
)


def tune_receiver(
    receiver: RTCRtpReceiver, max_hold: int = 0, decode_on_loop: bool = True
) -> bool:
    """Install the low-delay buffer on an audio receiver. Returns False (and logs) if this
    aiortc version does not have the internals we replace; the call then keeps working with
    aiortc's own buffer.

    `decode_on_loop`: decode Opus here (48 kHz mono frames) instead of in aiortc's decoder
    thread, removing a thread hand-off per 20 ms; other codecs still go to aiortc's decoder.
    """
    missing = [name for name in _REQUIRED if not hasattr(receiver, name)]
    if missing or not hasattr(receiver, "_RTCRtpReceiver__decoder_thread"):
        logger.error("aiortc receiver internals changed (%s); keeping aiortc's jitter buffer",
                     ", ".join(missing) or "decoder thread")
        return False
    decoder = OpusMonoDecoder() if decode_on_loop else None
    adapter = _AiortcAdapter(receiver, LowDelayReorderBuffer(max_hold), decoder)
    receiver._RTCRtpReceiver__jitter_buffer = adapter  # type: ignore[attr-defined]
    return True


def receiver_stats(receiver: RTCRtpReceiver) -> ReorderStats | None:
    """The low-delay buffer's counters, if `tune_receiver` was applied."""
    jb = getattr(receiver, "_RTCRtpReceiver__jitter_buffer", None)
    return jb.buffer.stats if isinstance(jb, _AiortcAdapter) else None

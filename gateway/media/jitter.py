"""Jitter buffer for the phone leg (caller → gateway): reordering, loss and playout delay.

Owns reordering, late/duplicate detection and the playout delay of caller RTP. It stores
packets by extended sequence number (RFC 3550 A.1) and measures depth in milliseconds of audio
(G.711: one octet per sample at 8 kHz), never in packets, so 10/20/30 ms packetisation all work.

Two ways to play out. `pop_ready()` is arrival-driven (the caller track, media/uplink.py):
a packet plays the moment it is next in sequence, so it waits for nothing — the AI leg's
receiver has its own jitter buffer, and a second fixed hold here would only add delay.
`pop()` plays on the consumer's clock from an adaptive depth (the test phone, gateway/probe):

Policy of `pop()` (why each rule exists):
- Playout starts once `target_ms` (initially 40 ms) is buffered: enough for ordinary network
  jitter, small enough not to hurt turn latency.
- A missing packet with later ones present is a loss: `pop()` reports `LOSS` and moves on;
  the consumer conceals it (repeat with fade, then silence). A packet arriving after its slot
  was played is `late` and dropped.
- An empty buffer while playing is an underrun (the network stalled): the target grows by one
  frame (up to `max_ms`) and playout re-primes, which is how the buffer adapts upward.
- Delay shrinks back: every window of 10 pops whose minimum depth stayed above target + ½ frame
  drops the oldest frame, and after 2 s without underruns the target decays toward its start.
- Delay is bounded: a push that would hold more than `max_ms` drops the oldest audio (counted).
- Sequence numbers of non-audio packets sharing the stream (RFC 4733 events) are marked so
  they play as silence instead of counting as loss.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.media.rtp import SequenceExtender

_WINDOW_POPS = 10
_DECAY_POPS = 100
_GAP_SKIP = 5  # pop_ready: a longer run of missing slots is skipped as one loss


class Output(enum.Enum):
    AUDIO = "audio"  # a packet's payload to decode
    LOSS = "loss"  # a frame is missing: conceal `samples`
    SILENCE = "silence"  # a non-audio slot (DTMF) or a gap we skip quietly
    EMPTY = "empty"  # nothing to play (priming or underrun): consumer plays silence


class PushResult(enum.Enum):
    ACCEPTED = "accepted"
    LATE = "late"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class JitterOutput:
    kind: Output
    payload: bytes = b""
    samples: int = 0


_EMPTY = JitterOutput(Output.EMPTY)


@dataclass(slots=True)
class JitterStats:
    late: int = 0
    duplicates: int = 0
    lost: int = 0
    underruns: int = 0
    overflow_dropped: int = 0
    shrink_dropped: int = 0


class JitterBuffer:
    def __init__(
        self,
        clock_rate: int = 8000,
        initial_ms: int = 40,
        min_ms: int = 20,
        max_ms: int = 200,
        frame_ms: int = 20,
    ) -> None:
        if not 0 < min_ms <= initial_ms <= max_ms:
            raise ValueError("need 0 < min_ms <= initial_ms <= max_ms")
        self._samples_per_ms = clock_rate // 1000
        self._initial_ms = initial_ms
        self._min_ms = min_ms
        self._max_ms = max_ms
        self._frame_ms = frame_ms
        self.target_ms = initial_ms
        self.stats = JitterStats()
        self._ext = SequenceExtender()
        # Maps this stream's extended numbers onto the buffer's (identity until an SSRC change).
        self._seq_offset = 0
        self._rebase = False
        self._buf: dict[int, bytes | None] = {}  # ext seq -> payload (None: non-audio slot)
        self._depth_samples = 0
        self._next: int | None = None
        self._playing = False
        self._last_samples = frame_ms * self._samples_per_ms
        self._window_min = 1 << 30
        self._window_pops = 0
        self._pops_since_underrun = 0

    # ------------------------------------------------------------------ input

    def _map(self, sequence: int) -> int:
        ext = self._ext.extend(sequence)
        if self._rebase:
            # First packet of a new SSRC continues right after the old stream's last slot.
            self._rebase = False
            if self._buf:
                start = max(self._buf) + 1
            else:
                start = self._next if self._next is not None else ext
            self._seq_offset = start - ext
        return ext + self._seq_offset

    def push(self, sequence: int, payload: bytes) -> PushResult:
        ext = self._map(sequence)
        if self._next is not None and ext < self._next:
            self.stats.late += 1
            return PushResult.LATE
        if ext in self._buf:
            self.stats.duplicates += 1
            return PushResult.DUPLICATE
        self._buf[ext] = payload
        self._depth_samples += len(payload)
        max_samples = self._max_ms * self._samples_per_ms
        while self._depth_samples > max_samples and len(self._buf) > 1:
            self._drop_oldest()
            self.stats.overflow_dropped += 1
        return PushResult.ACCEPTED

    def mark_non_audio(self, sequence: int) -> None:
        """A packet of the same stream that is not audio (telephone-event) used this number."""
        ext = self._map(sequence)
        if (self._next is None or ext >= self._next) and ext not in self._buf:
            self._buf[ext] = None

    def reset(self) -> None:
        """New SSRC (re-INVITE, SBC failover): restart numbering without a glitch.

        Audio already buffered from the old stream is kept; the new stream's numbers are mapped
        to continue right after it, and playout goes on without re-priming, so the caller hears
        no gap and no old packet is mistaken for a late or duplicate new one.
        """
        self._ext = SequenceExtender()
        self._rebase = True

    # ----------------------------------------------------------------- output

    @property
    def depth_ms(self) -> int:
        return self._depth_samples // self._samples_per_ms

    def pop(self) -> JitterOutput:
        """One packet's worth of playout. Call when the consumer needs more audio."""
        if not self._playing:
            if not self._buf or self.depth_ms < self.target_ms:
                return _EMPTY
            self._playing = True
            first = min(self._buf)
            if self._next is not None and first > self._next:
                self.stats.lost += first - self._next  # skipped while re-priming
            self._next = first
        if not self._buf:
            self._underrun()
            return _EMPTY
        assert self._next is not None
        self._adapt()
        slot = self._next
        self._next += 1
        if slot in self._buf:
            return self._play(slot)
        self.stats.lost += 1
        return JitterOutput(Output.LOSS, samples=self._last_samples)

    def pop_ready(self) -> JitterOutput | None:
        """Arrival-driven playout (the caller track): the next slot if it can play now.

        No priming and no target depth: a packet plays as soon as it is next in sequence. A
        missing slot with a later packet present is a loss at once (reordering on one flow
        is rare, and waiting would hold every later packet). A gap of more than
        `_GAP_SKIP` slots (a sender jump) is counted lost and skipped as one loss, so it is
        not replayed as seconds of concealment. None: nothing can play yet.
        """
        if not self._buf:
            return None
        if self._next is None:
            self._next = min(self._buf)
        slot = self._next
        if slot in self._buf:
            self._next += 1
            return self._play(slot)
        first = min(self._buf)
        missing = first - slot
        if missing > _GAP_SKIP:
            self.stats.lost += missing
            self._next = first
        else:
            self.stats.lost += 1
            self._next = slot + 1
        return JitterOutput(Output.LOSS, samples=self._last_samples)

    # -------------------------------------------------------------- internals

    def _play(self, slot: int) -> JitterOutput:
        """Take the buffered `slot` out: its audio, or silence for a non-audio slot."""
        payload = self._buf.pop(slot)
        if payload is None:
            return JitterOutput(Output.SILENCE, samples=self._last_samples)
        self._depth_samples -= len(payload)
        self._last_samples = len(payload)
        return JitterOutput(Output.AUDIO, payload, len(payload))

    def _underrun(self) -> None:
        self.stats.underruns += 1
        self._playing = False
        self._pops_since_underrun = 0
        self.target_ms = min(self._max_ms, self.target_ms + self._frame_ms)

    def _adapt(self) -> None:
        self._window_min = min(self._window_min, self.depth_ms)
        self._window_pops += 1
        self._pops_since_underrun += 1
        if self._window_pops >= _WINDOW_POPS:
            if self._window_min > self.target_ms + self._frame_ms // 2 and len(self._buf) > 1:
                self._drop_oldest()
                self.stats.shrink_dropped += 1
            self._window_min = 1 << 30
            self._window_pops = 0
        if self._pops_since_underrun >= _DECAY_POPS and self.target_ms > self._initial_ms:
            self.target_ms = max(self._initial_ms, self.target_ms - self._frame_ms)
            self._pops_since_underrun = 0

    def _drop_oldest(self) -> None:
        oldest = min(self._buf)
        if self._next is not None and oldest > self._next:
            self.stats.lost += oldest - self._next  # a gap skipped along with it
        payload = self._buf.pop(oldest)
        if payload is not None:
            self._depth_samples -= len(payload)
        self._next = oldest + 1

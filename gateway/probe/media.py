"""The probe's two audio directions on one 20 ms monotonic clock, over an `RtpSession`.

Sending: one G.711 packet per tick on an absolute schedule (start + n·20 ms, like the gateway's
own pump, so the far end sees a steady stream): our phrase, then silence until the call ends.
With `turns` > 1 the probe holds a conversation: after each phrase it listens, and says the
phrase again once the reply is over (`REPLY_END_S` without voice) or after `LISTEN_LIMIT_S`
without one, so load tests get speech both ways for as long as the call lasts. The marker bit
starts each talkspurt (RFC 3551 §4.1). A loop stall longer than three frames is skipped
(timestamps jump) rather than burst.

Receiving is measured where packets arrive, not where they are played: `ArrivalTap` is the
session's jitter buffer and also reports each accepted payload with its arrival time, so first
audio and turn latency are not blurred by playout delay. The recording comes from the playout
side (the same buffer popped once per tick: reordered, losses as silence, gaps as silence), so
it is time-aligned with the call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from gateway.media.jitter import JitterBuffer, Output, PushResult
from gateway.media.rtp_session import RtpSession
from gateway.media.transcode import G711Codec
from gateway.probe.audio import FRAME_S, FRAME_SAMPLES, RATE, HeardAudio, Pcm
from gateway.probe.report import REPLY_MIN_S

log = logging.getLogger(__name__)


class ArrivalTap(JitterBuffer):
    """A jitter buffer that also hands every accepted audio payload to `on_audio` on arrival."""

    def __init__(self, on_audio: Callable[[bytes], None], clock_rate: int = 8000) -> None:
        super().__init__(clock_rate=clock_rate)
        self._on_audio = on_audio

    def push(self, sequence: int, payload: bytes) -> PushResult:
        result = super().push(sequence, payload)
        if result is PushResult.ACCEPTED:
            self._on_audio(payload)
        return result


REPLY_END_S = 0.8  # this long without voice after a reply: the far end has finished its turn
LISTEN_LIMIT_S = 6.0  # no reply this long after our phrase: speak the next turn anyway


@dataclass(slots=True)
class Turn:
    """One phrase of ours and what came back after it (loop times)."""

    phrase_end_at: float | None = None  # our phrase's last voiced frame ended
    reply_at: float | None = None  # first non-silent frame received at or after phrase_end_at
    reply_samples: int = 0  # non-silent samples received after phrase_end_at
    last_voice_at: float | None = None
    started_at: float | None = None  # our phrase's first voiced frame was sent
    heard_from_start_at: float | None = None  # first non-silent frame received after that

    @property
    def latency_s(self) -> float | None:
        if self.reply_at is None or self.phrase_end_at is None:
            return None
        return self.reply_at - self.phrase_end_at

    @property
    def reply_s(self) -> float:
        return self.reply_samples / RATE

    @property
    def answered(self) -> bool:
        return self.reply_s >= REPLY_MIN_S - 1e-9


@dataclass(frozen=True, slots=True)
class MediaResult:
    spoke_s: float
    first_audio_at: float | None  # loop time of the first non-silent frame received
    turns: tuple[Turn, ...]  # the phrases we began, in order
    heard_hz: float | None
    heard_dbfs: float | None
    max_gap_s: float | None = None  # longest time between two packets received

    @property
    def onset_delays_s(self) -> tuple[float, ...]:
        """Our phrase's start → first voice heard after it, per phrase. Against an echoing far
        end (bench/far_end.py) this is the round trip of audio through the gateway."""
        return tuple(t.heard_from_start_at - t.started_at for t in self.turns
                     if t.started_at is not None and t.heard_from_start_at is not None)

    @property
    def turns_answered(self) -> int:
        return sum(1 for t in self.turns if t.answered)

    @property
    def reply_heard(self) -> bool:
        """Every phrase we said got a reply of at least REPLY_MIN_S."""
        return bool(self.turns) and self.turns_answered == len(self.turns)

    @property
    def reply_speech_s(self) -> float:
        return sum(t.reply_s for t in self.turns)

    @property
    def turn_latency_s(self) -> float | None:
        return self.turns[0].latency_s if self.turns else None

    @property
    def turn_latencies_s(self) -> tuple[float, ...]:
        return tuple(lat for t in self.turns if (lat := t.latency_s) is not None)


class ProbeMedia:
    """Says `frames` (20 ms, 8 kHz s16) `turns` times, listening in between; measures what it
    hears, optionally records it."""

    def __init__(
        self, frames: Sequence[Pcm], voiced: Sequence[bool], record: bool, turns: int = 1
    ) -> None:
        if len(frames) != len(voiced):
            raise ValueError("one voiced flag per frame")
        if turns < 1:
            raise ValueError("turns must be at least 1")
        self._loop = asyncio.get_running_loop()
        self._frames = frames
        self._voiced = voiced
        self._last_voiced = max((i for i, v in enumerate(voiced) if v), default=None)
        self._turns_wanted = turns
        self._turns: list[Turn] = []
        self._cursor: int | None = None  # next frame of the phrase being said; None: listening
        self._record = record
        self._recording: list[Pcm] = []
        self._codecs: dict[str, G711Codec] = {}
        self._rtp: RtpSession | None = None
        self._heard = HeardAudio()
        self._first_audio_at: float | None = None
        self._spoke_frames = 0
        self._pending: list[Pcm] = []
        self._pending_samples = 0
        self._last_arrival: float | None = None
        self._max_gap = 0.0
        self.tap = ArrivalTap(self._arrived)

    def attach(self, rtp: RtpSession) -> None:
        """The session whose jitter buffer is `self.tap` (opened before the INVITE is sent)."""
        self._rtp = rtp

    def _codec(self) -> G711Codec:
        assert self._rtp is not None
        name = self._rtp.params.codec
        codec = self._codecs.get(name)
        if codec is None:
            codec = self._codecs[name] = G711Codec(name)
        return codec

    # ---------------------------------------------------------------- receiving

    def _arrived(self, payload: bytes) -> None:
        if self._rtp is None:
            return
        now = self._loop.time()
        if self._last_arrival is not None:
            self._max_gap = max(self._max_gap, now - self._last_arrival)
        self._last_arrival = now
        pcm = self._codec().decode(payload)
        if not self._heard.add(pcm):
            return
        if self._first_audio_at is None:
            self._first_audio_at = now
        turn = self._turns[-1] if self._turns else None
        if turn is not None and turn.started_at is not None and turn.heard_from_start_at is None:
            turn.heard_from_start_at = now
        # Before our phrase is out, what we hear is a greeting or crosstalk, not a reply.
        if turn is not None and turn.phrase_end_at is not None and now >= turn.phrase_end_at:
            if turn.reply_at is None:
                turn.reply_at = now
            turn.reply_samples += pcm.size
            turn.last_voice_at = now

    def _playout(self) -> None:
        """Pop one tick of audio from the jitter buffer (keeps it drained); record it if asked."""
        while self._pending_samples < FRAME_SAMPLES:
            out = self.tap.pop()
            if out.kind is Output.AUDIO:
                pcm = self._codec().decode(out.payload)
            elif out.kind in (Output.LOSS, Output.SILENCE):
                pcm = np.zeros(out.samples, dtype=np.int16)
            else:  # EMPTY: nothing arrived for this tick
                pcm = np.zeros(FRAME_SAMPLES - self._pending_samples, dtype=np.int16)
            self._pending.append(pcm)
            self._pending_samples += pcm.size
        chunk = np.concatenate(self._pending)
        self._pending = [chunk[FRAME_SAMPLES:]] if chunk.size > FRAME_SAMPLES else []
        self._pending_samples = chunk.size - FRAME_SAMPLES
        if self._record:
            self._recording.append(chunk[:FRAME_SAMPLES])

    # ------------------------------------------------------------------ sending

    def _start_turn(self, now: float) -> None:
        turn = Turn()
        if self._last_voiced is None:
            turn.phrase_end_at = now  # nothing voiced to say: anything heard is a reply
        self._turns.append(turn)
        self._cursor = 0

    def _turn_over(self, now: float) -> bool:
        turn = self._turns[-1]
        if turn.phrase_end_at is None:
            return False
        if turn.answered and turn.last_voice_at is not None:
            return now - turn.last_voice_at >= REPLY_END_S
        return now - turn.phrase_end_at >= LISTEN_LIMIT_S

    def _tick(self, now: float, skip: int = 0) -> None:
        """Send this tick's packet; with `skip`, first drop that many frames (loop stalled)."""
        assert self._rtp is not None
        if self._cursor is None and len(self._turns) < self._turns_wanted and (
            not self._turns or self._turn_over(now)
        ):
            self._start_turn(now)
        cursor = self._cursor
        if cursor is not None and skip:
            # Frames skipped in a stall are not said; the phrase still ends where it ends.
            if self._last_voiced is not None and cursor <= self._last_voiced < cursor + skip:
                self._turns[-1].phrase_end_at = now
            cursor += skip
        codec = self._codec()
        if cursor is None or cursor >= len(self._frames):
            self._cursor = None
            self._rtp.send_audio(codec.silence(), FRAME_SAMPLES)
            return
        voiced = self._voiced[cursor]
        starts = voiced and (cursor == 0 or not self._voiced[cursor - 1])
        self._spoke_frames += voiced
        if starts and self._turns[-1].started_at is None:
            self._turns[-1].started_at = now
        self._rtp.send_audio(codec.encode(self._frames[cursor]), FRAME_SAMPLES, starts)
        if cursor == self._last_voiced:
            self._turns[-1].phrase_end_at = now + FRAME_S
        self._cursor = cursor + 1 if cursor + 1 < len(self._frames) else None

    async def run(self) -> None:
        """Tick until cancelled."""
        assert self._rtp is not None
        start = self._loop.time()
        ticks = 0
        skip = 0
        while True:
            self._tick(self._loop.time(), skip)
            self._playout()
            ticks += 1
            skip = 0
            delay = start + ticks * FRAME_S - self._loop.time()
            if delay < -3 * FRAME_S:
                # The loop stalled: skip the missed ticks instead of bursting packets at the
                # far end (timestamps jump; its jitter buffer conceals).
                skip = int(-delay / FRAME_S)
                log.debug("probe clock slipped %d frames", skip)
                self._rtp.skip_samples(skip * FRAME_SAMPLES)
                ticks += skip
                delay = start + ticks * FRAME_S - self._loop.time()
            await asyncio.sleep(max(0.0, delay))

    # ------------------------------------------------------------------ results

    def recording(self) -> Pcm:
        return np.concatenate(self._recording) if self._recording else np.zeros(0, np.int16)

    def result(self) -> MediaResult:
        return MediaResult(
            spoke_s=self._spoke_frames * FRAME_S,
            first_audio_at=self._first_audio_at,
            turns=tuple(replace(t) for t in self._turns),
            heard_hz=self._heard.dominant_hz(),
            heard_dbfs=self._heard.level_dbfs(),
            max_gap_s=self._max_gap if self._last_arrival is not None else None,
        )

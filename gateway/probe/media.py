"""The probe's two audio directions on one 20 ms monotonic clock, over an `RtpSession`.

Sending: one G.711 packet per tick on an absolute schedule (start + n·20 ms, like the gateway's
own pump, so the far end sees a steady stream): our phrase, then silence until the call ends.
The marker bit starts each talkspurt (RFC 3551 §4.1). A loop stall longer than three frames is
skipped (timestamps jump) rather than burst.

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
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class MediaResult:
    spoke_s: float
    first_audio_at: float | None  # loop time of the first non-silent frame received
    phrase_end_at: float | None  # loop time our phrase's last voiced frame ended
    reply_at: float | None  # first non-silent frame at or after phrase_end_at
    reply_speech_s: float
    heard_hz: float | None
    heard_dbfs: float | None

    @property
    def reply_heard(self) -> bool:
        return self.reply_speech_s >= REPLY_MIN_S - 1e-9

    @property
    def turn_latency_s(self) -> float | None:
        if self.reply_at is None or self.phrase_end_at is None:
            return None
        return self.reply_at - self.phrase_end_at


class ProbeMedia:
    """Plays `frames` (20 ms, 8 kHz s16) then silence; listens, measures, optionally records."""

    def __init__(self, frames: Sequence[Pcm], voiced: Sequence[bool], record: bool) -> None:
        if len(frames) != len(voiced):
            raise ValueError("one voiced flag per frame")
        self._loop = asyncio.get_running_loop()
        self._frames = frames
        self._voiced = voiced
        self._last_voiced = max((i for i, v in enumerate(voiced) if v), default=None)
        self._record = record
        self._recording: list[Pcm] = []
        self._codecs: dict[str, G711Codec] = {}
        self._rtp: RtpSession | None = None
        self._heard = HeardAudio()
        self._first_audio_at: float | None = None
        self._phrase_end_at: float | None = None
        self._reply_at: float | None = None
        self._reply_samples = 0
        self._spoke_frames = 0
        self._pending: list[Pcm] = []
        self._pending_samples = 0
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
        pcm = self._codec().decode(payload)
        if not self._heard.add(pcm):
            return
        if self._first_audio_at is None:
            self._first_audio_at = now
        # Before the phrase is out, what we hear is a greeting or crosstalk, not a reply.
        if self._phrase_end_at is not None and now >= self._phrase_end_at:
            if self._reply_at is None:
                self._reply_at = now
            self._reply_samples += pcm.size

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

    def _send(self, index: int, now: float) -> None:
        assert self._rtp is not None
        codec = self._codec()
        if index < len(self._frames):
            voiced = self._voiced[index]
            starts = voiced and (index == 0 or not self._voiced[index - 1])
            self._spoke_frames += voiced
            self._rtp.send_audio(codec.encode(self._frames[index]), FRAME_SAMPLES, starts)
            if index == self._last_voiced:
                self._phrase_end_at = now + FRAME_S
            elif self._last_voiced is None and index == 0:
                self._phrase_end_at = now  # nothing voiced to play: any reply counts
        else:
            self._rtp.send_audio(codec.silence(), FRAME_SAMPLES)

    async def run(self) -> None:
        """Tick until cancelled."""
        assert self._rtp is not None
        start = self._loop.time()
        index = 0
        while True:
            self._send(index, self._loop.time())
            self._playout()
            index += 1
            delay = start + index * FRAME_S - self._loop.time()
            if delay < -3 * FRAME_S:
                # The loop stalled: skip the missed ticks instead of bursting packets at the
                # far end (timestamps jump; its jitter buffer conceals).
                missed = int(-delay / FRAME_S)
                log.debug("probe clock slipped %d frames", missed)
                self._rtp.skip_samples(missed * FRAME_SAMPLES)
                if self._last_voiced is not None and index <= self._last_voiced < index + missed:
                    self._phrase_end_at = self._loop.time()
                index += missed
                delay = start + index * FRAME_S - self._loop.time()
            await asyncio.sleep(max(0.0, delay))

    # ------------------------------------------------------------------ results

    def recording(self) -> Pcm:
        return np.concatenate(self._recording) if self._recording else np.zeros(0, np.int16)

    def result(self) -> MediaResult:
        return MediaResult(
            spoke_s=self._spoke_frames * FRAME_S,
            first_audio_at=self._first_audio_at,
            phrase_end_at=self._phrase_end_at,
            reply_at=self._reply_at,
            reply_speech_s=self._reply_samples / RATE,
            heard_hz=self._heard.dominant_hz(),
            heard_dbfs=self._heard.level_dbfs(),
        )

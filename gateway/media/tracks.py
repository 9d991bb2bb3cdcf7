"""The two audio directions between the phone leg (RTP) and the Orga leg (aiortc).

`CallerAudioTrack` (phone → AI): an aiortc `MediaStreamTrack` that aiortc's sender pulls. It
paces itself on a 20 ms monotonic clock (like aiortc's own AudioStreamTrack), and on each tick
pulls the caller's jitter buffer, decodes G.711 (or conceals a loss: one repeat with a fade,
then silence), runs a small energy VAD for turn latency, and hands aiortc one 48 kHz frame with
continuous timestamps. It never waits for the network: nothing arrived means silence.

`AiAudioPump` (AI → phone): reads Orga's remote track into a playout queue bounded in
milliseconds and sends one G.711 RTP packet per tick of its own monotonic 20 ms clock, so bursts
from the AI leg never reach the phone as bursts and the phone never hears gaps between queued
frames (field notes §1). Backlog beyond the bound is dropped oldest-first and counted; silence
in a backlog above the target depth is skipped so standing delay shrinks between AI turns.
Underruns are counted separately during AI speech and in idle silence. While the AI is quiet,
silence packets keep NATs and carriers seeing a live stream (configurable).

`TurnLatencyMeter` joins the two: caller stopped speaking → first non-silent AI audio sent.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from gateway.media.jitter import JitterBuffer, Output
from gateway.media.transcode import (
    PHONE_FRAME_SAMPLES,
    AiResampler,
    AudioFrame,
    CallerResampler,
    EncodedPacket,
    G711Codec,
    OpusPhoneEncoder,
    Pcm,
)
from gateway.sdp import MediaParams

logger = logging.getLogger(__name__)

FRAME_S = 0.020
_FADE = np.linspace(1.0, 0.0, PHONE_FRAME_SAMPLES, dtype=np.float32)


def rms_dbfs(pcm: Pcm) -> float:
    if pcm.size == 0:
        return -120.0
    power = float(np.mean(np.square(pcm, dtype=np.float32)))
    return 10.0 * float(np.log10(max(power, 1e-12))) - 90.3087  # 20·log10(32767) ≈ 90.31


class EnergyVad:
    """Frame energy above a threshold (dBFS) is voice. Phone audio is band-limited and
    G.711's noise floor sits far below -45 dBFS, so a fixed threshold is enough here."""

    def __init__(self, threshold_dbfs: float = -45.0) -> None:
        self.threshold_dbfs = threshold_dbfs

    def voiced(self, pcm: Pcm) -> bool:
        return rms_dbfs(pcm) > self.threshold_dbfs


class TurnLatencyMeter:
    """Turn latency = first non-silent AI audio sent − end of the caller's last voiced frame.

    The caller side reports each 20 ms frame it hands to the AI with the moment that audio
    reached us (`arrival`, i.e. playout time minus the jitter buffer's depth); the AI side
    reports each talkspurt start. One caller utterance yields at most one turn.
    """

    def __init__(self, on_turn: Callable[[float], None] | None = None) -> None:
        self._on_turn = on_turn
        self._caller_voice_end: float | None = None
        self.last_turn_s: float | None = None
        self.turns = 0

    def caller_frame(self, arrival: float, voiced: bool) -> None:
        if voiced:
            self._caller_voice_end = arrival + FRAME_S

    def ai_audio_started(self, now: float) -> float | None:
        end = self._caller_voice_end
        if end is None or now < end:
            return None  # nothing said yet, or the AI talks over the caller
        self._caller_voice_end = None
        latency = now - end
        self.last_turn_s = latency
        self.turns += 1
        if self._on_turn is not None:
            self._on_turn(latency)
        return latency


class CallerAudioSource(Protocol):
    """What the caller track needs from the RTP session (an `RtpSession` satisfies it)."""

    @property
    def jitter(self) -> JitterBuffer: ...

    @property
    def params(self) -> MediaParams: ...

    @property
    def last_audio_arrival(self) -> float | None:
        """Monotonic time (the loop's clock) the latest audio packet arrived, if any."""
        ...


_ANCHOR_S = 0.002  # tick this long after the phone's packets arrive


class CallerAudioTrack(MediaStreamTrack):
    """Caller audio for aiortc's sender.

    `opus=False`: 48 kHz stereo `AudioFrame`s; aiortc resamples and Opus-encodes them in its
    thread pool. `opus=True`: Opus packets encoded here from the 8 kHz signal
    (`OpusPhoneEncoder`); aiortc only packetises them. Use it only when the negotiated audio
    codec is Opus (aiortc cannot tell a track that), e.g. after
    `transceiver.setCodecPreferences([opus])`.
    """

    kind = "audio"

    def __init__(
        self,
        source: CallerAudioSource,
        *,
        vad: EnergyVad | None = None,
        meter: TurnLatencyMeter | None = None,
        opus: bool = False,
    ) -> None:
        super().__init__()
        self._source = source
        self._vad = vad or EnergyVad()
        self._meter = meter
        self._resampler: CallerResampler | None = None if opus else CallerResampler()
        self._opus: OpusPhoneEncoder | None = OpusPhoneEncoder() if opus else None
        self._opus_out: collections.deque[EncodedPacket[Any]] = collections.deque()
        self._codecs: dict[str, G711Codec] = {}
        self._pending: collections.deque[Pcm] = collections.deque()
        self._pending_samples = 0
        self._last: Pcm | None = None  # last decoded frame, for concealment
        self._losses_in_row = 0
        self._start: float | None = None
        self._anchored = False
        self._frames = 0
        self.frames_voiced = 0
        self.frames_concealed = 0
        self.frames_silent_fill = 0

    async def recv(self) -> AudioFrame | EncodedPacket[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        else:
            if not self._anchored:
                self._anchor()
            # Absolute schedule: start + n·20 ms, so waiting never accumulates drift.
            wait = self._start + self._frames * FRAME_S - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
        self._frames += 1
        pcm = self._next_chunk()
        voiced = self._vad.voiced(pcm)
        if voiced:
            self.frames_voiced += 1
        if self._meter is not None:
            arrival = loop.time() - self._source.jitter.depth_ms / 1000.0
            self._meter.caller_frame(arrival, voiced)
        if self._opus is not None:
            self._opus_out.extend(self._opus.encode(pcm))
            while not self._opus_out:  # libopus gives one packet per 20 ms; never stall
                self._opus_out.extend(self._opus.encode(self._next_chunk()))
            return self._opus_out.popleft()
        assert self._resampler is not None
        return self._resampler.process(pcm)

    def _anchor(self) -> None:
        """Phase-lock our 20 ms schedule to the phone's packets, once, at the first one.

        Why: with the jitter buffer holding 40 ms, a packet waits 20 ms plus the time until
        our next tick; ticking 2 ms after the phone's packets arrive makes that 22 ms instead
        of anything from 20 to 40. The schedule moves later by < 20 ms, once (aiortc just
        sends that one frame a little later); timestamps stay continuous.
        """
        arrival = self._source.last_audio_arrival
        if arrival is None or self._start is None:
            return
        self._anchored = True
        next_tick = self._start + self._frames * FRAME_S
        self._start += (arrival + _ANCHOR_S - next_tick) % FRAME_S

    def _codec(self) -> G711Codec:
        name = self._source.params.codec
        codec = self._codecs.get(name)
        if codec is None:
            codec = self._codecs[name] = G711Codec(name)
        return codec

    def _next_chunk(self) -> Pcm:
        """160 samples of caller audio: decoded, concealed, or silence; never waits."""
        jitter = self._source.jitter
        while self._pending_samples < PHONE_FRAME_SAMPLES:
            out = jitter.pop()
            if out.kind is Output.AUDIO:
                pcm = self._codec().decode(out.payload)
                self._last = pcm
                self._losses_in_row = 0
            elif out.kind is Output.LOSS:
                pcm = self._conceal(out.samples)
            elif out.kind is Output.SILENCE:
                pcm = np.zeros(out.samples, dtype=np.int16)
            else:  # EMPTY: priming or underrun: fill with silence rather than stall
                self.frames_silent_fill += 1
                pcm = np.zeros(PHONE_FRAME_SAMPLES - self._pending_samples, dtype=np.int16)
            self._pending.append(pcm)
            self._pending_samples += pcm.shape[0]
        return self._take(PHONE_FRAME_SAMPLES)

    def _conceal(self, samples: int) -> Pcm:
        self.frames_concealed += 1
        self._losses_in_row += 1
        last = self._last
        if self._losses_in_row == 1 and last is not None and last.shape[0] == samples == (
            PHONE_FRAME_SAMPLES
        ):
            return (last.astype(np.float32) * _FADE).astype(np.int16)
        return np.zeros(samples, dtype=np.int16)

    def _take(self, n: int) -> Pcm:
        if self._pending[0].shape[0] == n:  # the usual 20 ms ptime case: no copy
            self._pending_samples -= n
            return self._pending.popleft()
        parts = []
        need = n
        while need:
            head = self._pending[0]
            if head.shape[0] <= need:
                parts.append(self._pending.popleft())
                need -= head.shape[0]
            else:
                parts.append(head[:need])
                self._pending[0] = head[need:]
                need = 0
        self._pending_samples -= n
        return np.concatenate(parts)


class RtpSink(Protocol):
    """Where the pump sends (an `RtpSession` satisfies it)."""

    @property
    def params(self) -> MediaParams: ...

    def send_audio(self, payload: bytes, samples: int, marker: bool = False) -> bool: ...

    def skip_samples(self, samples: int) -> None: ...


@dataclass(slots=True)
class PumpStats:
    frames_in: int = 0
    sent_audio: int = 0
    sent_silence: int = 0
    underruns_speech: int = 0
    underruns_idle: int = 0
    dropped_backlog: int = 0  # oldest audio dropped because the queue passed max_queue_ms
    skipped_silence: int = 0  # silent frames skipped to shrink standing delay
    concealed: int = 0  # first missing frame in speech, filled with a faded repeat
    clock_slips: int = 0  # the loop stalled > 3 frames; we skipped ahead instead of bursting
    queue_ms: int = 0
    queue_ms_peak: int = 0


class AiAudioPump:
    """Orga's audio track → bounded playout queue → paced G.711 RTP."""

    def __init__(
        self,
        track: MediaStreamTrack,
        sink: RtpSink,
        *,
        max_queue_ms: int = 1000,
        target_queue_ms: int = 20,
        keepalive: bool = True,
        vad: EnergyVad | None = None,
        meter: TurnLatencyMeter | None = None,
        on_speech_start: Callable[[float], None] | None = None,
        talkspurt_hangover_ms: int = 200,
    ) -> None:
        self._track = track
        self._sink = sink
        self._max_frames = max(1, max_queue_ms // 20)
        self._target_frames = max(1, target_queue_ms // 20)
        self._keepalive = keepalive
        self._vad = vad or EnergyVad()
        self._meter = meter
        self._on_speech_start = on_speech_start
        self._hangover_ticks = max(1, talkspurt_hangover_ms // 20)
        self._resampler = AiResampler()
        self._queue: collections.deque[tuple[Pcm, bool]] = collections.deque()
        self._codecs: dict[str, G711Codec] = {}
        self._talkspurt = False
        self._quiet_ticks = 0  # ticks since the last voiced frame, while in a talkspurt
        self._pending_underruns = 0
        self._last_sent: Pcm | None = None
        self._stats = PumpStats()
        self._tasks: list[asyncio.Task[None]] = []
        self.first_audio_at: float | None = None
        self.track_ended = asyncio.get_running_loop().create_future()

    @property
    def stats(self) -> PumpStats:
        return replace(self._stats, queue_ms=len(self._queue) * 20)

    def start(self, tasks: asyncio.TaskGroup | None = None) -> None:
        """Start reading and sending (in `tasks`, the owning call's task group, when given)."""
        spawn = tasks.create_task if tasks is not None else asyncio.create_task
        self._tasks = [spawn(self._read(), name="ai-pump-read"),
                       spawn(self._send(), name="ai-pump-send")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            # A task that crashed was reported by the task group that owns it.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    # ---------------------------------------------------------------- input

    async def _read(self) -> None:
        try:
            while True:
                frame = await self._track.recv()
                if isinstance(frame, AudioFrame):
                    self.feed(frame)
        except MediaStreamError:
            logger.info("AI audio track ended")
        if not self.track_ended.done():
            self.track_ended.set_result(None)

    @property
    def speaking(self) -> bool:
        """The AI is in a talkspurt or has speech queued (e.g. its goodbye is still playing)."""
        return self._talkspurt or any(voiced for _, voiced in self._queue)

    def feed(self, frame: AudioFrame) -> None:
        """Queue one decoded AI frame (any rate/layout)."""
        self._stats.frames_in += 1
        self._resampler.push(frame)
        while (pcm := self._resampler.pop()) is not None:
            self._queue.append((pcm, self._vad.voiced(pcm)))
            if len(self._queue) > self._max_frames:
                self._queue.popleft()
                self._stats.dropped_backlog += 1
        peak = len(self._queue) * 20
        if peak > self._stats.queue_ms_peak:
            self._stats.queue_ms_peak = peak

    # --------------------------------------------------------------- output

    async def _send(self) -> None:
        loop = asyncio.get_running_loop()
        next_t = loop.time()
        while True:
            self.tick(loop.time())
            next_t += FRAME_S
            delay = next_t - loop.time()
            if delay < -3 * FRAME_S:
                # The loop stalled: skip the missed ticks (timestamps jump, the phone's
                # jitter buffer conceals) instead of bursting packets at the phone.
                missed = int(-delay / FRAME_S)
                next_t += missed * FRAME_S
                self._sink.skip_samples(missed * PHONE_FRAME_SAMPLES)
                self._stats.clock_slips += 1
                delay = next_t - loop.time()
            await asyncio.sleep(max(0.0, delay))

    def tick(self, now: float) -> None:
        """One 20 ms slot: send the next queued frame, or silence, or nothing."""
        q = self._queue
        # Shrink standing delay: drop silence while we hold more than the target (not inside a
        # talkspurt, where short pauses are part of speech).
        while len(q) > self._target_frames and not q[0][1] and not self._talkspurt:
            q.popleft()
            self._stats.skipped_silence += 1
        if q:
            pcm, voiced = q.popleft()
            marker = False
            if voiced:
                if not self._talkspurt:
                    self._talkspurt = True
                    marker = True  # RFC 3551 §4.1: first packet of a talkspurt
                    self._speech_started(now)
                elif self._pending_underruns:
                    self._stats.underruns_speech += self._pending_underruns
                self._pending_underruns = 0
                self._quiet_ticks = 0
            else:
                self._quiet(underrun=False)
            self._sink.send_audio(self._codec().encode(pcm), PHONE_FRAME_SAMPLES, marker)
            self._stats.sent_audio += 1
            self._last_sent = pcm
            return
        first_gap_in_speech = self._talkspurt and self._pending_underruns == 0
        self._quiet(underrun=True)
        if first_gap_in_speech and self._last_sent is not None:
            # A frame missing mid-speech (lost on the AI leg, or late): repeat the last one
            # with a fade rather than cutting to silence; longer gaps fall to silence.
            faded = (self._last_sent.astype(np.float32) * _FADE).astype(np.int16)
            self._sink.send_audio(self._codec().encode(faded), PHONE_FRAME_SAMPLES)
            self._stats.concealed += 1
        elif self._keepalive:
            self._sink.send_audio(self._codec().silence(), PHONE_FRAME_SAMPLES)
            self._stats.sent_silence += 1
        else:
            self._sink.skip_samples(PHONE_FRAME_SAMPLES)

    def _quiet(self, underrun: bool) -> None:
        if not self._talkspurt:
            if underrun:
                self._stats.underruns_idle += 1
            return
        self._quiet_ticks += 1
        if underrun:
            self._pending_underruns += 1  # decided when we learn whether speech resumes
        if self._quiet_ticks >= self._hangover_ticks:
            self._talkspurt = False
            self._stats.underruns_idle += self._pending_underruns
            self._pending_underruns = 0

    def _speech_started(self, now: float) -> None:
        if self.first_audio_at is None:
            self.first_audio_at = now
        if self._meter is not None:
            self._meter.ai_audio_started(now)
        if self._on_speech_start is not None:
            self._on_speech_start(now)

    def _codec(self) -> G711Codec:
        name = self._sink.params.codec
        codec = self._codecs.get(name)
        if codec is None:
            codec = self._codecs[name] = G711Codec(name)
        return codec

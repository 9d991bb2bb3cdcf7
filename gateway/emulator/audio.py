"""The emulator agent's ears and voice: energy VAD, pitch estimate, reply audio, paced track.

- `UtteranceDetector`: an utterance is ≥ 300 ms of frames above a level threshold followed by
  ≥ 500 ms below it (issue 4, item 11). Driven by sample counts, not clocks, so it is deterministic.
- `dominant_frequency`: the strongest spectral peak (Hann window, parabolic interpolation).
- `two_tone_phrase`: the default "spoken-like" reply, ~1.5 s of six syllables (200 ms tone +
  50 ms pause, sine-shaped envelope) in the pattern A A B A A B with A = 660 Hz and B = 880 Hz
  at equal level, so its dominant frequency is **660 Hz** (A carries twice B's energy).
- `load_wav`: a 16-bit PCM WAV file as mono float samples at 48 kHz (linear resampling).
- `AgentAudioTrack`: an aiortc audio track that emits 20 ms frames paced in real time, playing
  queued replies and silence in between.
The emulator is a stand-in for a remote server, so it builds `av.AudioFrame`s itself here (aiortc
requires them) instead of going through the gateway's media plane.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time
import wave
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from gateway.analysis import dominant_frequency as _dominant_frequency

RATE = 48000
FRAME_SAMPLES = 960  # 20 ms at 48 kHz
REPLY_TONE_A_HZ = 660.0
REPLY_TONE_B_HZ = 880.0
REPLY_DOMINANT_HZ = REPLY_TONE_A_HZ

Samples = npt.NDArray[np.float32]


def level_dbfs(samples: Samples) -> float:
    if samples.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20.0 * math.log10(max(rms, 1e-6))


def dominant_frequency(samples: Samples, rate: int = RATE) -> float:
    """Dominant frequency of emulator-side audio (48 kHz unless told otherwise)."""
    return _dominant_frequency(samples, rate)


def frame_to_mono(frame: av.AudioFrame) -> Samples:
    """A decoded aiortc frame (s16, packed stereo usually) as mono float in [-1, 1]."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        mono = data.reshape(channels, -1).mean(axis=0)
    else:
        mono = data.reshape(-1, channels).mean(axis=1)
    scale = 32768.0 if data.dtype == np.int16 else 1.0
    result: Samples = (mono / scale).astype(np.float32)
    return result


def pcm_to_float(pcm: npt.NDArray[np.int16]) -> Samples:
    """Mono s16 samples (the tuned receiver's output) as float in [-1, 1]."""
    result: Samples = pcm.astype(np.float32) / np.float32(32768.0)
    return result


def two_tone_phrase(seconds: float = 1.5, rate: int = RATE, amplitude: float = 0.5) -> Samples:
    slot = seconds / 6.0
    tone_len = int(slot * 0.8 * rate)
    gap = np.zeros(int(slot * rate) - tone_len, dtype=np.float32)
    t = np.arange(tone_len) / rate
    envelope = np.sin(np.pi * np.arange(tone_len) / tone_len)  # one "syllable"
    parts: list[Samples] = []
    for freq in (REPLY_TONE_A_HZ, REPLY_TONE_A_HZ, REPLY_TONE_B_HZ) * 2:
        syllable = amplitude * envelope * np.sin(2 * np.pi * freq * t)
        parts += [syllable.astype(np.float32), gap]
    return np.concatenate(parts)


def load_wav(path: Path) -> Samples:
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV files are supported")
        channels, rate = wav.getnchannels(), wav.getframerate()
        raw = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    mono = raw.reshape(-1, channels).mean(axis=1) / 32768.0
    if rate != RATE and mono.size:
        positions = np.arange(int(mono.size * RATE / rate)) * (rate / RATE)
        mono = np.interp(positions, np.arange(mono.size), mono)
    result: Samples = mono.astype(np.float32)
    return result


@dataclass(frozen=True, slots=True)
class Utterance:
    speech_s: float
    dominant_hz: float
    level_dbfs: float


class UtteranceDetector:
    """Energy-based end-of-utterance detection over a stream of mono float frames."""

    def __init__(
        self,
        threshold_dbfs: float = -40.0,
        min_speech_s: float = 0.3,
        min_silence_s: float = 0.5,
        rate: int = RATE,
        analysis_s: float = 2.0,
    ) -> None:
        self.threshold_dbfs = threshold_dbfs
        self._min_speech = int(min_speech_s * rate)
        self._min_silence = int(min_silence_s * rate)
        self._rate = rate
        self._speech = 0
        self._silence = 0
        # Bounded: the pitch estimate uses the last `analysis_s` of voiced audio.
        self._voiced: deque[Samples] = deque(maxlen=max(1, int(analysis_s * rate / 960)))

    def feed(self, samples: Samples) -> Utterance | None:
        if level_dbfs(samples) >= self.threshold_dbfs:
            self._speech += samples.size
            self._silence = 0
            self._voiced.append(samples)
            return None
        self._silence += samples.size
        if self._silence < self._min_silence:
            return None
        utterance = None
        if self._speech >= self._min_speech:
            voiced = np.concatenate(list(self._voiced))
            utterance = Utterance(
                speech_s=self._speech / self._rate,
                dominant_hz=dominant_frequency(voiced, self._rate),
                level_dbfs=level_dbfs(voiced),
            )
        self._speech = 0
        self._voiced.clear()
        return utterance


class AgentAudioTrack(MediaStreamTrack):
    """20 ms mono frames at 48 kHz, paced in real time: queued replies, else silence."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: deque[tuple[Samples, asyncio.Future[None]]] = deque()
        self._current: Samples | None = None
        self._current_done: asyncio.Future[None] | None = None
        self._offset = 0
        self._start: float | None = None
        self._pts = 0
        self._frozen: asyncio.Future[None] | None = None

    @property
    def playing(self) -> bool:
        return self._current is not None or bool(self._queue)

    def interrupt(self) -> None:
        """Barge-in: drop the reply being played and any queued; their futures resolve."""
        pending = [done for _, done in self._queue]
        if self._current_done is not None:
            pending.append(self._current_done)
        self._queue.clear()
        self._current, self._current_done = None, None
        for done in pending:
            if not done.done():
                done.set_result(None)

    def freeze(self) -> None:
        """Hand out no more frames (the sender then sends no RTP) until stopped."""
        if self._frozen is None:
            self._frozen = asyncio.get_running_loop().create_future()

    def play(self, samples: Samples) -> asyncio.Future[None]:
        """Queue a reply; the future resolves when its last frame has been handed out."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((samples, done))
        return done

    def _next_samples(self) -> Samples:
        out = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        filled = 0
        while filled < FRAME_SAMPLES:
            if self._current is None:
                if not self._queue:
                    break
                self._current, self._current_done = self._queue.popleft()
                self._offset = 0
            take = min(FRAME_SAMPLES - filled, self._current.size - self._offset)
            out[filled : filled + take] = self._current[self._offset : self._offset + take]
            filled += take
            self._offset += take
            if self._offset >= self._current.size:
                if self._current_done is not None and not self._current_done.done():
                    self._current_done.set_result(None)
                self._current, self._current_done = None, None
        return out

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._frozen is not None:
            await self._frozen  # cancelled with the sender when the peer closes
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += FRAME_SAMPLES
            wait = self._start + self._pts / RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        pcm = (np.clip(self._next_samples(), -1.0, 1.0) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        return frame

    def stop(self) -> None:
        super().stop()
        if self._frozen is not None and not self._frozen.done():
            self._frozen.cancel()
        for _, done in self._queue:
            if not done.done():
                done.cancel()
        if self._current_done is not None and not self._current_done.done():
            self._current_done.cancel()
        self._queue.clear()

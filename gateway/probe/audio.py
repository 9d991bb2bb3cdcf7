"""The probe's audio: the spoken-like test phrase, WAV I/O at 8 kHz, and analysis of what it hears.

`spoken_phrase()` is what the probe says by default. It has to sound enough like speech that a
voice agent's VAD treats it as an utterance (the emulator's energy VAD wants ≥ 300 ms of voice
then ≥ 500 ms of silence; a real service's VAD wants voicing and syllable rhythm), and it must
be exactly repeatable so measurements compare across runs. So it is synthesised, not random:
six syllables of a glottal-like harmonic series whose pitch glides (with an overall fall, as a
statement has), shaped by two formant resonances that change per syllable like vowels do, with
attack/release envelopes and short pauses between syllables; then silence.

WAV files are mono (stereo is downmixed) 16-bit PCM at any rate; other rates go through the
media plane's resampler (`transcode.AiResampler`, so PyAV stays in `transcode.py`).

Analysis reuses the media plane's frame energy (`voice.rms_dbfs`, `voice.EnergyVad`); the
spectral peak is computed here rather than borrowed from the emulator, because the probe must
not depend on the component it is used to test.
"""

from __future__ import annotations

import wave
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gateway.analysis import dominant_frequency
from gateway.media.transcode import PHONE_FRAME_SAMPLES, PHONE_RATE, AiResampler, make_frame
from gateway.media.voice import EnergyVad, rms_dbfs

Pcm = npt.NDArray[np.int16]

RATE = PHONE_RATE  # everything the probe sends or records is 8 kHz mono s16
FRAME_SAMPLES = PHONE_FRAME_SAMPLES  # 20 ms
FRAME_S = FRAME_SAMPLES / RATE


@dataclass(frozen=True, slots=True)
class Syllable:
    seconds: float
    f0_start_hz: float
    f0_end_hz: float
    formants_hz: tuple[float, float]  # F1, F2 of the "vowel"
    pause_after_s: float


# About 1.7 s of speech: pitch 110-190 Hz (a typical adult range), vowel-like formant pairs
# (/a/, /i/, /o/, /e/ ...), pauses of 40-90 ms (far below the 500 ms that ends an utterance).
PHRASE: tuple[Syllable, ...] = (
    Syllable(0.22, 150.0, 172.0, (730.0, 1090.0), 0.06),
    Syllable(0.18, 170.0, 160.0, (300.0, 2250.0), 0.05),
    Syllable(0.26, 158.0, 188.0, (570.0, 840.0), 0.09),
    Syllable(0.20, 185.0, 150.0, (530.0, 1840.0), 0.05),
    Syllable(0.24, 148.0, 136.0, (440.0, 1020.0), 0.07),
    Syllable(0.30, 140.0, 110.0, (730.0, 1090.0), 0.0),
)
PHRASE_PEAK_DBFS = -3.0
TRAILING_SILENCE_S = 0.8
_FORMANT_BANDWIDTH_HZ = 120.0
_LOW_CUT_HZ = 300.0
_TOP_HZ = 3400.0  # telephone band: no harmonic above it (and none near Nyquist at 8 kHz)
_ATTACK_S = 0.025
_RELEASE_S = 0.05


def _syllable(s: Syllable, declination: float) -> npt.NDArray[np.float64]:
    n = round(s.seconds * RATE)
    t = np.arange(n) / RATE
    # Pitch glides linearly within the syllable; `declination` lowers the whole phrase slowly.
    f0 = (s.f0_start_hz + (s.f0_end_hz - s.f0_start_hz) * t / s.seconds) * declination
    phase = 2.0 * np.pi * np.cumsum(f0) / RATE
    out = np.zeros(n)
    for k in range(1, int(_TOP_HZ // f0.max()) + 1):
        fk = k * f0
        # Source: -6 dB/octave glottal tilt; filter: two resonances (vowel formants) and the
        # telephone band's low cut, so the fundamental is weak as it is on a real phone line.
        gain = sum(1.0 / (1.0 + ((fk - f) / _FORMANT_BANDWIDTH_HZ) ** 2) for f in s.formants_hz)
        low_cut = 1.0 / (1.0 + (_LOW_CUT_HZ / fk) ** 4)
        out += (1.0 / k) * (0.15 + gain) * low_cut * np.sin(k * phase)
    attack, release = round(_ATTACK_S * RATE), round(_RELEASE_S * RATE)
    envelope = np.ones(n)
    envelope[:attack] = 0.5 - 0.5 * np.cos(np.pi * np.arange(attack) / attack)
    envelope[-release:] = 0.5 + 0.5 * np.cos(np.pi * np.arange(release) / release)
    return out * envelope


def spoken_phrase(trailing_silence_s: float = TRAILING_SILENCE_S) -> Pcm:
    """The default utterance: ~1.7 s of speech-like sound, then `trailing_silence_s` of zeros."""
    parts: list[npt.NDArray[np.float64]] = []
    for index, syllable in enumerate(PHRASE):
        declination = 1.0 - 0.08 * index / (len(PHRASE) - 1)
        parts.append(_syllable(syllable, declination))
        parts.append(np.zeros(round(syllable.pause_after_s * RATE)))
    parts.append(np.zeros(round(trailing_silence_s * RATE)))
    signal = np.concatenate(parts)
    peak = 32767.0 * 10 ** (PHRASE_PEAK_DBFS / 20)
    scaled: Pcm = np.round(signal * (peak / np.abs(signal).max())).astype(np.int16)
    return scaled


# ----------------------------------------------------------------------------------- WAV I/O


class WavError(ValueError):
    """A WAV file the probe cannot play (not 16-bit PCM, unreadable)."""


def read_wav(path: Path) -> Pcm:
    """A 16-bit PCM WAV file as 8 kHz mono s16 (stereo downmixed, other rates resampled)."""
    try:
        with wave.open(str(path), "rb") as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            raw = wav.readframes(wav.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise WavError(f"{path}: {exc}") from exc
    if width != 2:
        raise WavError(f"{path}: {8 * width}-bit samples; only 16-bit PCM WAV is supported")
    samples = np.frombuffer(raw, dtype="<i2").astype(np.int16)
    if channels > 1:
        samples = samples[: samples.size - samples.size % channels]
        mixed = samples.reshape(-1, channels).astype(np.int32).mean(axis=1)
        samples = np.round(mixed).astype(np.int16)
    return resample_to_phone(samples, rate)


def resample_to_phone(samples: Pcm, rate: int) -> Pcm:
    """Mono s16 at `rate` → 8 kHz through the media plane's resampler (band-limited, no alias)."""
    if rate == RATE or samples.size == 0:
        return samples.astype(np.int16, copy=True)
    resampler = AiResampler()
    chunk = max(1, rate // 50)  # 20 ms pieces keep the resampler's FIFO small
    # Trailing zeros push the filter's delayed samples out; the result is cut to length.
    padded = np.concatenate([samples, np.zeros(chunk * 4, dtype=np.int16)])
    out: list[Pcm] = []
    for pts in range(0, padded.size, chunk):
        resampler.push(make_frame(np.ascontiguousarray(padded[pts : pts + chunk]), rate, pts))
        while (piece := resampler.pop()) is not None:
            out.append(piece)
    expected = round(samples.size * RATE / rate)
    result: Pcm = np.concatenate(out)[:expected] if out else np.zeros(0, dtype=np.int16)
    if result.size < expected:
        result = np.concatenate([result, np.zeros(expected - result.size, dtype=np.int16)])
    return result


def write_wav(path: Path, pcm: Pcm, rate: int = RATE) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.astype("<i2").tobytes())


# ---------------------------------------------------------------------------------- analysis


def split_frames(pcm: Pcm) -> list[Pcm]:
    """20 ms frames; the last one is padded with silence."""
    pad = (-pcm.size) % FRAME_SAMPLES
    if pad:
        pcm = np.concatenate([pcm, np.zeros(pad, dtype=np.int16)])
    return [pcm[i : i + FRAME_SAMPLES] for i in range(0, pcm.size, FRAME_SAMPLES)]


def dominant_hz(pcm: Pcm, rate: int = RATE) -> float:
    """Dominant frequency of phone-side audio (8 kHz unless told otherwise)."""
    return dominant_frequency(pcm, rate)


class HeardAudio:
    """Voiced audio the probe received, kept (bounded) for its frequency and level."""

    def __init__(self, vad: EnergyVad | None = None, keep_s: float = 10.0) -> None:
        self.vad = vad or EnergyVad()
        self._voiced: deque[Pcm] = deque(maxlen=max(1, int(keep_s / FRAME_S)))
        self.voiced_samples = 0

    def add(self, pcm: Pcm) -> bool:
        """Account one received chunk; True when it is voiced (non-silent)."""
        if not self.vad.voiced(pcm):
            return False
        self._voiced.append(pcm)
        self.voiced_samples += pcm.size
        return True

    def _joined(self) -> Pcm:
        return np.concatenate(list(self._voiced)) if self._voiced else np.zeros(0, np.int16)

    def dominant_hz(self) -> float | None:
        return dominant_hz(self._joined()) if self._voiced else None

    def level_dbfs(self) -> float | None:
        return rms_dbfs(self._joined()) if self._voiced else None

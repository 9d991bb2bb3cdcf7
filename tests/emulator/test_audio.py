"""The agent's VAD, pitch estimate and reply audio, on synthetic samples (no clocks)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from gateway.emulator.agent import AgentSettings
from gateway.emulator.audio import (
    FRAME_SAMPLES,
    REPLY_DOMINANT_HZ,
    Utterance,
    UtteranceDetector,
    dominant_frequency,
    level_dbfs,
    load_wav,
    two_tone_phrase,
)

RATE = 48000


def frames(signal: np.ndarray) -> list[np.ndarray]:
    return [signal[i : i + FRAME_SAMPLES] for i in range(0, signal.size, FRAME_SAMPLES)]


def tone(freq: float, seconds: float, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.float32)


def feed(vad: UtteranceDetector, signal: np.ndarray) -> list[Utterance]:
    return [u for f in frames(signal) if (u := vad.feed(f)) is not None]


@pytest.mark.parametrize(
    ("speech_s", "silence_s", "count"),
    [
        (0.30, 0.50, 1),   # exactly the thresholds
        (0.28, 0.60, 0),   # too short to be speech
        (1.00, 0.48, 0),   # not yet the end of the utterance
        (1.00, 2.00, 1),   # long silence still gives one utterance
    ],
)
def test_vad_thresholds(speech_s: float, silence_s: float, count: int) -> None:
    vad = UtteranceDetector()
    found = feed(vad, np.concatenate([tone(440, speech_s), silence(silence_s)]))
    assert len(found) == count
    if found:
        assert found[0].speech_s == pytest.approx(speech_s, abs=0.02)
        assert found[0].dominant_hz == pytest.approx(440, abs=3)


def test_vad_short_pauses_inside_an_utterance_do_not_split_it() -> None:
    signal = np.concatenate([tone(300, 0.4), silence(0.3), tone(300, 0.4), silence(0.6),
                             tone(500, 0.5), silence(0.5)])
    found = feed(UtteranceDetector(), signal)
    assert [round(u.speech_s, 2) for u in found] == [0.8, 0.5]
    assert [round(u.dominant_hz) for u in found] == [300, 500]


def test_vad_ignores_quiet_noise() -> None:
    rng = np.random.default_rng(1)
    noise = (rng.standard_normal(RATE * 2) * 0.002).astype(np.float32)  # about -54 dBFS
    assert level_dbfs(noise) < -50
    assert feed(UtteranceDetector(), noise) == []


def test_reply_phrase_dominant_frequency_and_length() -> None:
    phrase = two_tone_phrase()
    assert phrase.size == int(1.5 * RATE)
    assert dominant_frequency(phrase) == pytest.approx(REPLY_DOMINANT_HZ, abs=2)
    assert -15 < level_dbfs(phrase) < -6


def test_load_wav_resamples_to_48k(tmp_path: Path) -> None:
    path = tmp_path / "reply.wav"
    pcm = (tone(1000, 0.5, 0.5) * 32767).astype("<i2")[::6]  # 8 kHz, 1 kHz tone
    stereo = np.repeat(pcm, 2)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(stereo.tobytes())
    samples = load_wav(path)
    assert samples.size == pytest.approx(0.5 * RATE, abs=6)
    assert dominant_frequency(samples) == pytest.approx(1000, abs=5)
    assert np.array_equal(AgentSettings(reply_wav=path).reply_samples(), samples)


def test_load_wav_rejects_other_sample_widths(tmp_path: Path) -> None:
    path = tmp_path / "u8.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(1)
        wav.setframerate(8000)
        wav.writeframes(b"\x80" * 800)
    with pytest.raises(ValueError, match="16-bit"):
        load_wav(path)

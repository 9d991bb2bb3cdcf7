"""The announcement WAV: checked at config time, decoded to 8 kHz frames at start."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from gateway.analysis import dominant_frequency
from gateway.records.announcement import announcement_pcm, wav_problem


def _wav(path: Path, rate: int, channels: int, seconds: float, freq: float = 500.0) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    mono = (np.sin(2 * np.pi * freq * t) * 10000).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.repeat(mono, channels).tobytes())
    return path


@pytest.mark.parametrize("rate, channels", [(8000, 1), (16000, 1), (44100, 2), (48000, 2)])
def test_any_rate_and_layout_becomes_8khz_mono(tmp_path: Path, rate: int,
                                                      channels: int) -> None:
    path = _wav(tmp_path / "a.wav", rate, channels, 1.01)
    assert wav_problem(str(path)) is None
    pcm = announcement_pcm(str(path))
    assert pcm.dtype == np.int16 and pcm.ndim == 1
    assert pcm.size == pytest.approx(8080, abs=40)  # 1.01 s at 8 kHz
    assert abs(dominant_frequency(pcm[800:7200].astype(np.float64), 8000) - 500) < 5
    assert 9000 < np.abs(pcm[800:7200]).max() < 10500  # level kept


def test_problems(tmp_path: Path) -> None:
    assert "does not exist" in (wav_problem(str(tmp_path / "missing.wav")) or "")
    (tmp_path / "x.wav").write_bytes(b"not a wav")
    assert "not a PCM WAV" in (wav_problem(str(tmp_path / "x.wav")) or "")
    assert "holds no audio" in (wav_problem(str(_wav(tmp_path / "e.wav", 8000, 1, 0))) or "")
    assert "more than" in (wav_problem(str(_wav(tmp_path / "l.wav", 8000, 1, 61))) or "")

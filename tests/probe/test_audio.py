"""The probe's test phrase, WAV I/O and analysis helpers."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from gateway.emulator.audio import UtteranceDetector as UtteranceVad
from gateway.media.transcode import G711Codec
from gateway.media.voice import EnergyVad, rms_dbfs
from gateway.probe.audio import (
    FRAME_SAMPLES,
    PHRASE,
    RATE,
    TRAILING_SILENCE_S,
    HeardAudio,
    WavError,
    dominant_hz,
    read_wav,
    split_frames,
    spoken_phrase,
    write_wav,
)
from tests.media.audio import tone


def _voiced_flags(pcm: np.ndarray) -> list[bool]:
    vad = EnergyVad()
    return [vad.voiced(f) for f in split_frames(pcm)]


def test_phrase_is_voiced_then_ends_in_silence() -> None:
    phrase = spoken_phrase()
    flags = _voiced_flags(phrase)
    voiced_s = sum(flags) * FRAME_SAMPLES / RATE
    last = max(i for i, v in enumerate(flags) if v)
    trailing_s = (len(flags) - 1 - last) * FRAME_SAMPLES / RATE
    assert 1.2 <= voiced_s <= 2.0  # "~1.5-2 s" of speech, pauses excluded
    assert trailing_s >= 0.5 and trailing_s >= TRAILING_SILENCE_S - 0.04
    assert not np.any(phrase[-round(0.5 * RATE):])  # really silent, not just quiet
    # No pause inside the phrase is long enough to end an utterance (500 ms).
    first = flags.index(True)
    longest_gap = run = 0
    for v in flags[first : last + 1]:
        run = 0 if v else run + 1
        longest_gap = max(longest_gap, run)
    assert longest_gap * FRAME_SAMPLES / RATE < 0.2


@pytest.mark.parametrize("codec", ["", "PCMU", "PCMA"])
def test_phrase_is_one_utterance_for_the_emulators_vad(codec: str) -> None:
    """≥ 300 ms of voice then ≥ 500 ms of silence: exactly one utterance, also after G.711."""
    phrase = spoken_phrase()
    if codec:
        g711 = G711Codec(codec)
        phrase = g711.decode(g711.encode(phrase))
    vad = UtteranceVad(rate=RATE)
    utterances = [u for f in split_frames(phrase)
                  if (u := vad.feed(f.astype(np.float32) / 32768.0)) is not None]
    assert len(utterances) == 1
    assert utterances[0].speech_s >= 0.3
    assert -25.0 < utterances[0].level_dbfs < -6.0


def test_phrase_pitch_varies_like_speech() -> None:
    """Each syllable's harmonic spacing (its pitch) differs; a steady tone would not."""
    phrase = spoken_phrase().astype(np.float64)
    starts = np.cumsum([0.0] + [s.seconds + s.pause_after_s for s in PHRASE[:-1]])
    pitches = []
    for syllable, start in zip(PHRASE, starts, strict=True):
        a = round(start * RATE)
        seg = phrase[a : a + round(syllable.seconds * RATE)]
        # The autocorrelation peak at lags of 4-11 ms (90-250 Hz) gives the pitch period.
        ac = np.correlate(seg, seg, mode="full")[seg.size - 1 :]
        lo, hi = RATE // 250, RATE // 90
        pitches.append(RATE / (lo + int(np.argmax(ac[lo:hi]))))
    for pitch, syllable in zip(pitches, PHRASE, strict=True):
        low = min(syllable.f0_start_hz, syllable.f0_end_hz) * 0.9  # declination: up to -8 %
        high = max(syllable.f0_start_hz, syllable.f0_end_hz) * 1.05
        assert low <= pitch <= high
    assert max(pitches) - min(pitches) > 30.0


def test_phrase_is_deterministic_and_band_limited() -> None:
    a, b = spoken_phrase(), spoken_phrase()
    assert np.array_equal(a, b)
    spectrum = np.abs(np.fft.rfft(a.astype(np.float64)))
    freqs = np.fft.rfftfreq(a.size, 1 / RATE)
    in_band = spectrum[(freqs >= 250) & (freqs <= 3500)].sum()
    assert in_band / spectrum.sum() > 0.85


def test_wav_round_trip_at_8khz(tmp_path: Path) -> None:
    pcm = spoken_phrase()
    path = tmp_path / "phrase.wav"
    write_wav(path, pcm)
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
    assert np.array_equal(read_wav(path), pcm)


@pytest.mark.parametrize("rate", [16000, 44100, 48000])
def test_wav_at_other_rates_is_resampled_to_8khz(tmp_path: Path, rate: int) -> None:
    path = tmp_path / f"tone{rate}.wav"
    write_wav(path, tone(440.0, 1.0, rate, dbfs=-10.0), rate)
    pcm = read_wav(path)
    assert pcm.size == 8000
    assert dominant_hz(pcm) == pytest.approx(440.0, abs=2.0)
    assert rms_dbfs(pcm[800:-800]) == pytest.approx(-10.0, abs=0.5)


def test_stereo_wav_is_downmixed(tmp_path: Path) -> None:
    left = tone(440.0, 0.5, RATE, dbfs=-10.0)
    stereo = np.stack([left, np.zeros_like(left)], axis=1).reshape(-1)
    path = tmp_path / "stereo.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(stereo.astype("<i2").tobytes())
    pcm = read_wav(path)
    assert pcm.size == left.size
    assert rms_dbfs(pcm) == pytest.approx(-16.0, abs=0.2)  # half amplitude: -6 dB


def test_non_16_bit_or_broken_wav_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "u8.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(1)
        wav.setframerate(RATE)
        wav.writeframes(bytes(800))
    with pytest.raises(WavError, match="16-bit"):
        read_wav(path)
    (tmp_path / "junk.wav").write_bytes(b"not a wav")
    with pytest.raises(WavError):
        read_wav(tmp_path / "junk.wav")
    with pytest.raises(WavError):
        read_wav(tmp_path / "missing.wav")


def test_split_frames_pads_the_last_frame() -> None:
    frames = split_frames(np.ones(FRAME_SAMPLES * 2 + 7, dtype=np.int16))
    assert [f.size for f in frames] == [FRAME_SAMPLES] * 3
    assert frames[2][:7].tolist() == [1] * 7 and not frames[2][7:].any()


def test_heard_audio_keeps_only_voiced_frames() -> None:
    heard = HeardAudio()
    assert heard.dominant_hz() is None and heard.level_dbfs() is None
    for f in split_frames(tone(1000.0, 0.4, RATE, dbfs=-20.0)):
        assert heard.add(f)
    assert not heard.add(np.zeros(FRAME_SAMPLES, dtype=np.int16))
    assert not heard.add(tone(300.0, 0.02, RATE, dbfs=-60.0))  # below the VAD threshold
    assert heard.voiced_samples == 0.4 * RATE
    assert heard.dominant_hz() == pytest.approx(1000.0, abs=2.0)
    level = heard.level_dbfs()
    assert level is not None and level == pytest.approx(-20.0, abs=0.2)

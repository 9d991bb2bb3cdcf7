"""Recordings: stereo alignment, both formats decoded and checked by content, retention."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path

import av
import numpy as np
import pytest

from gateway.analysis import dominant_frequency
from gateway.config import RecordingConfig
from gateway.media.transcode import G711Codec
from gateway.records.recording import AGENT, CALLER, Recorder, StereoAligner


def _tone(freq: float, n: int = 160, start: int = 0, level: float = 8000.0) -> np.ndarray:
    t = (np.arange(n) + start) / 8000
    return (np.sin(2 * np.pi * freq * t) * level).astype(np.int16)


def test_aligner_places_chunks_in_time_and_fills_gaps_with_silence() -> None:
    a = StereoAligner(snap_s=0.0, max_lag_s=1.0)
    a.add(CALLER, 0, np.full(160, 1, np.int16))
    assert a.ready().shape == (2, 0)  # the agent channel has said nothing yet
    a.add(AGENT, 320, np.full(160, 2, np.int16))
    out = np.concatenate([a.ready(), a.rest()], axis=1)
    assert out.shape == (2, 480)
    assert (out[0, :160] == 1).all() and (out[0, 160:] == 0).all()
    assert (out[1, :320] == 0).all() and (out[1, 320:] == 2).all()


def test_aligner_absorbs_tick_jitter_and_fills_a_silent_channel_after_max_lag() -> None:
    a = StereoAligner(snap_s=0.010, max_lag_s=0.5)
    for i in range(50):  # 1 s of caller audio with ±3 ms tick jitter: continuous anyway
        a.add(CALLER, i * 160 + (24 if i % 2 else -24) * (i > 0), np.full(160, 1, np.int16))
    block = a.ready()
    assert block.shape[1] == 8000 - 4000  # the agent never spoke: filled up to the lag bound
    rest = a.rest()
    assert (np.concatenate([block, rest], axis=1)[0] == 1).all()


def _decode(path: str) -> tuple[np.ndarray, int]:
    container = av.open(path)
    rate = container.streams.audio[0].rate
    frames = [f.to_ndarray() for f in container.decode(audio=0)]
    container.close()
    if frames[0].shape[0] == 2:  # planar
        return np.concatenate(frames, axis=1).astype(np.float64), rate
    return np.concatenate(frames, axis=1).reshape(-1, 2).T.astype(np.float64), rate


def _onset(x: np.ndarray, rate: int) -> float:
    return float(np.argmax(np.abs(x) > 0.3 * np.abs(x).max())) / rate


def _offset(x: np.ndarray, rate: int) -> float:
    loud = np.abs(x) > 0.3 * np.abs(x).max()
    return float(len(loud) - np.argmax(loud[::-1])) / rate


@pytest.mark.parametrize("fmt", ["ogg", "wav"])
def test_recording_has_caller_left_agent_right_aligned(tmp_path: Path, fmt: str) -> None:
    results: list[str] = []
    rec = Recorder(RecordingConfig(directory=str(tmp_path), format=fmt), results.append)
    rec.prepare()
    start = 1000.0
    codec = G711Codec("PCMU")

    async def call() -> str | None:
        recording = rec.open("abc", start)
        rng = np.random.default_rng(1)
        for i in range(150):  # 3 s: caller tone 0-1 s, agent tone 1.5-2.5 s
            # The caller's packets suffer up to 30 ms of network jitter; ours leave on a
            # jittery tick.
            caller = _tone(440, start=i * 160) if i < 50 else np.zeros(160, np.int16)
            recording.received(codec.encode(caller), "PCMU", 5000 + i * 160,
                               start + i * 0.02 + float(rng.uniform(0.0, 0.030)))
            agent = _tone(1000, start=i * 160) if 75 <= i < 125 else np.zeros(160, np.int16)
            recording.sent(codec.encode(agent), "PCMU", (2**32 - 800 + i * 160) % 2**32,
                           start + i * 0.02 + float(rng.uniform(-0.002, 0.002)))
        return await recording.close()

    path = asyncio.run(call())
    rec.close()
    assert path is not None and results == ["written"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not list(tmp_path.glob("*.part"))
    pcm, rate = _decode(path)
    left, right = pcm[0], pcm[1]
    assert abs(dominant_frequency(left[: rate // 2], rate) - 440) < 5
    assert abs(dominant_frequency(right[int(1.6 * rate): int(2.4 * rate)], rate) - 1000) < 5
    # No chopping: the tone is continuous (no dropouts where packets arrived late).
    tone_part = np.abs(left[int(0.05 * rate): int(0.95 * rate)])
    window = rate // 400  # 2.5 ms: a gap left by a late packet would show
    assert min(tone_part[i:i + window].max() for i in range(0, tone_part.size - window, window)
               ) > 0.5 * tone_part.max()
    # Caller tone ends at 1.0 s, agent starts at 1.5 s: the recorded gap is 0.5 s.
    assert abs((_onset(right, rate) - _offset(left, rate)) - 0.5) < 0.040
    assert pcm.shape[1] / rate == pytest.approx(3.0, abs=0.1)


def test_retention_deletes_only_old_recordings(tmp_path: Path) -> None:
    rec = Recorder(RecordingConfig(directory=str(tmp_path), retention_days=7))
    old, new, other = tmp_path / "a.ogg", tmp_path / "b.wav", tmp_path / "notes.txt"
    for p in (old, new, other):
        p.write_bytes(b"x")
    eight_days_ago = time.time() - 8 * 86400
    os.utime(old, (eight_days_ago, eight_days_ago))
    os.utime(other, (eight_days_ago, eight_days_ago))
    assert rec.sweep() == 1
    assert not old.exists() and new.exists() and other.exists()
    rec.close()
    assert Recorder(RecordingConfig(directory=str(tmp_path))).sweep() == 0  # 0 = keep

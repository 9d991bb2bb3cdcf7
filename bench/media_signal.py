"""Shared by the media benchmark's processes: the speech-like test signal, onset detection,
the JSON-lines control connection and CPU accounting."""

from __future__ import annotations

import asyncio
import json
import resource
from typing import Any

import numpy as np

CYCLE_S = 1.0  # one talkspurt per second: 0.5 s speech, 0.5 s silence
SPEECH_S = 0.5
ON_DBFS, OFF_DBFS = -40.0, -50.0


# ------------------------------------------------------------------------------- signal


def speech_like(rate: int, seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    t = np.arange(n) / rate
    f0 = 140 + 30 * np.sin(2 * np.pi * 1.3 * t) + 10 * np.sin(2 * np.pi * 3.1 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = np.zeros(n)
    for h in range(1, 25):
        fh = h * 140
        if fh > min(3400, rate / 2 - 200):
            break
        # formant-ish weights around 500, 1500, 2500 Hz
        w = sum(np.exp(-((fh - f) / 250) ** 2) for f in (500, 1500, 2500)) + 0.05
        x += w * np.sin(h * phase + rng.uniform(0, 2 * np.pi))
    x += 0.15 * rng.standard_normal(n) * np.abs(np.sin(2 * np.pi * 2 * t))
    envelope = 0.55 + 0.45 * np.abs(np.sin(2 * np.pi * 2 * t))  # ~4 syllables/s
    x *= envelope
    return np.round(x / np.abs(x).max() * 16000).astype(np.int16)


def talkspurt_source(rate: int, seed: int) -> Any:
    """frame index -> 20 ms of samples: speech for SPEECH_S, then silence, every CYCLE_S."""
    per = rate // 50
    speech = speech_like(rate, SPEECH_S, seed)
    frames_per_cycle = int(CYCLE_S * 50)
    speech_frames = int(SPEECH_S * 50)
    silence = np.zeros(per, dtype=np.int16)

    def source(i: int) -> np.ndarray:
        k = i % frames_per_cycle
        if k < speech_frames:
            return speech[k * per : (k + 1) * per]
        return silence

    def is_onset(i: int) -> bool:
        return i % frames_per_cycle == 0

    return source, is_onset


class OnsetDetector:
    def __init__(self) -> None:
        self.quiet = 100
        self.onsets: list[float] = []

    def feed(self, pcm: np.ndarray, now: float) -> None:
        power = float(np.mean(np.square(pcm, dtype=np.float64))) if pcm.size else 0.0
        db = 10 * np.log10(max(power, 1e-9)) - 90.31
        if db > ON_DBFS:
            if self.quiet >= 10:
                self.onsets.append(now)
            self.quiet = 0
        elif db < OFF_DBFS:
            self.quiet += 1


# ------------------------------------------------------------------ control connection


async def send_msg(writer: asyncio.StreamWriter, msg: dict[str, Any]) -> None:
    writer.write((json.dumps(msg) + "\n").encode())
    await writer.drain()


async def recv_msg(reader: asyncio.StreamReader) -> dict[str, Any]:
    line = await reader.readline()
    if not line:
        raise ConnectionError("control connection closed")
    return dict(json.loads(line))


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


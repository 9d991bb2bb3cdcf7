"""Signal helpers for media tests: tones, speech-like noise, FFT frequency, RMS level."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Pcm = npt.NDArray[np.int16]


def tone(freq: float, seconds: float, rate: int, dbfs: float = -10.0, phase: float = 0.0) -> Pcm:
    n = round(seconds * rate)
    amp = 32767 * 10 ** (dbfs / 20) * np.sqrt(2)  # RMS of a sine is peak/√2
    t = np.arange(n) / rate
    return np.round(amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.int16)


def band_noise(seconds: float, rate: int, seed: int = 1, top_hz: float = 3000.0) -> Pcm:
    """Non-periodic phone-band signal (sum of random sines) for alignment checks."""
    rng = np.random.default_rng(seed)
    n = round(seconds * rate)
    t = np.arange(n) / rate
    x = np.zeros(n)
    for f in rng.uniform(200, top_hz, 40):
        x += np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    return np.round(x / np.abs(x).max() * 8000).astype(np.int16)


def dominant_hz(x: Pcm, rate: int) -> float:
    xf = x.astype(np.float64)
    w = np.hanning(len(xf))
    spec = np.abs(np.fft.rfft(xf * w))
    k = int(np.argmax(spec[1:])) + 1
    # parabolic interpolation between bins
    if 1 <= k < len(spec) - 1:
        a, b, c = np.log(spec[k - 1] + 1e-12), np.log(spec[k] + 1e-12), np.log(spec[k + 1] + 1e-12)
        k = k + 0.5 * (a - c) / (a - 2 * b + c)
    return float(k * rate / len(xf))


def rms_dbfs(x: Pcm) -> float:
    r = np.sqrt(np.mean(x.astype(np.float64) ** 2))
    return float(20 * np.log10(max(r, 1e-9) / 32767))


def lag(reference: Pcm, signal: Pcm, max_lag: int) -> int:
    """Delay (samples) of `signal` relative to `reference`, by cross-correlation."""
    ref = reference.astype(np.float64)
    best, best_lag = -np.inf, 0
    for d in range(max_lag + 1):
        seg = signal[d : d + len(ref)].astype(np.float64)
        if len(seg) < len(ref):
            break
        c = float(np.dot(ref, seg))
        if c > best:
            best, best_lag = c, d
    return best_lag

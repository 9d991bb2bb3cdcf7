"""Audio analysis shared by the emulator, the probe and the tests: where a signal's energy is.

numpy only (no PyAV), on any mono sample array; used to check audio by content (a tone's or a
voice's frequency), never by packet counts alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[Any]


def dominant_frequency(samples: Samples, rate: int) -> float:
    """Frequency (Hz) of the strongest spectral peak above 50 Hz; 0.0 for silence."""
    if samples.size < 64 or not np.any(samples):
        return 0.0
    windowed = samples.astype(np.float64) * np.hanning(samples.size)
    spectrum = np.abs(np.fft.rfft(windowed))
    low = int(50 * samples.size / rate) + 1
    peak = low + int(np.argmax(spectrum[low:]))
    offset = 0.0
    if 0 < peak < spectrum.size - 1:  # parabolic interpolation between neighbouring bins
        a, b, c = spectrum[peak - 1], spectrum[peak], spectrum[peak + 1]
        denom = a - 2 * b + c
        offset = 0.5 * (a - c) / denom if denom else 0.0
    return float((peak + offset) * rate / samples.size)

"""What the audio says, frame by frame, for both directions: voice or not, turn latency, and
how a missing frame is concealed.

- `EnergyVad`: frame energy above a threshold (dBFS) is voice.
- `TurnLatencyMeter`: caller stopped speaking → first non-silent AI audio sent to the phone.
- `conceal(last)`: the one concealment both directions use for a single missing frame: the
  last frame repeated with a linear fade to silence (longer gaps are silence, decided by the
  callers, which know how many frames are missing in a row).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np
import numpy.typing as npt

from gateway.media.transcode import Pcm

_FULL_SCALE_DB = 90.3087  # 20·log10(32767)


def rms_dbfs(pcm: Pcm) -> float:
    if pcm.size == 0:
        return -120.0
    power = float(np.mean(np.square(pcm, dtype=np.float32)))
    return 10.0 * float(np.log10(max(power, 1e-12))) - _FULL_SCALE_DB


class EnergyVad:
    """Frame energy above a threshold (dBFS) is voice. Phone audio is band-limited and
    G.711's noise floor sits far below -45 dBFS, so a fixed threshold is enough here.

    `voiced` compares the frame's sum of squares against the threshold turned into the same
    units once, here, instead of taking a logarithm per frame (it runs on every frame of
    both directions).
    """

    def __init__(self, threshold_dbfs: float = -45.0) -> None:
        self.threshold_dbfs = threshold_dbfs
        self._power = 10.0 ** ((threshold_dbfs + _FULL_SCALE_DB) / 10.0)  # mean square

    def voiced(self, pcm: Pcm) -> bool:
        n = pcm.shape[0]
        if n == 0:
            return False
        # int64 dot: exact for any frame length a phone sends (32767² · 2^33 fits).
        wide = pcm.astype(np.int64)
        return bool(float(np.dot(wide, wide)) > self._power * n)


class TurnLatencyMeter:
    """Turn latency = first non-silent AI audio sent − end of the caller's last voiced frame.

    The caller side reports each frame it hands to the AI with the moment that audio reached
    us (`arrival`, i.e. playout time minus the jitter buffer's depth) and its length; the AI
    side reports each talkspurt start. One caller utterance yields at most one turn.
    """

    def __init__(self, on_turn: Callable[[float], None] | None = None) -> None:
        self._on_turn = on_turn
        self._caller_voice_end: float | None = None
        self.last_turn_s: float | None = None
        self.turns = 0

    def caller_frame(self, arrival: float, voiced: bool, seconds: float) -> None:
        if voiced:
            self._caller_voice_end = arrival + seconds

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


@cache
def _fade(samples: int) -> npt.NDArray[np.float32]:
    return np.linspace(1.0, 0.0, samples, dtype=np.float32)


def conceal(last: Pcm) -> Pcm:
    """One missing frame: the last one again, fading linearly to silence."""
    return (last.astype(np.float32) * _fade(last.shape[0])).astype(np.int16)

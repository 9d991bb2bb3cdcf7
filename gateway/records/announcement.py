"""The recording announcement: a WAV file played to the caller before the agent's audio.

`wav_problem` is the config check (stdlib `wave` only: PCM WAV, readable, not empty, at most
`MAX_SECONDS`); `announcement_pcm` decodes it once at start into 8 kHz mono 16-bit PCM,
resampled with PyAV (a proper low-pass, unlike sample dropping). The AI → phone pump plays it
ahead of any agent audio (`AiAudioPump.play_first`).
"""

from __future__ import annotations

import wave
from typing import Any

import numpy as np
import numpy.typing as npt

RATE = 8000
MAX_SECONDS = 60.0
Pcm = npt.NDArray[np.int16]


def wav_problem(path: str) -> str | None:
    """Why `path` cannot be the announcement, or None when it can."""
    try:
        with wave.open(path, "rb") as wav:
            frames, rate = wav.getnframes(), wav.getframerate()
    except FileNotFoundError:
        return f"{path} does not exist"
    except (OSError, EOFError, wave.Error) as exc:
        return f"{path} is not a PCM WAV file ({exc})"
    if frames == 0:
        return f"{path} holds no audio"
    if frames / rate > MAX_SECONDS:
        return f"{path} lasts {frames / rate:.0f} s (more than {MAX_SECONDS:.0f} s)"
    return None


def announcement_pcm(path: str) -> Pcm:
    """The WAV as 8 kHz mono int16 (the pump cuts it into packets of the call's ptime).
    Blocking (file read, resampling): call at start, off the loop."""
    import av  # the config check above must not need PyAV

    with wave.open(path, "rb") as wav:
        channels, rate, width = wav.getnchannels(), wav.getframerate(), wav.getsampwidth()
        raw = wav.readframes(wav.getnframes())
    dtypes: dict[int, np.dtype[Any]] = {1: np.dtype(np.uint8), 2: np.dtype("<i2"),
                                        4: np.dtype("<i4")}
    if width not in dtypes:
        raise ValueError(f"{path}: {8 * width}-bit samples are not supported (use 16-bit)")
    data = np.frombuffer(raw, dtype=dtypes[width]).reshape(-1, channels).astype(np.float64)
    scale = {1: 128.0, 2: 32768.0, 4: 2147483648.0}[width]
    mono = (data - (128.0 if width == 1 else 0.0)).mean(axis=1) / scale
    pcm: Pcm = np.clip(mono * 32767, -32768, 32767).astype(np.int16)
    if rate == RATE:
        return pcm
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    del resampler  # its filter graph's threads end with it, not at the next GC
    resampled: Pcm = np.concatenate(out).astype(np.int16) if out else np.zeros(0, np.int16)
    return resampled

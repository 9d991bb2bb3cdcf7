"""libopus through its C API (ctypes): the AI leg's Opus encoder and decoder, at the phone's rate.

Why not PyAV's codec contexts: every PyAV audio encode passes the frame through a filter graph
PyAV keeps inside the encoder (format and frame-size adaption we never need), and its decoder
turns each packet into an `AudioFrame` object; for 20 ms frames that is a third of the codec
work. Measured (`bench/hot_path.py`, speech-like audio, this machine): encode 65 → 47 µs per
20 ms frame, decode 48 kHz + resample to 8 kHz 53 → 29 µs decoding straight to 8 kHz (libopus
decodes to any of 8/12/16/24/48 kHz itself, RFC 6716 §4.3 and `opus_decoder_create`).

The library is the libopus PyAV already loaded (found through /proc/self/maps, as
`aiortc_patches.single_threaded_ffmpeg` finds libavutil), else the system's `libopus.so.0`.
libopus's API (opus.h) has been stable since 1.0; only documented calls and CTL numbers are
used. Every state is freed when its owner is closed or collected.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import numpy as np
import numpy.typing as npt

from gateway.procmaps import mapped

Pcm = npt.NDArray[np.int16]

# opus_defines.h
APPLICATION_VOIP = 2048
_SET_BITRATE = 4002
_SET_COMPLEXITY = 4010
_OK = 0
_MAX_PACKET = 1500  # bytes: one packet must fit an MTU (RFC 7587 §3)
_MAX_FRAME_MS = 120  # the longest Opus packet (RFC 6716 §3.2.5)


class OpusUnavailable(RuntimeError):
    """No usable libopus in this process or on this system."""


def _candidates(maps: str) -> list[str]:
    loaded = mapped("libopus", maps)
    system = ctypes.util.find_library("opus")
    return sorted(loaded) + ([system] if system else [])


@functools.cache
def library(maps: str = "/proc/self/maps") -> ctypes.CDLL:
    """The libopus to call (loaded once per process)."""
    import av  # noqa: F401  (loads PyAV's libopus, the one we prefer)

    for path in _candidates(maps):
        try:
            lib = ctypes.CDLL(path)
            lib.opus_encoder_create.restype = ctypes.c_void_p
            lib.opus_decoder_create.restype = ctypes.c_void_p
            lib.opus_encode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int,
                                        ctypes.c_char_p, ctypes.c_int32]
            lib.opus_decode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32,
                                        ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
            lib.opus_encoder_destroy.argtypes = [ctypes.c_void_p]
            lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
            lib.opus_strerror.restype = ctypes.c_char_p
            return lib
        except (OSError, AttributeError):
            continue
    raise OpusUnavailable("libopus not found: PyAV's wheel bundles it; otherwise install the "
                          "system package (Debian: libopus0)")


def _error(lib: ctypes.CDLL, what: str, code: int) -> OpusError:
    return OpusError(f"{what}: {lib.opus_strerror(code).decode()} ({code})")


class OpusError(RuntimeError):
    """libopus refused a call (bad arguments or a corrupt packet)."""


class Encoder:
    """Mono PCM at `rate` → one Opus packet per frame (any of 2.5–60 ms of samples)."""

    def __init__(self, rate: int, bitrate: int, complexity: int,
                 application: int = APPLICATION_VOIP) -> None:
        self._state: ctypes.c_void_p | None = None
        lib = self._lib = library()
        err = ctypes.c_int()
        state = lib.opus_encoder_create(rate, 1, application, ctypes.byref(err))
        if err.value != _OK or not state:
            raise _error(lib, f"opus_encoder_create({rate} Hz)", err.value)
        self._state = ctypes.c_void_p(state)
        for ctl, value in ((_SET_BITRATE, bitrate), (_SET_COMPLEXITY, complexity)):
            code = lib.opus_encoder_ctl(self._state, ctl, ctypes.c_int(value))
            if code != _OK:
                self.close()
                raise _error(lib, f"opus_encoder_ctl({ctl}, {value})", code)
        self._out = ctypes.create_string_buffer(_MAX_PACKET)

    def encode(self, pcm: Pcm) -> bytes:
        if self._state is None:
            raise RuntimeError("Opus encoder is closed")
        # tobytes: a 320-byte copy, cheaper than numpy's per-call ctypes pointer object.
        n = self._lib.opus_encode(self._state, pcm.astype(np.int16, copy=False).tobytes(),
                                  pcm.shape[0], self._out, _MAX_PACKET)
        if n < 0:
            raise _error(self._lib, "opus_encode", n)
        return self._out.raw[:n]

    def close(self) -> None:
        if self._state is not None:
            self._lib.opus_encoder_destroy(self._state)
            self._state = None

    __del__ = close


class Decoder:
    """Opus packets → mono int16 PCM at `rate` (libopus resamples internally)."""

    def __init__(self, rate: int) -> None:
        self._state: ctypes.c_void_p | None = None
        lib = self._lib = library()
        err = ctypes.c_int()
        state = lib.opus_decoder_create(rate, 1, ctypes.byref(err))
        if err.value != _OK or not state:
            raise _error(lib, f"opus_decoder_create({rate} Hz)", err.value)
        self._state = ctypes.c_void_p(state)
        self._max = rate * _MAX_FRAME_MS // 1000
        self._pcm = np.zeros(self._max, dtype=np.int16)
        self._pcm_at = self._pcm.ctypes.data  # the buffer never moves: its address once

    def decode(self, payload: bytes) -> Pcm:
        """The samples of one packet (a copy); `OpusError` for a corrupt one, state kept."""
        if self._state is None:
            raise RuntimeError("Opus decoder is closed")
        n = self._lib.opus_decode(self._state, payload, len(payload), self._pcm_at,
                                  self._max, 0)
        if n < 0:
            raise _error(self._lib, "opus_decode", n)
        return self._pcm[:n].copy()

    def close(self) -> None:
        if self._state is not None:
            self._lib.opus_decoder_destroy(self._state)
            self._state = None

    __del__ = close

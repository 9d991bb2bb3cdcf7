"""G.711 ↔ PCM and 8 kHz ↔ 48 kHz conversion: the only module in the gateway that uses PyAV.

Caller → AI: PCMU/PCMA payload → s16 8 kHz (`G711Codec.decode`) → `CallerResampler` → exact
20 ms frames of 48 kHz packed-stereo s16 `AudioFrame`s, the format aiortc's Opus encoder takes.
Stereo on purpose: given mono, aiortc's own resampler upmixes with FFmpeg's -3 dB centre level,
so the AI would hear the caller 3 dB quieter (measured in tests/media/test_two_peers.py).
AI → caller: aiortc's decoded frames (48 kHz stereo s16, any layout/rate accepted) →
`AiResampler` → mono 8 kHz → exact packet-sized chunks (the SDP's ptime) → `G711Codec.encode`.
The gateway's own path skips both resamplers: `OpusPhoneEncoder` encodes the caller's 8 kHz
audio and `OpusMonoDecoder` decodes the AI's straight to 8 kHz, through libopus's C API
(media/libopus.py) rather than PyAV's codec contexts.

Why G.711 goes through lookup tables: FFmpeg's `pcm_mulaw`/`pcm_alaw` codecs are run once, at
first use, over every code (256 for decode, 65,536 s16 values for encode) to fill numpy tables;
per frame we then index a table instead of building AVFrames and AVPackets, so the codec is
bit-exact with FFmpeg's but costs no per-frame allocation beyond the output itself.
Native threads: every FFmpeg filter graph (a PyAV `AudioResampler`, and the one PyAV builds
inside each audio encoder to cut frames to the codec's size) runs a pool of native threads,
about one per core. Each class here that owns a graph or codec has `close()`, which drops it at
once; the owners call it when their call ends, so the threads go with the call rather than
with the next full garbage collection (a call's objects sit in reference cycles, issue 11).
Framing: each direction owns one resampler (its filter state must persist across frames) and a
preallocated sample FIFO that carries the remainder from one frame to the next, so no sample
is ever dropped or duplicated; only at stream start is the resampler's delay filled with zeros.
"""

from __future__ import annotations

import fractions
from functools import cache
from typing import Any, cast

import av
import numpy as np
import numpy.typing as npt
from av import AudioFrame

from gateway.media import libopus

__all__ = [
    "AI_RATE",
    "PHONE_FRAME_SAMPLES",
    "PHONE_RATE",
    "AiResampler",
    "AudioFrame",
    "CallerResampler",
    "EncodedPacket",
    "G711Codec",
    "OpusMonoDecoder",
    "OpusPhoneEncoder",
    "frame_to_mono_s16",
    "g711",
    "make_frame",
]

PHONE_RATE = 8000
AI_RATE = 48000
# The AI leg's frame: aiortc packetises Opus in 20 ms frames. The phone leg's packet time is
# not this: it comes from the SDP (`MediaParams.ptime_ms`, 10 to 40 ms).
FRAME_MS = 20
PHONE_FRAME_SAMPLES = PHONE_RATE * FRAME_MS // 1000  # 160: one AI-leg frame at 8 kHz
AI_FRAME_SAMPLES = AI_RATE * FRAME_MS // 1000  # 960
_FFMPEG_CODEC = {"PCMU": "pcm_mulaw", "PCMA": "pcm_alaw"}
# Built once: a Fraction per frame showed up in the hot path's profile (Fraction.__new__, 1 %).
_PHONE_TIME_BASE = fractions.Fraction(1, PHONE_RATE)
_AI_TIME_BASE = fractions.Fraction(1, AI_RATE)

Pcm = npt.NDArray[np.int16]
EncodedPacket = av.Packet  # what `OpusPhoneEncoder` yields and aiortc accepts from a track
# libopus encoder complexity for the caller's audio (0-10; FFmpeg's default is 10). The encoder
# is the largest single cost of a call. SILK, Opus's speech coder, has tiers (0-1, 2-3, 4-5,
# 6-7, 8-10); the lowest costs 25 instead of 45 µs per 20 ms frame (tier 2-3) and 70 (10), and
# on speech-like audio that came through G.711 keeps what the round trip preserves: LSD 3.33
# vs 3.27 vs 3.08 dB, segmental SNR 12.2 vs 12.1 vs 12.4 dB, pitch errors 1.7 vs 1.9 vs 1.4 %
# of voiced frames (`bench/opus_complexity.py`).
_OPUS_COMPLEXITY = 0


@cache
def _tables(codec: str) -> tuple[Pcm, npt.NDArray[np.uint8]]:
    name = _FFMPEG_CODEC[codec]
    dec = cast(av.AudioCodecContext, av.CodecContext.create(name, "r"))
    dec.sample_rate = PHONE_RATE
    dec.layout = "mono"
    frames = dec.decode(av.Packet(bytes(range(256))))
    decode = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int16)
    enc = cast(av.AudioCodecContext, av.CodecContext.create(name, "w"))
    enc.sample_rate = PHONE_RATE
    enc.layout = "mono"
    enc.format = "s16"
    # Index by the s16 value's bit pattern (uint16 view), so encode is one gather.
    values = np.arange(0, 65536, dtype=np.uint16).view(np.int16).reshape(1, -1)
    frame = AudioFrame.from_ndarray(values, format="s16", layout="mono")
    frame.sample_rate = PHONE_RATE
    packets = list(enc.encode(frame)) + list(enc.encode(None))
    encode = np.frombuffer(b"".join(bytes(p) for p in packets), dtype=np.uint8).copy()
    if decode.shape != (256,) or encode.shape != (65536,):
        raise RuntimeError(f"unexpected FFmpeg {name} table sizes")
    return decode, encode


@cache
def g711(codec: str) -> G711Codec:
    """The shared codec for "PCMU" or "PCMA" (codecs are stateless; one of each suffices)."""
    return G711Codec(codec)


class G711Codec:
    """PCMU or PCMA (stateless apart from the shared tables: use `g711(name)`)."""

    def __init__(self, codec: str) -> None:
        if codec not in _FFMPEG_CODEC:
            raise ValueError(f"not a G.711 codec: {codec}")
        self.name = codec
        self._decode, self._encode = _tables(codec)
        self.silence_byte = int(self._encode[0])  # 0xFF for PCMU, 0xD5 for PCMA

    def decode(self, payload: bytes) -> Pcm:
        return self._decode[np.frombuffer(payload, dtype=np.uint8)]

    def encode(self, pcm: Pcm) -> bytes:
        return self._encode[pcm.view(np.uint16)].tobytes()

    def silence(self, samples: int = PHONE_FRAME_SAMPLES) -> bytes:
        return bytes([self.silence_byte]) * samples


class _Fifo:
    """Preallocated int16 FIFO: append resampler output, take exact frames, keep the rest."""

    __slots__ = ("_buf", "_len")

    def __init__(self, capacity: int) -> None:
        self._buf: Pcm = np.zeros(capacity, dtype=np.int16)
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def push(self, samples: Pcm) -> None:
        n = samples.shape[0]
        if self._len + n > self._buf.shape[0]:
            grown = np.zeros(max(2 * self._buf.shape[0], self._len + n), dtype=np.int16)
            grown[: self._len] = self._buf[: self._len]
            self._buf = grown
        self._buf[self._len : self._len + n] = samples
        self._len += n

    def push_zeros(self, n: int) -> None:
        self.push(np.zeros(n, dtype=np.int16))

    def take(self, n: int) -> Pcm:
        out = self._buf[:n].copy()
        self._buf[: self._len - n] = self._buf[n : self._len]
        self._len -= n
        return out


def _s16(frame: AudioFrame) -> Pcm:
    return cast(Pcm, frame.to_ndarray().reshape(-1))


def frame_to_mono_s16(frame: AudioFrame) -> Pcm:
    """Samples of an s16 frame as a mono int16 array (first channel of packed stereo)."""
    arr = frame.to_ndarray().reshape(-1)
    channels = len(frame.layout.channels)
    if channels > 1 and not frame.format.is_planar:
        arr = arr[::channels]
    return arr.astype(np.int16, copy=False)


class CallerResampler:
    """8 kHz mono s16 (20 ms chunks) → 48 kHz stereo s16 `AudioFrame`s of exactly 20 ms."""

    def __init__(self) -> None:
        self._resampler: av.AudioResampler | None = av.AudioResampler(
            format="s16", layout="mono", rate=AI_RATE
        )
        self._fifo = _Fifo(AI_FRAME_SAMPLES * 4)
        self._in_pts = 0
        self._out_pts = 0
        self._time_base = _AI_TIME_BASE
        self._primed = False
        self._stereo: Pcm = np.zeros(2 * AI_FRAME_SAMPLES, dtype=np.int16)

    def process(self, pcm: Pcm) -> AudioFrame:
        """One 20 ms phone chunk in, one 20 ms 48 kHz frame out (timestamps advance 960)."""
        frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = PHONE_RATE
        frame.pts = self._in_pts
        frame.time_base = _PHONE_TIME_BASE
        self._in_pts += pcm.shape[0]
        if self._resampler is None:
            raise RuntimeError("CallerResampler is closed")
        for out in self._resampler.resample(frame):
            self._fifo.push(_s16(out))
        if not self._primed:
            # The resampler holds back its filter delay at the start; pad once with zeros so
            # every later frame is produced on time from real samples.
            self._primed = True
            if len(self._fifo) < AI_FRAME_SAMPLES:
                missing = AI_FRAME_SAMPLES - len(self._fifo)
                tail = self._fifo.take(len(self._fifo))
                self._fifo.push_zeros(missing)
                self._fifo.push(tail)
        n = min(AI_FRAME_SAMPLES, len(self._fifo))
        samples = self._fifo.take(n)
        if n < AI_FRAME_SAMPLES:  # cannot happen after priming; never emit a short frame
            samples = np.concatenate([samples, np.zeros(AI_FRAME_SAMPLES - n, dtype=np.int16)])
        # Duplicate the channel into a reused buffer (from_ndarray copies it into the frame).
        self._stereo[0::2] = samples
        self._stereo[1::2] = samples
        out_frame = AudioFrame.from_ndarray(
            self._stereo.reshape(1, -1), format="s16", layout="stereo"
        )
        out_frame.sample_rate = AI_RATE
        out_frame.pts = self._out_pts
        out_frame.time_base = self._time_base
        self._out_pts += AI_FRAME_SAMPLES
        return out_frame

    def close(self) -> None:
        """Release the filter graph (and its native threads) now; `process` fails after."""
        self._resampler = None


class AiResampler:
    """aiortc frames (any rate/layout) → mono 8 kHz, handed out in exact packet-sized chunks."""

    def __init__(self) -> None:
        self._resampler: av.AudioResampler | None = av.AudioResampler(
            format="s16", layout="mono", rate=PHONE_RATE
        )
        self._fifo = _Fifo(PHONE_FRAME_SAMPLES * 16)
        self._primed = False

    def push(self, frame: AudioFrame) -> None:
        if frame.sample_rate == PHONE_RATE and frame.format.name == "s16" and len(
            frame.layout.channels
        ) == 1:
            self._fifo.push(_s16(frame))  # already phone format: no resampler pass
            return
        if self._resampler is None:
            raise RuntimeError("AiResampler is closed")
        outs = [_s16(out) for out in self._resampler.resample(frame)]
        if not self._primed:
            # The resampler holds back its filter delay (~2 ms) at the start; pad once with
            # zeros so the first frame yields its full length and packets of any ptime are
            # whole from the first tick (as CallerResampler does the other way).
            self._primed = True
            got = sum(o.shape[0] for o in outs)
            self._fifo.push_zeros(max(0, frame.samples * PHONE_RATE // frame.sample_rate - got))
        for out in outs:
            self._fifo.push(out)

    def push_pcm(self, pcm: Pcm) -> None:
        """Samples already at the phone's rate (mono s16): queued as they are."""
        self._fifo.push(pcm)

    def close(self) -> None:
        """Release the filter graph (and its native threads) now; `push` fails after this."""
        self._resampler = None

    @property
    def buffered_samples(self) -> int:
        return len(self._fifo)

    def pop(self, samples: int = PHONE_FRAME_SAMPLES) -> Pcm | None:
        """The next `samples` (one phone packet's worth), or None until that many are here."""
        if len(self._fifo) < samples:
            return None
        return self._fifo.take(samples)


class OpusPhoneEncoder:
    """8 kHz mono PCM → Opus packets for aiortc's pre-encoded path (`CallerAudioTrack(opus=True)`).

    Why: aiortc encodes every frame in its thread pool (a thread hop per 20 ms, the top GIL
    cost in field notes §3) with a stereo 48 kHz 96 kb/s encoder, after resampling. The phone
    carries nothing above 4 kHz, so we encode the 8 kHz signal as it is (Opus narrowband,
    VoIP mode) on the event loop, through libopus itself (media/libopus.py): no resampling,
    no thread hop, no filter graph. Packets carry pts in the 48 kHz RTP clock Opus uses on the
    wire (RFC 7587 §4.1).
    """

    def __init__(self, bitrate: int = 24000) -> None:
        self._encoder = libopus.Encoder(PHONE_RATE, bitrate, _OPUS_COMPLEXITY)
        self._out_pts = 0
        self._time_base = _AI_TIME_BASE

    def encode(self, pcm: Pcm) -> av.Packet[Any]:
        """One packet for one frame of 2.5 to 60 ms (the caller track hands 20 ms): libopus
        holds nothing back, so the track never waits for a packet."""
        packet = av.Packet(self._encoder.encode(pcm))
        packet.pts = self._out_pts
        packet.time_base = self._time_base
        self._out_pts += pcm.shape[0] * AI_RATE // PHONE_RATE
        return packet

    def close(self) -> None:
        """Free the libopus state now rather than at the next garbage collection."""
        self._encoder.close()


class OpusMonoDecoder:
    """Opus payloads → mono s16 PCM at `rate` (the phone's 8 kHz by default), on the event loop.

    Used by `aiortc_patches.tune_receiver` so the AI leg's audio skips aiortc's decoder thread
    (and its per-frame thread hand-off). libopus decodes straight to 8 kHz, so the AI's audio
    needs no resampler on its way to the phone.
    """

    def __init__(self, rate: int = PHONE_RATE) -> None:
        self._decoder = libopus.Decoder(rate)
        self.errors = 0

    def decode(self, payload: bytes) -> Pcm | None:
        """The packet's samples, or None for a corrupt packet (decoder state kept)."""
        try:
            return self._decoder.decode(payload)
        except libopus.OpusError:
            self.errors += 1
            return None

    def close(self) -> None:
        self._decoder.close()


def make_frame(pcm: Pcm, rate: int, pts: int, layout: str = "mono") -> AudioFrame:
    """Build an s16 frame (for tests, benches and the silence path of tracks)."""
    frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout=layout)
    frame.sample_rate = rate
    frame.pts = pts
    frame.time_base = fractions.Fraction(1, rate)
    return frame

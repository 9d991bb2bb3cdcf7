import numpy as np
import pytest

from gateway.media.transcode import (
    AI_FRAME_SAMPLES,
    AI_RATE,
    PHONE_FRAME_SAMPLES,
    PHONE_RATE,
    AiResampler,
    CallerResampler,
    G711Codec,
    frame_to_mono_s16,
    make_frame,
)
from tests.media.audio import band_noise, dominant_hz, lag, rms_dbfs, tone


def round_trip(codec_name: str, pcm8k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PCMU/PCMA → 8 kHz → 48 kHz frames → (stereo, as aiortc decodes) → 8 kHz → G.711 → PCM."""
    codec = G711Codec(codec_name)
    up, down = CallerResampler(), AiResampler()
    at48, back = [], []
    pts = 0
    for i in range(0, len(pcm8k), PHONE_FRAME_SAMPLES):
        payload = codec.encode(pcm8k[i : i + PHONE_FRAME_SAMPLES])
        frame = up.process(codec.decode(payload))
        assert frame.samples == 960 and frame.sample_rate == AI_RATE and frame.pts == pts
        pts += 960
        assert frame.layout.name == "stereo"
        at48.append(frame_to_mono_s16(frame))
        down.push(frame)
        while (chunk := down.pop()) is not None:
            assert chunk.shape == (PHONE_FRAME_SAMPLES,)
            back.append(codec.decode(codec.encode(chunk)))
    return np.concatenate(at48), np.concatenate(back)


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_440hz_keeps_frequency_and_level(codec: str) -> None:
    src = tone(440, 10.0, 8000, dbfs=-12)
    at48, out = round_trip(codec, src)
    steady48, steady = at48[4800:], out[800:]
    assert abs(dominant_hz(steady48, AI_RATE) - 440) <= 5
    assert abs(dominant_hz(steady, 8000) - 440) <= 5
    assert abs(rms_dbfs(steady48) - rms_dbfs(src)) <= 1.0
    assert abs(rms_dbfs(steady) - rms_dbfs(src)) <= 1.0


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_framing_neither_drops_nor_duplicates_over_10s(codec: str) -> None:
    src = band_noise(10.0, 8000)
    at48, out = round_trip(codec, src)
    # Exactly one 48 kHz frame per 8 kHz chunk: 10 s in, 10 s out.
    assert len(at48) == 6 * len(src)
    # Returned audio is the input delayed by a constant: the same lag at the start and the
    # end of the 10 s means no sample was lost or repeated in between.
    start, end = 800, len(src) - 2400
    d_start = lag(src[start : start + 1000], out[start : start + 1400], 400)
    d_end = lag(src[end : end + 1000], out[end : end + 1400], 400)
    assert d_start == d_end
    assert 0 < d_start < 80  # a few ms of resampler filter delay, nothing more
    assert len(src) - d_start - PHONE_FRAME_SAMPLES <= len(out) <= len(src)


def test_g711_tables_match_ffmpeg_conventions() -> None:
    mu, a = G711Codec("PCMU"), G711Codec("PCMA")
    assert mu.silence() == b"\xff" * 160 and a.silence() == b"\xd5" * 160
    ramp = np.arange(-32768, 32768, 97, dtype=np.int16)
    for codec, tol in ((mu, 0.04), (a, 0.04)):
        back = codec.decode(codec.encode(ramp)).astype(np.float64)
        err = np.abs(back - ramp) / np.maximum(np.abs(ramp.astype(np.float64)), 256)
        assert float(err.max()) < tol
    with pytest.raises(ValueError):
        G711Codec("G722")


def test_frame_to_mono_takes_first_channel() -> None:
    stereo = np.array([1, -1, 2, -2, 3, -3], dtype=np.int16)
    frame = make_frame(stereo, 48000, 0, "stereo")
    assert frame_to_mono_s16(frame).tolist() == [1, 2, 3]


def test_opus_phone_encoder_and_mono_decoder_round_trip() -> None:
    from gateway.media.transcode import EncodedPacket, OpusMonoDecoder, OpusPhoneEncoder

    enc, dec, dec48 = OpusPhoneEncoder(), OpusMonoDecoder(), OpusMonoDecoder(AI_RATE)
    src = tone(440, 2.0, 8000, dbfs=-12)
    out, out48, pts = [], [], []
    for i in range(0, len(src), PHONE_FRAME_SAMPLES):
        packet = enc.encode(src[i : i + PHONE_FRAME_SAMPLES])
        # one Opus packet per 20 ms, so the track never stalls
        assert isinstance(packet, EncodedPacket) and packet.size > 0
        pts.append(packet.pts)
        pcm8, pcm48 = dec.decode(bytes(packet)), dec48.decode(bytes(packet))
        assert pcm8 is not None and pcm48 is not None
        assert (pcm8.shape, pcm48.shape) == ((PHONE_FRAME_SAMPLES,), (AI_FRAME_SAMPLES,))
        out.append(pcm8)
        out48.append(pcm48)
    assert pts == [i * 960 for i in range(100)]
    pcm = np.concatenate(out)[800:]  # decoded at the phone's rate: no resampler needed
    assert abs(dominant_hz(pcm, PHONE_RATE) - 440) <= 5
    assert abs(rms_dbfs(pcm) - rms_dbfs(src)) <= 1.5
    pcm48 = np.concatenate(out48)[4800:]
    assert abs(dominant_hz(pcm48, AI_RATE) - 440) <= 5
    assert dec.decode(b"\xff\xff\xff") is None and dec.errors == 1  # corrupt: no raise
    assert dec.decode(bytes(enc.encode(src[:PHONE_FRAME_SAMPLES]))) is not None  # goes on
    enc.close(), dec.close()
    with pytest.raises(RuntimeError):
        enc.encode(src[:PHONE_FRAME_SAMPLES])


def test_ai_resampler_takes_phone_rate_frames_without_resampling() -> None:
    down = AiResampler()
    pcm = tone(300, 0.1, 8000)
    down.push(make_frame(pcm, 8000, 0))
    chunks = [down.pop() for _ in range(5)]
    assert all(c is not None for c in chunks) and down.pop() is None
    assert np.array_equal(np.concatenate(chunks), pcm[:800])  # type: ignore[arg-type]


def test_close_ends_the_native_threads_of_graphs_and_encoders_at_once() -> None:
    """Issue 11 item 8: FFmpeg filter graphs (our resamplers, and the one PyAV builds inside an
    audio encoder) run native threads unless FFmpeg is told otherwise (`aiortc_patches.
    single_threaded_ffmpeg`, process-wide, which a gateway started in this test process may
    have done): so in a fresh process, `close()` must end them without a garbage collection."""
    import subprocess
    import sys

    code = (
        "import gc, os, numpy as np\n"
        "from gateway.media.transcode import (AiResampler, CallerResampler, OpusPhoneEncoder)\n"
        "n = lambda: len(os.listdir('/proc/self/task'))\n"
        "gc.disable()\n"
        "before = n()\n"
        "up, down, enc = CallerResampler(), AiResampler(), OpusPhoneEncoder()\n"
        "pcm = np.zeros(160, dtype=np.int16)\n"
        "down.push(up.process(pcm))\n"
        "enc.encode(pcm)\n"
        "started = n()\n"
        "for part in (up, down, enc):\n"
        "    part.close()\n"
        "try:\n"
        "    enc.encode(pcm)\n"
        "    closed_refuses = False\n"
        "except RuntimeError:\n"
        "    closed_refuses = True\n"
        "print(before, started, n(), closed_refuses)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    before, started, after = map(int, out[:3])
    assert after == before < started, out
    assert out[3] == "True"

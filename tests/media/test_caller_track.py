"""CallerAudioTrack: one 48 kHz frame per 20 ms from the jitter buffer, never a stall."""

from __future__ import annotations

import numpy as np

from gateway.clock import LoopClock
from gateway.media.jitter import JitterBuffer
from gateway.media.transcode import G711Codec, frame_to_mono_s16
from gateway.media.uplink import CallerAudioTrack
from gateway.media.voice import EnergyVad, TurnLatencyMeter
from gateway.sdp import Direction, MediaParams
from tests.media.audio import dominant_hz, rms_dbfs, tone
from tests.media.vclock import virtual_time_loop


class Source:
    """The CallerAudioSource seam: a real jitter buffer and negotiated params."""

    def __init__(self, codec: str = "PCMU", pt: int = 0, max_ms: int = 200) -> None:
        self.jitter = JitterBuffer(max_ms=max_ms)
        self.params = MediaParams("127.0.0.1", 9, codec, pt, 8000, 20, None,
                                  Direction.SENDRECV, False)
        self.last_audio_arrival: float | None = None


def run(source: Source, frames: int, feed: dict[int, bytes], track_kw: dict | None = None):
    """Pull `frames` frames; before pull i, push the packets scheduled for i (seq -> payload)."""
    loop = virtual_time_loop()

    async def main() -> tuple[list, list[float], CallerAudioTrack]:
        track = CallerAudioTrack(source, LoopClock(), **(track_kw or {}))
        out, times = [], []
        for i in range(frames):
            if i in feed:
                source.jitter.push(i, feed[i])
            frame = await track.recv()
            out.append(frame)
            times.append(loop.time())
        track.stop()
        return out, times, track

    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def test_frames_every_20ms_with_continuous_timestamps_and_440hz() -> None:
    codec = G711Codec("PCMU")
    src = tone(440, 2.0, 8000, dbfs=-12)
    feed = {i: codec.encode(src[i * 160 : (i + 1) * 160]) for i in range(100)}
    frames, times, track = run(Source(), 100, feed)
    assert all(f.samples == 960 and f.sample_rate == 48000 for f in frames)
    assert [f.pts for f in frames] == [i * 960 for i in range(100)]
    assert np.allclose(np.diff(times), 0.02)
    pcm = np.concatenate([frame_to_mono_s16(f) for f in frames[5:]])
    assert abs(dominant_hz(pcm, 48000) - 440) <= 5
    assert abs(rms_dbfs(pcm) - rms_dbfs(src)) <= 1
    assert track.frames_concealed == 0


def test_nothing_arriving_gives_silence_not_a_stall() -> None:
    frames, times, track = run(Source(), 50, {})
    assert len(frames) == 50 and np.allclose(np.diff(times), 0.02)
    assert all(not frame_to_mono_s16(f).any() for f in frames)
    assert track.frames_silent_fill == 50


async def test_single_loss_concealed_with_fade_burst_loss_underruns_to_silence() -> None:
    codec = G711Codec("PCMA")
    src = tone(440, 1.0, 8000, dbfs=-12)
    payloads = [codec.encode(src[i * 160 : (i + 1) * 160]) for i in range(50)]
    source = Source("PCMA", 8)
    lost = {20, 30, 31, 32}
    track = CallerAudioTrack(source, LoopClock())
    chunks = []
    source.jitter.push(0, payloads[0])
    for i in range(49):  # packets arrive just in time for a 40 ms buffer
        if i + 1 not in lost:
            source.jitter.push(i + 1, payloads[i + 1])
        chunks.append(track._next_chunk())
    jb = source.jitter.stats
    # One loss with a later packet buffered: concealed by repeating the last frame with a fade.
    assert track.frames_concealed == 1
    before = codec.decode(payloads[19]).astype(np.float32)
    fade = np.linspace(1.0, 0.0, 160, dtype=np.float32)
    assert np.array_equal(chunks[20], (before * fade).astype(np.int16))
    # Three in a row drain the 40 ms buffer: an underrun, silence, the target grows by 20 ms,
    # and the skipped packets are counted lost when playout re-primes.
    assert jb.underruns == 1 and source.jitter.target_ms == 60
    assert jb.lost == 4
    assert not chunks[30].any() and not chunks[31].any()
    decoded = [codec.decode(p) for p in payloads]
    assert any(np.array_equal(c, decoded[40]) for c in chunks[33:])  # audio resumes intact
    track.stop()


def test_vad_feeds_turn_meter_with_arrival_time() -> None:
    codec = G711Codec("PCMU")
    speech = tone(300, 0.5, 8000, dbfs=-20)
    feed = {i: codec.encode(speech[i * 160 : (i + 1) * 160]) for i in range(25)}
    silence = codec.silence()
    feed.update({i: silence for i in range(25, 60)})
    meter = TurnLatencyMeter()
    _frames, times, track = run(Source(), 60, feed, {"meter": meter, "vad": EnergyVad(-45)})
    assert 23 <= track.frames_voiced <= 25
    end = meter._caller_voice_end
    assert end is not None
    # Voice ended ~0.5 s after the first frame, minus the jitter buffer's hold.
    assert 0.40 <= end - times[0] <= 0.55


def test_opus_mode_yields_one_packet_per_20ms_with_48k_clock() -> None:
    from gateway.media.transcode import OpusMonoDecoder

    codec = G711Codec("PCMU")
    src = tone(440, 2.0, 8000, dbfs=-12)
    feed = {i: codec.encode(src[i * 160 : (i + 1) * 160]) for i in range(100)}
    packets, times, _ = run(Source(), 100, feed, {"opus": True})
    assert [p.pts for p in packets] == [i * 960 for i in range(100)]
    assert np.allclose(np.diff(times), 0.02)
    dec = OpusMonoDecoder()
    pcm = np.concatenate([frame_to_mono_s16(f) for p in packets for f in dec.decode(bytes(p))])
    assert abs(dominant_hz(pcm[9600:], 48000) - 440) <= 5


def test_schedule_phase_locks_to_phone_packets_once() -> None:
    loop = virtual_time_loop(start=1000.0)
    source = Source()

    async def main() -> list[float]:
        track = CallerAudioTrack(source, LoopClock())
        times = []
        for i in range(10):
            if i == 3:  # the first packet arrived 13 ms after our last tick (at t = 1000.053)
                source.last_audio_arrival = loop.time() + 0.013
            await track.recv()
            times.append(loop.time())
        return times

    try:
        times = loop.run_until_complete(main())
    finally:
        loop.close()
    # before: on our own phase; after the first packet: 2 ms after each arrival, 20 ms apart
    assert [round(t - 1000.0, 4) for t in times[:3]] == [0.0, 0.02, 0.04]
    assert round(times[3] - 1000.0, 4) == 0.075  # moved 15 ms later, once
    assert [round((t - 1000.053) % 0.02, 4) for t in times[3:]] == [0.002] * 7
    assert np.allclose(np.diff(times[3:]), 0.02)

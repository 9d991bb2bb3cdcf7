"""CallerAudioTrack: a 20 ms frame the moment the phone's audio is there, never a stall."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from gateway.clock import LoopClock
from gateway.media.jitter import JitterBuffer
from gateway.media.transcode import G711Codec, Pcm, frame_to_mono_s16
from gateway.media.uplink import CallerAudioTrack
from gateway.media.voice import EnergyVad, TurnLatencyMeter
from gateway.sdp import Direction, MediaParams
from tests.media.audio import dominant_hz, rms_dbfs, tone
from tests.media.vclock import millisecond_timers, virtual_time_loop

START = 1000.0


class Source:
    """The CallerAudioSource seam: a real jitter buffer, negotiated params, the wake hook."""

    def __init__(self, codec: str = "PCMU", pt: int = 0, ptime: int = 20) -> None:
        self.jitter = JitterBuffer()
        self.params = MediaParams("127.0.0.1", 9, codec, pt, 8000, ptime, None,
                                  Direction.SENDRECV, False)
        self.on_audio: Callable[[], None] | None = None

    def deliver(self, seq: int, payload: bytes) -> None:
        """What RtpSession does with an audio packet."""
        self.jitter.push(seq, payload)
        if self.on_audio is not None:
            self.on_audio()


@pytest.fixture(params=["pull", "push"])
def mode(request: pytest.FixtureRequest) -> str:
    """How the track is driven: aiortc's sender pulls (`recv`), ours has it push (`push_to`)."""
    return str(request.param)


def run(source: Source, frames: int, arrivals: dict[int, tuple[float, bytes]],
        track_kw: dict | None = None, *, mode: str, ms_timers: list[int] | None = None
        ) -> tuple[list, list[float], CallerAudioTrack]:
    """Take `frames` frames while packets arrive at their times (seq -> (t - START, payload)).

    Returns the frames, the loop time each was yielded, and the track.
    """
    loop = virtual_time_loop(START)
    if ms_timers is not None:
        ms_timers += millisecond_timers(loop)

    async def phone() -> None:
        for seq, (at, payload) in sorted(arrivals.items(), key=lambda kv: kv[1][0]):
            if (delay := START + at - loop.time()) > 0:
                await asyncio.sleep(delay)
            source.deliver(seq, payload)

    async def main() -> tuple[list, list[float], CallerAudioTrack]:
        track = CallerAudioTrack(source, LoopClock(), **(track_kw or {}))
        sender = asyncio.create_task(phone())
        await asyncio.sleep(0)  # packets due at t = 0 are there before the first pull
        out, times = [], []
        if mode == "pull":
            for _ in range(frames):
                out.append(await track.recv())
                times.append(loop.time() - START)
        else:
            enough = loop.create_future()

            def send(frame: object) -> None:
                if len(out) < frames:
                    out.append(frame)
                    times.append(loop.time() - START)
                if len(out) == frames and not enough.done():
                    enough.set_result(None)

            track.push_to(send)
            await asyncio.wait_for(enough, frames * 0.02 + 60)  # virtual seconds: never a hang
        track.stop()
        sender.cancel()
        return out, times, track

    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def packets(src: Pcm, codec: G711Codec, ptime_ms: int = 20) -> list[bytes]:
    n = 8 * ptime_ms
    return [codec.encode(src[i : i + n]) for i in range(0, len(src) - n + 1, n)]


def mono(frames: list) -> Pcm:
    return np.concatenate([frame_to_mono_s16(f) for f in frames])


def test_audio_goes_out_on_arrival_with_continuous_timestamps_and_440hz(mode: str) -> None:
    codec = G711Codec("PCMU")
    src = tone(440, 2.0, 8000, dbfs=-12)
    # Packets every 20 ms from t = 0.1 s, with up to 15 ms of jitter.
    jitter = np.random.default_rng(7).uniform(0, 0.015, 100)
    arrivals = {i: (0.1 + i * 0.02 + jitter[i], p) for i, p in enumerate(packets(src, codec))}
    frames, times, track = run(Source(), 106, arrivals, mode=mode)
    assert all(f.samples == 960 and f.sample_rate == 48000 for f in frames)
    assert [f.pts for f in frames] == [i * 960 for i in range(106)]
    # Before the first packet: silence on a 20 ms cadence (t = 0, 0.02, ..., 0.1).
    silent = [t for t in times if t < arrivals[0][0] - 1e-6]
    assert np.allclose(silent, [i * 0.02 for i in range(len(silent))])
    # Then each frame leaves the moment its packet arrived: no hold at all.
    assert len(silent) == 6
    audio_times = times[len(silent):]
    assert np.allclose(audio_times, [arrivals[i][0] for i in range(100)])
    heard = mono(frames[len(silent):])
    assert abs(dominant_hz(heard, 48000) - 440) <= 5
    assert abs(rms_dbfs(heard[4800:]) - rms_dbfs(src)) <= 1
    assert track.frames_concealed == 0 and track.late_after_fill == 0


def test_nothing_arriving_gives_silence_every_20ms_not_a_stall(mode: str) -> None:
    frames, times, track = run(Source(), 50, {}, mode=mode)
    assert len(frames) == 50 and np.allclose(np.diff(times), 0.02)
    assert all(not frame_to_mono_s16(f).any() for f in frames)
    assert track.frames_silent_fill == 50


def test_loss_is_concealed_once_and_the_timeline_stays_exact(mode: str) -> None:
    codec = G711Codec("PCMA")
    src = tone(440, 1.2, 8000, dbfs=-12)
    payloads = packets(src, codec)
    lost = {20, 30, 31, 32}
    arrivals = {i: (i * 0.02, p) for i, p in enumerate(payloads) if i not in lost}
    # The packets after a gap come 1 ms early, so they (not the deadline) reveal the gap.
    arrivals[21] = (0.419, payloads[21])
    arrivals[33] = (0.659, payloads[33])
    source = Source("PCMA", 8)
    frames, times, track = run(source, 60, arrivals, mode=mode)
    # One frame out per 20 ms slot, lost or not: the AI's timeline keeps real time.
    assert [f.pts for f in frames] == [i * 960 for i in range(60)]
    heard = [frame_to_mono_s16(f) for f in frames]
    # #21 revealed the single loss: a faded repeat of #19, sent with #21 at once.
    assert abs(times[20] - 0.419) < 1e-9 and abs(times[21] - 0.419) < 1e-9
    assert np.abs(heard[20]).max() > 0
    # The burst: slot 30 filled at its deadline (#29 + 40 ms) with a faded repeat, slot 31
    # with silence 20 ms later; #33 then revealed 30-32 lost: 30 and 31 were already filled
    # (not played twice), 32 is silence, and #33 follows at once.
    assert abs(times[30] - 0.62) < 1e-9 and abs(times[31] - 0.64) < 1e-9
    assert abs(times[32] - 0.659) < 1e-9 and abs(times[33] - 0.659) < 1e-9
    # (the 48 kHz resampler's filter rings into the first ~100 samples of a silent frame)
    assert np.abs(heard[30]).max() > 0 and not heard[31][480:].any()
    assert not heard[32][480:].any()
    assert track.frames_concealed == 3 and track.frames_silent_fill == 1
    assert source.jitter.stats.lost == 4 and track.late_after_fill == 0
    assert abs(times[59] - 59 * 0.02) < 1e-9
    assert abs(dominant_hz(mono(frames[34:]), 48000) - 440) <= 5


def test_a_late_packet_within_the_allowance_waits_for_nothing_else(mode: str) -> None:
    codec = G711Codec("PCMU")
    payloads = packets(tone(440, 0.6, 8000, dbfs=-12), codec)
    arrivals = {i: (i * 0.02, p) for i, p in enumerate(payloads)}
    # #10 15 ms late and #11 right behind it (a stall): the deadline was #9 + 20 + 20 ms.
    arrivals[10] = (10 * 0.02 + 0.015, payloads[10])
    arrivals[11] = (10 * 0.02 + 0.016, payloads[11])
    _frames, times, track = run(Source(), 25, arrivals, mode=mode)
    assert abs(times[10] - 0.215) < 1e-9 and abs(times[11] - 0.216) < 1e-9
    assert track.frames_concealed == 0 and track.frames_silent_fill == 0


def test_a_stall_longer_than_the_allowance_is_filled_then_widens_it(mode: str) -> None:
    codec = G711Codec("PCMU")
    payloads = packets(tone(440, 1.0, 8000, dbfs=-12), codec)
    arrivals = {i: (i * 0.02, p) for i, p in enumerate(payloads)}
    for i in range(10, 15):  # the network stalls after #9, then delivers a burst at 0.25 s
        arrivals[i] = (0.25 + (i - 10) * 0.001, payloads[i])
    frames, times, track = run(Source(), 45, arrivals, mode=mode)
    # #9 left at 0.18; nothing by 0.22: a faded repeat, then silence at 0.24; the burst then
    # plays as it comes (the fill stands: nothing of the caller's audio is dropped).
    assert abs(times[10] - 0.22) < 1e-9 and abs(times[11] - 0.24) < 1e-9
    assert abs(times[12] - 0.25) < 1e-9
    assert track.frames_concealed == 1 and track.frames_silent_fill == 1
    assert track.late_after_fill == 1
    assert track._allowance_s > 0.020  # the next stall of this size is waited for
    heard = mono(frames[12:17])
    assert abs(dominant_hz(heard, 48000) - 440) <= 5
    assert len(frames) == 45


def test_ptime_10_and_30_give_20ms_frames_as_soon_as_the_samples_are_there(mode: str) -> None:
    codec = G711Codec("PCMU")
    src = tone(440, 1.2, 8000, dbfs=-12)
    for ptime in (10, 30):
        pk = packets(src, codec, ptime)
        arrivals = {i: (0.001 + i * ptime / 1000, p) for i, p in enumerate(pk)}
        frames, times, track = run(Source(ptime=ptime), 55, arrivals, mode=mode)
        first = next(i for i, t in enumerate(times) if t > 0.0005)
        audio = times[first:first + 40]
        if ptime == 10:  # every second packet completes a frame
            assert np.allclose(audio, [0.001 + (2 * k + 1) * 0.01 for k in range(40)])
        else:  # 240 samples per packet: one frame, then two, alternately
            expected = []
            have = 0
            for i in range(40):
                have += 240
                while have >= 160 and len(expected) < 40:
                    expected.append(0.001 + i * 0.03)
                    have -= 160
            assert np.allclose(audio, expected[:40])
        assert abs(dominant_hz(mono(frames[first:]), 48000) - 440) <= 5
        assert track.frames_concealed == 0 and track.frames_silent_fill == first


def test_vad_feeds_turn_meter_with_arrival_time(mode: str) -> None:
    codec = G711Codec("PCMU")
    speech = tone(300, 0.5, 8000, dbfs=-20)
    payloads = packets(speech, codec) + [codec.silence()] * 35
    arrivals = {i: (i * 0.02, p) for i, p in enumerate(payloads)}
    meter = TurnLatencyMeter()
    _frames, _times, track = run(Source(), 60, arrivals,
                                 {"meter": meter, "vad": EnergyVad(-45)}, mode=mode)
    assert 23 <= track.frames_voiced <= 25
    end = meter._caller_voice_end
    assert end is not None
    # Voice ended 0.5 s after the first packet: no jitter-buffer hold in between.
    assert abs((end - START) - 0.5) <= 0.025


def test_opus_mode_yields_one_packet_per_20ms_with_48k_clock(mode: str) -> None:
    from gateway.media.transcode import OpusMonoDecoder

    codec = G711Codec("PCMU")
    src = tone(440, 2.0, 8000, dbfs=-12)
    arrivals = {i: (i * 0.02, p) for i, p in enumerate(packets(src, codec))}
    out, times, _ = run(Source(), 100, arrivals, {"opus": True}, mode=mode)
    assert [p.pts for p in out] == [i * 960 for i in range(100)]
    assert np.allclose(np.diff(times), 0.02)
    dec = OpusMonoDecoder(48000)
    pcm = np.concatenate([dec.decode(bytes(p)) for p in out])
    assert abs(dominant_hz(pcm[9600:], 48000) - 440) <= 5


async def test_stop_ends_a_waiting_recv() -> None:
    source = Source()
    track = CallerAudioTrack(source, LoopClock())
    await track.recv()  # the first frame: silence at once
    waiting = asyncio.create_task(track.recv())
    await asyncio.sleep(0.005)
    track.stop()
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(waiting, 1.0)
    assert source.on_audio is None


def test_pushing_with_millisecond_timers_as_uvloops_does_not_spin() -> None:
    """uvloop fires timers up to a millisecond early: the deadline timer takes that as its
    time instead of re-arming for the rest (0 ms to libuv: a busy loop)."""
    codec = G711Codec("PCMU")
    payloads = packets(tone(440, 2.0, 8000, dbfs=-12), codec)
    jitter = np.random.default_rng(3).uniform(0, 0.015, len(payloads))
    arrivals = {i: (0.0007 + i * 0.02 + jitter[i], p) for i, p in enumerate(payloads)
                if i not in (30, 31, 32)}  # and a gap the timer fills
    armed: list[int] = []
    frames, _times, track = run(Source(), 110, arrivals, mode="push", ms_timers=armed)
    assert len(frames) == 110 and armed[0] <= len(frames)
    assert track.frames_silent_fill + track.frames_concealed >= 2
    assert abs(dominant_hz(mono(frames[40:]), 48000) - 440) <= 5


async def test_stop_ends_pushing() -> None:
    source = Source()
    track = CallerAudioTrack(source, LoopClock())
    got: list[object] = []
    track.push_to(got.append)
    assert len(got) == 1  # the first frame: silence at once
    await asyncio.sleep(0.045)  # the 20 ms deadline's timer runs before this wakes, however late
    pushed = len(got)
    assert pushed >= 2
    track.stop()
    source.deliver(0, G711Codec("PCMU").encode(tone(440, 0.02, 8000)))
    await asyncio.sleep(0.1)
    assert len(got) == pushed and source.on_audio is None and track._timer is None


async def test_a_failure_while_pushing_is_logged_and_ends_the_track(
        caplog: pytest.LogCaptureFixture) -> None:
    source = Source()
    track = CallerAudioTrack(source, LoopClock())
    ended: list[bool] = []
    track.on("ended", lambda: ended.append(True))

    def send(frame: object) -> None:
        raise RuntimeError("sender bug")

    track.push_to(send)
    assert track.readyState == "ended" and ended == [True] and track._timer is None
    assert "caller audio track failed" in caplog.text and "sender bug" in caplog.text

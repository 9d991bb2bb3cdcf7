"""AI → phone pacing and playout-queue policy, on a virtual-time loop with real RTP sockets."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Callable

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from gateway.clock import LoopClock
from gateway.media.downlink import _EARLY_S, AiAudioPump
from gateway.media.rtp import parse_rtp, ts_delta
from gateway.media.rtp_session import RtpSession
from gateway.media.transcode import AudioFrame, make_frame
from gateway.media.voice import TurnLatencyMeter
from gateway.sdp import Direction, MediaParams
from tests.media.audio import dominant_hz, tone
from tests.media.vclock import millisecond_timers, virtual_time_loop

AI_FRAME = 960


class ScriptedTrack(MediaStreamTrack):
    """Stand-in for Orga's remote track: frames at scripted (virtual) times."""

    kind = "audio"

    def __init__(self, schedule: list[tuple[float, np.ndarray]],
                 arrivals: list[float] | None = None) -> None:
        super().__init__()
        self._schedule = schedule
        self._arrivals = arrivals if arrivals is not None else []
        self._i = 0
        self._t0: float | None = None

    async def recv(self) -> AudioFrame:
        loop = asyncio.get_running_loop()
        if self._t0 is None:
            self._t0 = loop.time()
        if self._i >= len(self._schedule):
            self.stop()
            raise MediaStreamError
        at, pcm = self._schedule[self._i]
        # +5 ms: arrivals never coincide with the pump's ticks (no ordering ties)
        wait = self._t0 + at + 0.005 - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        frame = make_frame(np.repeat(pcm, 2), 48000, self._i * AI_FRAME, "stereo")
        self._i += 1
        self._arrivals.append(loop.time())
        return frame


def frames_of(signal: np.ndarray) -> list[np.ndarray]:
    return [signal[i : i + AI_FRAME] for i in range(0, len(signal) - AI_FRAME + 1, AI_FRAME)]


class Receiver(asyncio.DatagramProtocol):
    def __init__(self, clock: Callable[[], float]) -> None:
        self.got: list[tuple[float, bytes]] = []
        self._clock = clock

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.append((self._clock(), data))


async def feed_decoded(pump: AiAudioPump, schedule: list[tuple[float, np.ndarray]],
                       arrivals: list[float]) -> None:
    """What the tuned receiver does (aiortc_patches.tune_receiver): each frame, decoded
    straight to 8 kHz, into `feed_pcm` at its (virtual) time, +5 ms as ScriptedTrack."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for at, pcm in schedule:
        if (wait := t0 + at + 0.005 - loop.time()) > 0:
            await asyncio.sleep(wait)
        arrivals.append(loop.time())
        pump.feed_pcm(pcm[::6].copy())  # 48 → 8 kHz: our test tones are far below 4 kHz


def run_pump(schedule: list[tuple[float, np.ndarray]], seconds: float, ptime: int = 20,
             first: np.ndarray | None = None, ms_timers: list[int] | None = None,
             arrivals: list[float] | None = None, decoded: bool = False, **pump_kw: object):
    loop = virtual_time_loop()
    if ms_timers is not None:
        ms_timers += millisecond_timers(loop)

    async def main() -> tuple[list[tuple[float, bytes]], AiAudioPump]:
        transport, rx = await loop.create_datagram_endpoint(
            lambda: Receiver(loop.time), local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        params = MediaParams("127.0.0.1", port, "PCMU", 0, 8000, ptime, None,
                             Direction.SENDRECV, False)
        session = await RtpSession.open("127.0.0.1", 0, params, clock=LoopClock(),
                                     watchdog_interval_s=3600)
        pump = AiAudioPump(session, LoopClock(), **pump_kw)  # type: ignore[arg-type]
        if first is not None:
            pump.play_first(first)
        feeder = None
        if decoded:
            pump.start()
            feeder = asyncio.create_task(feed_decoded(
                pump, schedule, arrivals if arrivals is not None else []))
        else:
            pump.start(ScriptedTrack(schedule, arrivals))
        await asyncio.sleep(seconds)
        if feeder is not None:
            feeder.cancel()
        await pump.stop()
        await session.close()
        transport.close()
        return rx.got, pump

    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def burst_schedule() -> tuple[list[tuple[float, np.ndarray]], int]:
    speech = frames_of(tone(1000, 30.0, 48000, dbfs=-12))
    silence = np.zeros(AI_FRAME, dtype=np.int16)
    schedule: list[tuple[float, np.ndarray]] = []
    # 5 s of real-time speech, then 2 s of audio arriving at once at t=5 s, then 23 s
    # of real-time audio (speech 3 s, then quiet).
    for i in range(250):
        schedule.append((i * 0.02, speech[i]))
    for i in range(100):
        schedule.append((5.0, speech[250 + i]))
    for i in range(1150):
        schedule.append((5.0 + i * 0.02, speech[350 + i] if i < 150 else silence))
    return schedule, 350


def test_paced_20ms_through_a_2s_burst_without_gaps_or_drift() -> None:
    schedule, _ = burst_schedule()
    got, pump = run_pump(schedule, 30.0, max_queue_ms=2500)
    times = np.array([t for t, _ in got])
    gaps = np.diff(times)
    assert len(got) >= 1495  # 30 s of 20 ms packets, nothing skipped
    # No stall (at most a packet time plus the late-frame allowance, when the AI's audio
    # ends), no burst (at least half a packet time, when the schedule first locks on).
    assert gaps.max() <= 0.030 + 1e-9 and gaps.min() >= 0.010 - 1e-9
    # No drift: after locking on to the frames' arrival, the n-th packet leaves n·20 ms after
    # the first (the schedule settles within 3 ms of the arrivals and stays there; a packet
    # whose frame came in time leaves on its arrival, up to _EARLY_S before its slot).
    locked = times[20:][times[20:] < times[0] + 27.5]  # the AI's audio ends at 28 s
    expected = locked[0] + np.arange(len(locked)) * 0.02
    assert np.abs(locked - expected).max() < _EARLY_S + 0.002
    pkts = [parse_rtp(d) for _, d in got]
    assert all(ts_delta(b.timestamp, a.timestamp) == 160 for a, b in itertools.pairwise(pkts))
    assert all((b.sequence - a.sequence) % 65536 == 1 for a, b in itertools.pairwise(pkts))
    st = pump.stats
    assert st.dropped_backlog == 0
    # What the gateway itself paced: one packet time plus, once, the wait for a frame that
    # never came (the AI's audio ended).
    assert 29.9 <= st.max_gap_ms <= 30.1
    assert 1950 <= st.queue_ms_peak <= 2100  # the burst was absorbed, not played fast
    # All 500 frames of speech were played, contiguous, at 1000 Hz.
    voiced = [p for p in pkts if p.payload != b"\xff" * 160]
    assert 495 <= len(voiced) <= 502
    assert st.underruns_speech == 0


def test_millisecond_timers_as_uvloops_pace_without_spinning() -> None:
    """uvloop fires timers up to a millisecond early; the pacer takes that as on time instead of
    re-arming for the rest (0 ms to libuv: a busy loop until the time passes)."""
    schedule, _ = burst_schedule()
    armed: list[int] = []
    got, pump = run_pump(schedule, 10.0, max_queue_ms=2500, ms_timers=armed)
    times = np.array([t for t, _ in got])
    assert len(got) >= 495  # 10 s of 20 ms packets
    assert armed[0] <= 3 * len(got)  # a timer or two per packet, not a spin
    assert np.abs(np.diff(times)[5:] - 0.020).max() <= 0.002 + 1e-9  # and still paced
    assert pump.stats.underruns_speech == 0


@pytest.mark.parametrize("decoded", [False, True], ids=["aiortc-frames", "decoded-8k"])
def test_a_frame_in_time_leaves_as_it_arrives(decoded: bool) -> None:
    """In steady speech the schedule settles a few milliseconds after the frames' arrival;
    each packet then goes out from the frame's own arrival, with no timer to wait for (one
    loop wake-up per packet, not two), and its RTP timestamp still keeps the schedule."""
    speech = frames_of(tone(700, 6.0, 48000, dbfs=-12))
    arrivals: list[float] = []
    got, pump = run_pump([(i * 0.02, speech[i]) for i in range(250)], 5.5, arrivals=arrivals,
                         decoded=decoded)
    pkts = [parse_rtp(d) for _, d in got]
    first = next(i for i, p in enumerate(pkts) if p.marker)  # frame 0's packet
    voiced = got[first:first + 250]
    # From a second in (the phase has settled), packet n leaves when frame n arrived.
    late = [sent - arrivals[n] for n, (sent, _) in enumerate(voiced) if n >= 50]
    assert len(late) == 200 and max(abs(x) for x in late) < 1e-6
    assert all(ts_delta(b.timestamp, a.timestamp) == 160
               for a, b in itertools.pairwise(pkts[first:first + 250]))
    assert pump.stats.underruns_speech == 0


@pytest.mark.parametrize("decoded", [False, True], ids=["aiortc-frames", "decoded-8k"])
@pytest.mark.parametrize("ptime", [10, 30, 40])
def test_packets_follow_the_sdp_packet_time(ptime: int, decoded: bool) -> None:
    """Frames from aiortc's decoder (48 kHz, resampled) or from the tuned receiver (8 kHz,
    queued whole when they are one packet's worth) go out at the SDP's packet time."""
    schedule, _ = burst_schedule()
    got, pump = run_pump(schedule, 10.0, ptime=ptime, max_queue_ms=2500, decoded=decoded)
    times = np.array([t for t, _ in got])
    gaps = np.diff(times)
    assert gaps[0] >= ptime / 2000 - 1e-9  # locking on to the AI's frames: never a burst
    assert np.abs(gaps[1:] - ptime / 1000).max() < 0.002  # then one packet per ptime
    pkts = [parse_rtp(d) for _, d in got]
    assert {len(p.payload) for p in pkts} == {8 * ptime}
    assert all(ts_delta(b.timestamp, a.timestamp) == 8 * ptime
               for a, b in itertools.pairwise(pkts))
    from gateway.media.transcode import G711Codec

    pcm = np.concatenate([G711Codec("PCMU").decode(p.payload) for p in pkts])
    assert abs(dominant_hz(pcm[:40000], 8000) - 1000) <= 5
    assert pump.stats.underruns_speech == 0 and pump.stats.dropped_backlog == 0


def test_backlog_beyond_bound_drops_oldest_and_counts() -> None:
    schedule, _ = burst_schedule()
    _, pump = run_pump(schedule, 12.0, max_queue_ms=1000)
    assert pump.stats.queue_ms_peak <= 1000
    assert 45 <= pump.stats.dropped_backlog <= 55  # ~1 s of the 2 s burst did not fit


def test_underruns_during_speech_vs_idle_and_keepalive() -> None:
    speech = frames_of(tone(600, 4.0, 48000, dbfs=-12))
    schedule = [(i * 0.02, speech[i]) for i in range(50)]  # 1 s of speech
    # a 60 ms hole mid-speech (the AI leg stalled), then 1 s more, then nothing at all
    schedule += [(1.06 + i * 0.02, speech[50 + i]) for i in range(50)]
    got, pump = run_pump(schedule, 4.0, keepalive=True)
    st = pump.stats
    assert st.underruns_speech in (2, 3, 4)
    assert st.concealed >= 1  # the hole's first frame is a faded repeat, not silence
    assert st.underruns_idle >= 80  # the quiet after the AI stopped
    assert st.sent_silence >= 80
    gaps = np.diff([t for t, _ in got])
    assert gaps.max() <= 0.030 + 1e-9  # keepalive silence keeps the stream live
    pkts = [parse_rtp(d) for _, d in got]
    markers = [i for i, p in enumerate(pkts) if p.marker]
    assert len(markers) == 1  # one talkspurt: the short hole is not a new one


def test_frames_lost_on_the_ai_leg_are_losses_not_underruns() -> None:
    speech = frames_of(tone(600, 4.0, 48000, dbfs=-12))
    lost = {20, 40, 41, 60}
    loop = virtual_time_loop()

    async def main() -> AiAudioPump:
        params = MediaParams("127.0.0.1", 9, "PCMU", 0, 8000, 20, None,
                             Direction.SENDRECV, False)
        session = await RtpSession.open("127.0.0.1", 0, params, clock=LoopClock(),
                                        watchdog_interval_s=3600)
        pump = AiAudioPump(session, LoopClock())
        pump.start()
        t0 = loop.time()
        gap = 0
        for i in range(100):  # what the tuned receiver does: on_loss, then the next frame
            await asyncio.sleep(t0 + i * 0.02 + 0.005 - loop.time())
            if i in lost:
                gap += 1
                continue
            if gap:
                pump.lost(gap)
                gap = 0
            pump.feed(make_frame(np.repeat(speech[i], 2), 48000, i * AI_FRAME, "stereo"))
        await asyncio.sleep(0.5)
        await pump.stop()
        await session.close()
        return pump

    try:
        pump = loop.run_until_complete(main())
    finally:
        loop.close()
    st = pump.stats
    assert st.lost_speech == 4 and st.underruns_speech == 0
    # Each gap's first frame is a faded repeat, as is the first after the speech ended.
    assert st.concealed == 4


def test_no_keepalive_sends_nothing_when_quiet_but_keeps_timestamps() -> None:
    speech = frames_of(tone(600, 1.0, 48000, dbfs=-12))
    schedule = [(i * 0.02, speech[i]) for i in range(25)]
    schedule += [(2.0 + i * 0.02, speech[25 + i]) for i in range(25)]
    got, pump = run_pump(schedule, 3.0, keepalive=False)
    pkts = [parse_rtp(d) for _, d in got]
    # 50 frames of speech, plus one faded repeat where each talkspurt's input stops
    assert 48 + pump.stats.concealed <= len(pkts) <= 50 + pump.stats.concealed
    assert 1 <= pump.stats.concealed <= 2
    jumps = [ts_delta(b.timestamp, a.timestamp) for a, b in itertools.pairwise(pkts)]
    assert max(jumps) >= 8000 * 1.4  # the 1.5 s quiet shows in the RTP clock
    assert pump.stats.sent_silence == 0
    assert sum(p.marker for p in pkts) == 2


def test_silence_backlog_is_skipped_to_shrink_delay() -> None:
    speech = frames_of(tone(600, 1.0, 48000, dbfs=-12))
    silence = np.zeros(AI_FRAME, dtype=np.int16)
    # 0.5 s of silence arrives at once (a network stall), then speech in real time:
    schedule = [(0.0, silence) for _ in range(25)]
    schedule += [(0.02 * i, speech[i]) for i in range(25)]
    got, pump = run_pump(schedule, 1.5)
    pkts = [(t, parse_rtp(d)) for t, d in got]
    first_voiced = next(t for t, p in pkts if p.payload != b"\xff" * 160)
    # Speech is not held behind the stale silence (the default target is 20 ms).
    assert first_voiced - pkts[0][0] <= 0.1
    assert pump.stats.skipped_silence >= 20


def test_turn_latency_and_speech_start_hook() -> None:
    speech = frames_of(tone(600, 1.0, 48000, dbfs=-12))
    silence = np.zeros(AI_FRAME, dtype=np.int16)
    schedule = [(0.02 * i, silence) for i in range(25)]
    schedule += [(0.5 + 0.02 * i, speech[i]) for i in range(10)]
    meter = TurnLatencyMeter()
    starts: list[float] = []
    meter.caller_frame(arrival=1000.0 + 0.1, voiced=True, seconds=0.02)  # speech ended +0.12
    _, pump = run_pump(schedule, 1.0, meter=meter, on_speech_start=starts.append)
    assert len(starts) == 1 and pump.first_audio_at == starts[0]
    assert meter.turns == 1 and meter.last_turn_s is not None
    assert meter.last_turn_s == pytest.approx(starts[0] - 1000.12)
    assert 0.35 < meter.last_turn_s < 0.45


def test_turn_meter_rules() -> None:
    turns: list[float] = []
    m = TurnLatencyMeter(on_turn=turns.append)
    assert m.ai_audio_started(5.0) is None  # nobody spoke yet
    m.caller_frame(10.0, True, 0.02)
    m.caller_frame(10.02, False, 0.02)
    assert m.ai_audio_started(10.01) is None  # AI overlapping the caller: not a turn
    m.caller_frame(11.0, True, 0.02)
    assert m.ai_audio_started(11.52) == pytest.approx(0.5)
    assert m.ai_audio_started(12.0) is None  # one utterance, one turn
    assert turns == [pytest.approx(0.5)]


def test_pumped_audio_keeps_frequency() -> None:
    speech = frames_of(tone(1000, 2.0, 48000, dbfs=-12))
    got, _ = run_pump([(0.02 * i, speech[i]) for i in range(100)], 2.0)
    from gateway.media.transcode import G711Codec

    pcm = np.concatenate([G711Codec("PCMU").decode(parse_rtp(d).payload) for _, d in got])
    assert abs(dominant_hz(pcm[800:15000], 8000) - 1000) <= 5


def test_receiver_socket_is_loopback_only() -> None:
    # guard: the helper never binds beyond 127.0.0.1
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    assert s.getsockname()[0] == "127.0.0.1"
    s.close()


def test_announcement_plays_first_and_the_ai_waits_behind_it_without_loss() -> None:
    from gateway.media.transcode import G711Codec

    first = tone(500, 2.0, 8000, dbfs=-12)  # 2 s: 100 packets of 20 ms
    speech = frames_of(tone(1000, 1.5, 48000, dbfs=-12))
    silence = np.zeros(AI_FRAME, dtype=np.int16)
    # The AI greets at once (1.5 s), then is quiet: its greeting arrives during the announcement.
    schedule = [(0.02 * i, speech[i]) for i in range(75)]
    schedule += [(1.5 + 0.02 * i, silence) for i in range(200)]
    got, pump = run_pump(schedule, 6.0, first=first, max_queue_ms=1000)
    codec = G711Codec("PCMU")
    pcm = np.concatenate([codec.decode(parse_rtp(d).payload) for _, d in got])
    assert abs(dominant_hz(pcm[800:15200], 8000) - 500) <= 5  # the announcement, first
    assert abs(dominant_hz(pcm[16800:27200], 8000) - 1000) <= 5  # then the greeting
    peaks = np.abs(pcm[16000:].astype(np.int32)).reshape(-1, 160).max(axis=1)
    assert 74 <= (peaks > 5000).sum() <= 76  # all 75 frames: nothing dropped behind the bound
    assert pump.stats.dropped_backlog == 0
    times = np.array([t for t, _ in got])
    # Paced throughout (at most a packet time plus the late-frame allowance, where the AI's
    # audio ends).
    assert np.diff(times).max() <= 0.030 + 1e-9
    # ... and at the packet time: the announcement's 100 packets take 2 s, not less.
    assert times[100] - times[0] >= 1.99
    # After the greeting the stale silence is skipped: the queue is back under its bound.
    assert pump.stats.skipped_silence >= 45 and pump.stats.queue_ms <= 1000


def test_announcement_is_cut_to_the_calls_packet_time() -> None:
    from gateway.media.transcode import G711Codec

    got, _ = run_pump([], 1.0, ptime=30, first=tone(500, 0.5, 8000, dbfs=-12))
    pkts = [parse_rtp(d) for _, d in got]
    assert {len(p.payload) for p in pkts} == {240}  # 30 ms packets, the last one padded
    assert all(ts_delta(b.timestamp, a.timestamp) == 240 for a, b in itertools.pairwise(pkts))
    pcm = np.concatenate([G711Codec("PCMU").decode(p.payload) for p in pkts])
    assert abs(dominant_hz(pcm[:4000], 8000) - 500) <= 5
    assert np.abs(pcm[4080:].astype(np.int32)).max() < 100  # then keepalive silence


def test_a_failure_in_the_pacer_is_raised_in_the_calls_task_group() -> None:
    """The pacer runs in a timer callback, not a task: a bug there must still end the call the
    way a crashed task does (its task group raises), not vanish into the loop's log."""

    class BrokenSink:
        params = MediaParams("127.0.0.1", 9, "PCMU", 0, 8000, 20, None,
                             Direction.SENDRECV, False)
        sent = 0

        def send_audio(self, payload: bytes, samples: int, marker: bool = False) -> bool:
            self.sent += 1
            if self.sent == 3:
                raise RuntimeError("sink bug")
            return True

        def skip_samples(self, samples: int) -> None:
            pass

    loop = virtual_time_loop()
    sink = BrokenSink()

    async def main() -> None:
        pump = AiAudioPump(sink, LoopClock())  # type: ignore[arg-type]
        async with asyncio.TaskGroup() as tasks:
            pump.start(tasks=tasks)
            await asyncio.sleep(1.0)

    try:
        with pytest.raises(ExceptionGroup) as raised:
            loop.run_until_complete(main())
    finally:
        loop.close()
    assert raised.group_contains(RuntimeError, match="sink bug")
    assert sink.sent == 3  # and the pacer stopped there

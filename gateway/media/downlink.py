"""AI → phone: Orga's decoded audio, queued and paced out as G.711 RTP at the SDP's packet time.

`AiAudioPump.feed_pcm(pcm)` is called for each decoded AI frame, straight from the AI leg's
receive path (`gateway.aiortc_patches.tune_receiver(receiver, deliver=pump.feed_pcm)`: packet
→ our reorder buffer → libopus decoding straight to 8 kHz → here, in the same call stack, no
queue hop, no task and no resampler per frame; `feed(frame)` takes aiortc's own frames of any
rate and resamples them). It queues packet-sized frames in a playout queue bounded in
milliseconds. A loop timer sends one packet per `ptime` (RFC 3264 §5: the packet time the
phone's offer asked for, 10 to 40 ms) from its callback, with no task to wake per packet, so
bursts from the AI leg never reach the phone as bursts and the phone never hears gaps between
queued frames (field notes §1). The schedule follows the
AI's frames: a packet leaves as soon as its frame is here and a packet time has passed, a late
frame is waited for up to 10 ms instead of being concealed, and while frames wait the schedule
moves earlier, so the queue adds a few milliseconds, not a random part of a packet time
(`bench/media_path.py`, 20 calls: AI→caller p99 20 → 9 ms, underruns 0.1 % → 0.04 %). A frame
that comes at most `_EARLY_S` before its slot leaves from the AI leg's receive callback, as it
arrives, so a steady stream costs the loop one wake-up per packet, not two.

Policy: backlog beyond the bound is dropped oldest-first and counted; silence in a backlog
above the target depth is skipped so standing delay shrinks between AI turns; a single frame
missing mid-speech is concealed (faded repeat); underruns are counted separately during AI
speech and in idle silence; while the AI is quiet, silence packets keep NATs and carriers
seeing a live stream (configurable). The first voiced packet of a talkspurt carries the RTP
marker and tells the turn meter the AI started answering.

`start(track)` also reads aiortc's remote track: it ends when the AI leg does, and it carries
frames only if aiortc's own decoder is in use (the receiver was not tuned).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from gateway.clock import TIMER_SLACK_S, Clock
from gateway.media.transcode import (
    PHONE_RATE,
    AiResampler,
    AudioFrame,
    G711Codec,
    Pcm,
    g711,
)
from gateway.media.voice import EnergyVad, TurnLatencyMeter, conceal
from gateway.sdp import MediaParams

logger = logging.getLogger(__name__)

_ALLOWANCE_S = 0.010  # a late AI frame is waited for this long past its packet time
_PULL_IN_S = 0.001  # the schedule moves at most this much earlier per packet
_WAIT_TARGET_S = 0.003  # ... while frames wait longer than this for their packet
# A frame that arrives at most this long before its packet may go is sent from the AI leg's
# receive callback at once instead of from a timer a few milliseconds later: the schedule
# (timestamps, phase) is unchanged, the phone sees the AI leg's own arrival jitter of a few
# milliseconds, and the loop wakes once per packet instead of twice.
_EARLY_S = 0.005


class RtpSink(Protocol):
    """Where the pump sends (an `RtpSession` satisfies it)."""

    @property
    def params(self) -> MediaParams: ...

    def send_audio(self, payload: bytes, samples: int, marker: bool = False) -> bool: ...

    def skip_samples(self, samples: int) -> None: ...


@dataclass(slots=True)
class PumpStats:
    frames_in: int = 0
    sent_audio: int = 0
    sent_silence: int = 0
    samples_sent_audio: int = 0  # phone-rate samples of AI audio sent (any packet time)
    underruns_speech: int = 0  # a frame was due mid-speech and had not arrived (late audio)
    underruns_idle: int = 0
    lost_speech: int = 0  # a frame was due mid-speech and was lost on the AI leg (see lost())
    dropped_backlog: int = 0  # oldest packets dropped because the queue passed max_queue_ms
    dropped_backlog_ms: int = 0
    skipped_silence: int = 0  # silent packets skipped to shrink standing delay
    concealed: int = 0  # first missing packet in speech, filled with a faded repeat
    clock_slips: int = 0  # the loop stalled > 3 packets; we skipped ahead instead of bursting
    max_gap_ms: float = 0.0  # longest interval between two packet slots (ptime when on time)
    queue_ms: int = 0
    queue_ms_peak: int = 0


class AiAudioPump:
    """Decoded AI frames → bounded playout queue → paced G.711 RTP, one packet per ptime."""

    def __init__(
        self,
        sink: RtpSink,
        clock: Clock,
        *,
        max_queue_ms: int = 1000,
        target_queue_ms: int = 20,
        keepalive: bool = True,
        vad: EnergyVad | None = None,
        meter: TurnLatencyMeter | None = None,
        on_speech_start: Callable[[float], None] | None = None,
        talkspurt_hangover_ms: int = 200,
    ) -> None:
        self._sink = sink
        self._clock = clock
        self._max_queue_ms = max_queue_ms
        self._target_queue_ms = target_queue_ms
        self._hangover_ms = talkspurt_hangover_ms
        self._keepalive = keepalive
        self._vad = vad or EnergyVad()
        self._meter = meter
        self._on_speech_start = on_speech_start
        self._resampler = AiResampler()
        self._queue: collections.deque[tuple[Pcm, bool]] = collections.deque()
        self._first: Pcm | None = None  # see play_first
        self._extra_ms = 0  # added to max_queue_ms while AI audio waits behind it
        self._talkspurt = False
        self._quiet_ticks = 0  # ticks since the last voiced frame, while in a talkspurt
        self._pending_underruns = 0
        self._last_sent: Pcm | None = None
        self._last_tick: float | None = None
        self._fed_at: float | None = None  # when feed last queued a frame
        self._flowing = False  # the last packet carried a queued AI frame
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None  # the next packet slot
        self._last = 0.0  # when the last packet slot was due: the schedule's phase
        self._due: float | None = None  # while the pump waits for audio: the packet's due time
        self._stats = PumpStats()
        self._spawn: Callable[..., asyncio.Task[None]] = asyncio.create_task
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        self._packet_time(sink.params.ptime_ms)
        self.first_audio_at: float | None = None
        self.track_ended = self._loop.create_future()

    def _packet_time(self, ms: int) -> None:
        """Size packets for `ms` (the SDP's ptime); bounds are kept in milliseconds."""
        self._frame_ms = ms
        self._frame_samples = PHONE_RATE * ms // 1000
        self._max_frames = max(1, (self._max_queue_ms + self._extra_ms) // ms)
        self._target_frames = max(1, self._target_queue_ms // ms)
        self._hangover_ticks = max(1, self._hangover_ms // ms)

    @property
    def stats(self) -> PumpStats:
        return replace(self._stats, queue_ms=len(self._queue) * self._frame_ms)

    def play_first(self, pcm: Pcm) -> None:
        """Send `pcm` (phone-rate audio) before any AI audio: the recording announcement.
        AI audio arriving meanwhile waits behind it, not dropped: the queue's bound grows by
        its length until the backlog is back under the usual bound (silence between AI turns
        is skipped, so the added delay ends at the AI's first pause)."""
        if pcm.size:
            self._first = pcm
            self._extra_ms = pcm.shape[0] * 1000 // PHONE_RATE
            self._packet_time(self._frame_ms)

    def start(self, track: MediaStreamTrack | None = None,
              tasks: asyncio.TaskGroup | None = None) -> None:
        """Start sending (a failure is raised in `tasks`, the owning call's task group, when
        given); with `track`, also follow aiortc's remote track (its end, and any frames
        aiortc's own decoder delivers)."""
        self._spawn = tasks.create_task if tasks is not None else asyncio.create_task
        if track is not None:
            self._tasks.append(self._spawn(self._read(track), name="ai-pump-read"))
        now = self._clock.now()
        self.tick(now)
        self._last = now
        self._schedule()

    async def stop(self) -> None:
        self._stopped = True  # the AI leg may deliver a few more frames until it is closed
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            # A task that crashed was reported by the task group that owns it.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        self._resampler.close()  # its filter graph's native threads end with the call

    # ---------------------------------------------------------------- input

    async def _read(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                if isinstance(frame, AudioFrame):
                    self.feed(frame)
        except MediaStreamError:
            logger.info("AI audio track ended")
        if not self.track_ended.done():
            self.track_ended.set_result(None)

    @property
    def speaking(self) -> bool:
        """The AI is in a talkspurt or has speech queued (e.g. its goodbye is still playing)."""
        return self._talkspurt or any(voiced for _, voiced in self._queue)

    def feed(self, frame: AudioFrame) -> None:
        """Queue one decoded AI frame of any rate/layout (aiortc's own decoder); ignored once
        stopped."""
        if not self._stopped:
            self._resampler.push(frame)
            self._enqueue()

    def feed_pcm(self, pcm: Pcm) -> None:
        """Queue AI audio already at the phone's rate, mono s16 (the tuned receiver decodes
        to 8 kHz); ignored once stopped. The pump may keep `pcm` itself: the caller hands it
        over (the decoder returns a fresh array per packet)."""
        if self._stopped:
            return
        if pcm.shape[0] == self._frame_samples and not self._resampler.buffered_samples:
            self._enqueue(pcm)  # one whole packet (20 ms ptime): no round trip through the FIFO
        else:
            self._resampler.push_pcm(pcm)
            self._enqueue()

    def _enqueue(self, whole: Pcm | None = None) -> None:
        """Queue `whole` (a packet's worth the caller no longer uses), then cut what the
        resampler holds into packet-sized frames and queue them."""
        stats = self._stats
        stats.frames_in += 1
        queue, n, resampler = self._queue, self._frame_samples, self._resampler
        pcm = whole if whole is not None else resampler.pop(n)
        while pcm is not None:
            queue.append((pcm, self._vad.voiced(pcm)))
            if len(queue) > self._max_frames:
                dropped, _ = queue.popleft()
                stats.dropped_backlog += 1
                stats.dropped_backlog_ms += dropped.shape[0] * 1000 // PHONE_RATE
            pcm = resampler.pop(n)
        peak = len(queue) * self._frame_ms
        if peak > stats.queue_ms_peak:
            stats.queue_ms_peak = peak
        if queue:
            self._fed_at = now = self._clock.now()
            if self._due is not None:  # the pump waits for audio: send this when it may go
                at = self._earliest(self._due)
                if self._flowing and at - now <= _EARLY_S:
                    self._on_timer(_EARLY_S)
                else:
                    self._arm(at)

    def lost(self, packets: int) -> None:
        """The AI leg lost `packets` 20 ms packets (a sequence gap, found when the packet
        after it arrived). The empty slots they left mid-speech were losses, not late audio:
        they move from the pending underruns to `lost_speech`, so underruns measure playout
        starvation alone (issue 11 item 6) and loss is reported where it happened."""
        frames = max(1, packets * 20 // self._frame_ms)
        moved = min(frames, self._pending_underruns)
        self._pending_underruns -= moved
        self._stats.lost_speech += moved

    # --------------------------------------------------------------- output

    def _schedule(self) -> None:
        """Arm the timer for the packet slot after the one due at `self._last`.

        While the AI's frames flow, a packet goes out when its frame is here and a packet
        time has passed since the last one; a frame that is late is waited for, up to
        `_ALLOWANCE_S`, rather than concealed — the phone then sees one gap of at most
        ptime + allowance instead of a concealed frame plus a frame of standing delay. When
        frames wait for the tick, the schedule moves earlier by up to `_PULL_IN_S` per packet,
        so the phase settles just after the frames' arrival and the delay added here stays
        at a few milliseconds. With nothing from the AI the cadence is the plain packet time
        (keepalive silence), and the first frame after such a pause goes out at once if half
        a packet time has passed. A frame that `feed` queues while the pump waits for one
        moves the timer to when that frame may go, or, while frames flow and its slot is at
        most `_EARLY_S` away, is sent at once (`_enqueue`; the wait past a missing frame is
        then counted from that packet, `_give_up`).
        """
        due = self._last + self._frame_ms / 1000
        if self._has_audio():
            self._due = None
            self._arm(self._earliest(due))
        else:
            self._due = due
            self._arm(self._give_up(due))

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(at - self._clock.now(), self._on_timer)

    def _on_timer(self, early: float = TIMER_SLACK_S) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            self._slot(early)
        except Exception as exc:  # raised in the call's task group, as a crashed task would be
            self._stopped = True
            self._tasks.append(self._spawn(_reraise(exc), name="ai-pump-failed"))

    def _slot(self, early: float) -> None:
        """The timer fired, or a frame came at most `early` before it may go: send this slot's
        packet (unless its frame may not go yet) and arm the timer for the next."""
        clock = self._clock
        now = clock.now()
        frame_s = self._frame_ms / 1000
        due = self._last + frame_s
        self._due = None
        if self._has_audio():
            earliest = self._earliest(due)
            if now < earliest - early:  # queued after the timer was armed for later
                self._arm(earliest)
                return
            fed_at = self._fed_at if self._fed_at is not None else now
            # On time: the schedule holds (our own wake-up lateness must not shift it);
            # late: the phase moves to the frame's arrival, bounded by the allowance.
            target = earliest if fed_at <= earliest else min(fed_at, self._give_up(due))
        else:
            target = self._give_up(due)
        behind = now - target
        if behind > 3 * frame_s:
            # The loop stalled: skip the missed ticks (timestamps jump, the phone's
            # jitter buffer conceals) instead of bursting packets at the phone.
            missed = int(behind / frame_s)
            target += missed * frame_s
            self._sink.skip_samples(missed * self._frame_samples)
            self._stats.clock_slips += 1
        self.tick(now)
        self._last = target
        self._schedule()

    def _give_up(self, due: float) -> float:
        """When the packet due at `due` goes without its frame: while frames flow, a packet
        time plus the allowance after the last packet sent (which may have left up to
        `_EARLY_S` before its slot), so the phone's gap stays within ptime + allowance."""
        if not self._flowing:
            return due
        last = self._last_tick
        if last is not None and last + self._frame_ms / 1000 < due:
            due = last + self._frame_ms / 1000
        return due + _ALLOWANCE_S

    def _earliest(self, due: float) -> float:
        """When a queued frame may go, for the packet due at `due`."""
        return due - (self._frame_ms / 2000 if not self._flowing else self._pull_in(due))

    def _has_audio(self) -> bool:
        return bool(self._queue) or self._first is not None

    def _pull_in(self, due: float) -> float:
        """How much earlier than `due` the next packet may go: its frame has waited."""
        if len(self._queue) != 1 or self._fed_at is None or self._frame_ms % 20:
            # A backlog keeps the packet time exactly; so does a packet time the AI's 20 ms
            # frames do not divide (10, 30 ms: how long a packet waits varies by design).
            return 0.0
        waited = due - self._fed_at
        return min(_PULL_IN_S, max(0.0, waited - _WAIT_TARGET_S))

    def tick(self, now: float) -> None:
        """One packet slot: send the next queued frame, or silence, or nothing."""
        if self._last_tick is not None and (gap := (now - self._last_tick) * 1000) > (
            self._stats.max_gap_ms
        ):
            self._stats.max_gap_ms = gap
        self._last_tick = now
        params = self._sink.params
        if params.ptime_ms != self._frame_ms:
            # A re-INVITE changed the packet time: new frames come in the new size; the few
            # already queued go out in theirs (their timestamps still advance by their length).
            self._packet_time(params.ptime_ms)
        codec = g711(params.codec)
        q = self._queue
        if self._first is not None:
            self._flowing = True  # the announcement is paced like AI audio
            self._send_first(codec)
            return
        if self._extra_ms and len(q) * self._frame_ms <= self._max_queue_ms:
            self._extra_ms = 0  # the backlog that waited behind play_first has drained
            self._packet_time(self._frame_ms)
        # Shrink standing delay: drop silence while we hold more than the target (not inside a
        # talkspurt, where short pauses are part of speech).
        while len(q) > self._target_frames and not q[0][1] and not self._talkspurt:
            q.popleft()
            self._stats.skipped_silence += 1
        self._flowing = bool(q)
        if q:
            pcm, voiced = q.popleft()
            marker = False
            if voiced:
                if not self._talkspurt:
                    self._talkspurt = True
                    marker = True  # RFC 3551 §4.1: first packet of a talkspurt
                    self._speech_started(now)
                elif self._pending_underruns:
                    self._stats.underruns_speech += self._pending_underruns
                self._pending_underruns = 0
                self._quiet_ticks = 0
            else:
                self._quiet(underrun=False)
            self._sink.send_audio(codec.encode(pcm), pcm.shape[0], marker)
            self._stats.sent_audio += 1
            self._stats.samples_sent_audio += pcm.shape[0]
            self._last_sent = pcm
            return
        first_gap_in_speech = self._talkspurt and self._pending_underruns == 0
        self._quiet(underrun=True)
        last = self._last_sent
        if first_gap_in_speech and last is not None and last.shape[0] == self._frame_samples:
            # A frame missing mid-speech (lost on the AI leg, or late): repeat the last one
            # with a fade rather than cutting to silence; longer gaps fall to silence.
            self._sink.send_audio(codec.encode(conceal(last)), self._frame_samples)
            self._stats.concealed += 1
        elif self._keepalive:
            self._sink.send_audio(codec.silence(self._frame_samples), self._frame_samples)
            self._stats.sent_silence += 1
        else:
            self._sink.skip_samples(self._frame_samples)

    def _send_first(self, codec: G711Codec) -> None:
        assert self._first is not None
        n = self._frame_samples
        pcm, rest = self._first[:n], self._first[n:]
        self._first = rest if rest.size else None
        if pcm.shape[0] < n:  # the last packet, padded to the packet time
            pcm = np.concatenate([pcm, np.zeros(n - pcm.shape[0], dtype=np.int16)])
        self._sink.send_audio(codec.encode(pcm), n)

    def _quiet(self, underrun: bool) -> None:
        if not self._talkspurt:
            if underrun:
                self._stats.underruns_idle += 1
            return
        self._quiet_ticks += 1
        if underrun:
            self._pending_underruns += 1  # decided when we learn whether speech resumes
        if self._quiet_ticks >= self._hangover_ticks:
            self._talkspurt = False
            self._stats.underruns_idle += self._pending_underruns
            self._pending_underruns = 0

    def _speech_started(self, now: float) -> None:
        if self.first_audio_at is None:
            self.first_audio_at = now
        if self._meter is not None:
            self._meter.ai_audio_started(now)
        if self._on_speech_start is not None:
            self._on_speech_start(now)


async def _reraise(exc: Exception) -> None:
    raise exc

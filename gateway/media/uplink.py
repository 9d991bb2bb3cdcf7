"""Phone → AI: the caller's audio as the aiortc track Orga's peer sends.

`CallerAudioTrack` is an aiortc `MediaStreamTrack`: aiortc's own sender pulls it (`recv`); the
gateway's sender (`aiortc_patches.tune_sender`) has it push each frame from the phone packet's
receive callback (`push_to`), so no task wakes per packet. Either way it is driven by the
phone's packets: a 20 ms frame (the AI leg's Opus frame) goes out the moment the
caller's jitter buffer has its samples in sequence (packets of any ptime), decoded from G.711
or concealed where a packet was lost (one faded repeat, then silence). Nothing waits on a
clock of ours while audio flows, so the only delay added on the way to the AI is the
transcoding; the AI leg's receiver absorbs network jitter with its own buffer, as every WebRTC
receiver does, and a second fixed hold here would only add to it (issue 11 item 6).

When the phone falls silent (loss at the end of a phrase, a stall, a phone that stops sending)
the track still yields a frame per 20 ms: once a frame is `grace` late (the packet time plus
20 ms, growing when packets turn out to arrive later than that) it fills with concealment or
silence, then keeps the 20 ms cadence until packets return. A filled slot is not filled twice:
the loss it covered, when later detected, consumes the fill instead of concealing again.
It tells the turn meter whether each frame was voiced and hands aiortc one Opus packet (or
one 48 kHz frame).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from gateway.clock import TIMER_SLACK_S, Clock, Wakeup
from gateway.media.jitter import JitterBuffer, Output
from gateway.media.transcode import (
    FRAME_MS,
    PHONE_FRAME_SAMPLES,
    AudioFrame,
    CallerResampler,
    EncodedPacket,
    OpusPhoneEncoder,
    Pcm,
    g711,
)
from gateway.media.voice import EnergyVad, TurnLatencyMeter, conceal
from gateway.sdp import MediaParams

logger = logging.getLogger(__name__)

FRAME_S = FRAME_MS / 1000  # one AI-leg frame: the tick of this track


class CallerAudioSource(Protocol):
    """What the caller track needs from the RTP session (an `RtpSession` satisfies it)."""

    @property
    def jitter(self) -> JitterBuffer: ...

    @property
    def params(self) -> MediaParams: ...

    on_audio: Callable[[], None] | None
    """Called after each packet enters the jitter buffer; the track sets it to wake itself."""


_JITTER_ALLOWANCE_S = 0.020  # a frame is this long past its packet time before we fill it
_MAX_ALLOWANCE_S = 0.100
_CLEAN_FRAMES = 500  # 10 s without a late packet: the allowance shrinks by one step
_SHORT_GAP = 3 * PHONE_FRAME_SAMPLES  # fills up to this long, then audio: lateness, not a pause


class CallerAudioTrack(MediaStreamTrack):
    """Caller audio for aiortc's sender.

    `opus=False`: 48 kHz stereo `AudioFrame`s; aiortc resamples and Opus-encodes them in its
    thread pool. `opus=True`: Opus packets encoded here from the 8 kHz signal
    (`OpusPhoneEncoder`); aiortc only packetises them. Use it only when the negotiated audio
    codec is Opus (aiortc cannot tell a track that), e.g. after
    `transceiver.setCodecPreferences([opus])`.
    """

    kind = "audio"

    def __init__(
        self,
        source: CallerAudioSource,
        clock: Clock,
        *,
        vad: EnergyVad | None = None,
        meter: TurnLatencyMeter | None = None,
        opus: bool = False,
    ) -> None:
        super().__init__()
        self._source = source
        self._clock = clock
        self._vad = vad or EnergyVad()
        self._meter = meter
        self._resampler: CallerResampler | None = None if opus else CallerResampler()
        self._opus: OpusPhoneEncoder | None = OpusPhoneEncoder() if opus else None
        self._pending: collections.deque[Pcm] = collections.deque()
        self._pending_samples = 0
        self._last: Pcm | None = None  # last decoded frame, for concealment
        self._losses_in_row = 0
        self._deadline: float | None = None  # the next frame goes out by then, audio or not
        self._allowance_s = _JITTER_ALLOWANCE_S
        self._clean_frames = 0
        self._filled = 0  # samples filled since the last real audio (owed to a later loss)
        self._wakeup = Wakeup()
        source.on_audio = self._wakeup.set
        self._push: Callable[[AudioFrame | EncodedPacket[Any]], None] | None = None
        self._timer: asyncio.TimerHandle | None = None  # push mode: the next deadline
        self.frames_voiced = 0
        self.frames_concealed = 0
        self.frames_silent_fill = 0
        self.late_after_fill = 0  # packets that came after their slot was filled

    def stop(self) -> None:
        """End the track and release its encoder or resampler (native threads) at once."""
        super().stop()
        self._source.on_audio = None
        self._push = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wakeup.set()  # a recv() waiting for audio ends now
        if self._opus is not None:
            self._opus.close()
        if self._resampler is not None:
            self._resampler.close()

    async def recv(self) -> AudioFrame | EncodedPacket[Any]:
        """The next frame, for aiortc's own sender (which pulls); see `push_to`."""
        if self.readyState != "live":
            raise MediaStreamError
        clock = self._clock
        while (pcm := self._ready_chunk()) is None:
            now = clock.now()
            if (pcm := self._overdue(now)) is not None:
                break
            assert self._deadline is not None
            await self._wakeup.wait(self._deadline - now)  # until a packet or the deadline
            if self.readyState != "live":  # stopped (codec released) while we waited
                raise MediaStreamError
        else:
            self._audio_sent()
        return self._emit(pcm)

    def push_to(self, send: Callable[[AudioFrame | EncodedPacket[Any]], None]) -> None:
        """Push each frame to `send` instead of waiting to be pulled (`recv` is then unused):
        the frame made of a phone packet goes out from that packet's own receive callback,
        and a loop timer fills the frames the phone left empty at their deadlines — no task
        wakes per packet (`aiortc_patches.tune_sender`). A failure in here (the encoder,
        `send`) is logged and ends the track, as aiortc's sender ends on one."""
        self._push = send
        self._source.on_audio = self._on_audio
        self._on_audio()  # what the jitter buffer holds already goes first
        self._on_deadline()  # else the first frame is silence now, audio when it comes

    def _on_audio(self) -> None:
        """A packet entered the jitter buffer: send every frame it completed."""
        try:
            while self._push is not None and (pcm := self._ready_chunk()) is not None:
                self._audio_sent()
                self._push(self._emit(pcm))
        except Exception:
            self._failed()

    def _on_deadline(self) -> None:
        """The timer: fill the frame if its deadline passed, then sleep until the next
        deadline. Audio moves the deadline without touching the timer; the timer, firing
        early, just sleeps again (one timer per 40 ms of speech instead of two per packet)."""
        self._timer = None
        if self._push is None:
            return
        now = self._clock.now()
        try:
            if (pcm := self._overdue(now)) is not None:
                self._push(self._emit(pcm))
        except Exception:
            self._failed()
        if self._push is not None:
            assert self._deadline is not None
            self._timer = asyncio.get_running_loop().call_later(self._deadline - now,
                                                                self._on_deadline)

    def _overdue(self, now: float) -> Pcm | None:
        """The frame the phone owes if its deadline has passed (filled), else None. The first
        frame is due at once: silence now, audio when it comes."""
        if self._deadline is None:
            self._deadline = now
        if now < self._deadline - TIMER_SLACK_S:
            return None
        self._deadline += FRAME_S  # silent phone: keep the 20 ms cadence
        return self._fill()

    def _failed(self) -> None:
        logger.exception("caller audio track failed; the AI leg hears nothing more")
        self.stop()

    def _audio_sent(self) -> None:
        """Audio made this frame: the next is due a packet time after it, plus jitter room."""
        ptime_s = self._source.params.ptime_ms / 1000
        self._deadline = self._clock.now() + max(FRAME_S, ptime_s) + self._allowance_s

    def _emit(self, pcm: Pcm) -> AudioFrame | EncodedPacket[Any]:
        voiced = self._vad.voiced(pcm)
        if voiced:
            self.frames_voiced += 1
        if self._meter is not None:
            self._meter.caller_frame(self._clock.now(), voiced, FRAME_S)
        if self._opus is not None:
            return self._opus.encode(pcm)
        assert self._resampler is not None
        return self._resampler.process(pcm)

    def _ready_chunk(self) -> Pcm | None:
        """The next 160 samples if the jitter buffer has them in sequence now, else None."""
        jitter = self._source.jitter
        while self._pending_samples < PHONE_FRAME_SAMPLES:
            out = jitter.pop_ready()
            if out is None:
                return None
            if out.kind is Output.AUDIO:
                if self._filled:
                    self._late_packet()
                pcm = g711(self._source.params.codec).decode(out.payload)
                self._last = pcm
                self._losses_in_row = 0
            elif out.kind is Output.LOSS:
                if self._filled >= out.samples:  # this slot was already filled at its deadline
                    self._filled -= out.samples
                    continue
                pcm = self._conceal(out.samples)
            else:  # SILENCE: a telephone-event slot
                pcm = np.zeros(out.samples, dtype=np.int16)
            self._pending.append(pcm)
            self._pending_samples += pcm.shape[0]
        if self._clean_frames >= _CLEAN_FRAMES:
            self._clean_frames = 0
            self._allowance_s = max(_JITTER_ALLOWANCE_S, self._allowance_s - 0.020)
        self._clean_frames += 1
        return self._take(PHONE_FRAME_SAMPLES)

    def _late_packet(self) -> None:
        """Audio came after its slot was filled: a jitter spike (widen the allowance) or the
        end of a pause (the phone stopped sending); either way the fill stands."""
        if self._filled <= _SHORT_GAP:
            self.late_after_fill += 1
            self._allowance_s = min(_MAX_ALLOWANCE_S, self._allowance_s + 0.020)
            self._clean_frames = 0
        self._filled = 0

    def _fill(self) -> Pcm:
        """The deadline passed without the samples: complete the frame with concealment (the
        first missing packet in a row) or silence."""
        need = PHONE_FRAME_SAMPLES - self._pending_samples
        if self._last is not None:  # before the caller's first packet nothing is owed
            self._filled += need
        if self._last is not None and self._losses_in_row == 0 and need == PHONE_FRAME_SAMPLES:
            pcm = self._conceal(need)
        else:
            self.frames_silent_fill += 1
            pcm = np.zeros(need, dtype=np.int16)
        self._pending.append(pcm)
        self._pending_samples += need
        return self._take(PHONE_FRAME_SAMPLES)

    def _conceal(self, samples: int) -> Pcm:
        self.frames_concealed += 1
        self._losses_in_row += 1
        last = self._last
        if self._losses_in_row == 1 and last is not None and last.shape[0] == samples == (
            PHONE_FRAME_SAMPLES
        ):
            return conceal(last)
        return np.zeros(samples, dtype=np.int16)

    def _take(self, n: int) -> Pcm:
        if self._pending[0].shape[0] == n:  # the usual 20 ms ptime case: no copy
            self._pending_samples -= n
            return self._pending.popleft()
        parts = []
        need = n
        while need:
            head = self._pending[0]
            if head.shape[0] <= need:
                parts.append(self._pending.popleft())
                need -= head.shape[0]
            else:
                parts.append(head[:need])
                self._pending[0] = head[need:]
                need = 0
        self._pending_samples -= n
        return np.concatenate(parts)

"""Phone → AI: the caller's audio as the aiortc track Orga's peer sends.

`CallerAudioTrack` is an aiortc `MediaStreamTrack` that aiortc's sender pulls. It paces itself
on the AI leg's 20 ms Opus frame (the injected loop clock, an absolute schedule phase-locked once to
the phone's packets), and on each tick pulls the caller's jitter buffer (packets of any ptime),
decodes G.711 (or conceals a loss: one faded repeat, then silence), tells the turn meter
whether the frame was voiced, and hands aiortc one Opus packet (or one 48 kHz frame). It never
waits for the network: nothing arrived means silence.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, Protocol

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from gateway.clock import Clock
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

FRAME_S = FRAME_MS / 1000  # one AI-leg frame: the tick of this track


class CallerAudioSource(Protocol):
    """What the caller track needs from the RTP session (an `RtpSession` satisfies it)."""

    @property
    def jitter(self) -> JitterBuffer: ...

    @property
    def params(self) -> MediaParams: ...

    @property
    def last_audio_arrival(self) -> float | None:
        """Monotonic time (the loop's clock) the latest audio packet arrived, if any."""
        ...


_ANCHOR_S = 0.002  # tick this long after the phone's packets arrive


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
        self._opus_out: collections.deque[EncodedPacket[Any]] = collections.deque()
        self._pending: collections.deque[Pcm] = collections.deque()
        self._pending_samples = 0
        self._last: Pcm | None = None  # last decoded frame, for concealment
        self._losses_in_row = 0
        self._start: float | None = None
        self._anchored = False
        self._frames = 0
        self.frames_voiced = 0
        self.frames_concealed = 0
        self.frames_silent_fill = 0

    def stop(self) -> None:
        """End the track and release its encoder or resampler (native threads) at once."""
        super().stop()
        if self._opus is not None:
            self._opus.close()
        if self._resampler is not None:
            self._resampler.close()

    async def recv(self) -> AudioFrame | EncodedPacket[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        clock = self._clock
        if self._start is None:
            self._start = clock.now()
        else:
            if not self._anchored:
                self._anchor()
            # Absolute schedule: start + n·20 ms, so waiting never accumulates drift.
            wait = self._start + self._frames * FRAME_S - clock.now()
            if wait > 0:
                await asyncio.sleep(wait)
                if self.readyState != "live":  # stopped (codec released) while we waited
                    raise MediaStreamError
        self._frames += 1
        pcm = self._next_chunk()
        voiced = self._vad.voiced(pcm)
        if voiced:
            self.frames_voiced += 1
        if self._meter is not None:
            arrival = clock.now() - self._source.jitter.depth_ms / 1000.0
            self._meter.caller_frame(arrival, voiced, FRAME_S)
        if self._opus is not None:
            self._opus_out.extend(self._opus.encode(pcm))
            while not self._opus_out:  # libopus gives one packet per 20 ms; never stall
                self._opus_out.extend(self._opus.encode(self._next_chunk()))
            return self._opus_out.popleft()
        assert self._resampler is not None
        return self._resampler.process(pcm)

    def _anchor(self) -> None:
        """Phase-lock our 20 ms schedule to the phone's packets, once, at the first one.

        Why: with the jitter buffer holding 40 ms, a packet waits 20 ms plus the time until
        our next tick; ticking 2 ms after the phone's packets arrive makes that 22 ms instead
        of anything from 20 to 40. The schedule moves later by < 20 ms, once (aiortc just
        sends that one frame a little later); timestamps stay continuous.
        """
        arrival = self._source.last_audio_arrival
        if arrival is None or self._start is None:
            return
        self._anchored = True
        next_tick = self._start + self._frames * FRAME_S
        self._start += (arrival + _ANCHOR_S - next_tick) % FRAME_S

    def _next_chunk(self) -> Pcm:
        """160 samples of caller audio: decoded, concealed, or silence; never waits."""
        jitter = self._source.jitter
        while self._pending_samples < PHONE_FRAME_SAMPLES:
            out = jitter.pop()
            if out.kind is Output.AUDIO:
                pcm = g711(self._source.params.codec).decode(out.payload)
                self._last = pcm
                self._losses_in_row = 0
            elif out.kind is Output.LOSS:
                pcm = self._conceal(out.samples)
            elif out.kind is Output.SILENCE:
                pcm = np.zeros(out.samples, dtype=np.int16)
            else:  # EMPTY: priming or underrun: fill with silence rather than stall
                self.frames_silent_fill += 1
                pcm = np.zeros(PHONE_FRAME_SAMPLES - self._pending_samples, dtype=np.int16)
            self._pending.append(pcm)
            self._pending_samples += pcm.shape[0]
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

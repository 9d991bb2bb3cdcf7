"""A tiny answering phone for the probe's loopback tests, built from the real parts.

SipEndpoint + SipDriver + UdpTransport/TcpTransport for signalling, sdp.negotiate for the answer,
RtpSession for media. Its behaviour per INVITE is set by `UasBehaviour`: reject with a status,
ring forever, or answer and then — once it has heard an utterance by the emulator's rule (≥ 300
ms of voice, then ≥ 500 ms of silence) — play a tone, optionally hanging up afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gateway.clock import LoopClock
from gateway.emulator.audio import Utterance
from gateway.emulator.audio import UtteranceDetector as UtteranceVad
from gateway.media.jitter import Output
from gateway.media.rtp_session import RtpSession
from gateway.media.transcode import PHONE_FRAME_SAMPLES, PHONE_RATE, G711Codec
from gateway.sdp import MediaParams, negotiate, parse_offer
from gateway.sip.core import EndpointConfig
from gateway.sip.endpoint import SipEndpoint
from gateway.sip.events import (
    AckReceived,
    ByeReceived,
    CallCancelled,
    CallHandle,
    DialogEnded,
    Event,
    InviteReceived,
)
from gateway.transport.driver import SipDriver
from gateway.transport.tcp import TcpTransport
from gateway.transport.udp import UdpTransport

FRAME_S = 0.02


@dataclass(frozen=True, slots=True)
class UasBehaviour:
    reject_status: int | None = None  # answer the INVITE with this final status
    ring_only: bool = False  # send 180 and never answer
    tone_hz: float | None = 1000.0  # None: answer and stay silent
    tone_s: float = 1.0
    tone_dbfs: float = -12.0
    hang_up_after_tone: bool = False
    g729_answer: bool = False  # answer with SDP naming only G.729 (a broken far end)
    early_media_s: float | None = None  # 183 with SDP and a 425 Hz ringback, then answer
    max_replies: int | None = None  # stop replying after this many tones
    codecs: tuple[str, ...] = ("PCMU", "PCMA")


@dataclass(slots=True)
class UasLog:
    """What the UAS saw, for assertions."""

    invites: int = 0
    acks: int = 0
    byes: int = 0
    cancels: int = 0
    ended: list[str] = field(default_factory=list)
    params: MediaParams | None = None
    utterances: list[Utterance] = field(default_factory=list)
    tones_played: int = 0


class ToneUas:
    def __init__(self, behaviour: UasBehaviour) -> None:
        self.behaviour = behaviour
        self.log = UasLog()
        self.done = asyncio.Event()  # set when a call's dialog ended
        self._driver: SipDriver | None = None
        self._udp: UdpTransport | None = None
        self._tcp: TcpTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._media: dict[CallHandle, asyncio.Task[None]] = {}

    async def start(self) -> None:
        endpoint = SipEndpoint(EndpointConfig(user_agent="probe-test-uas", contact_user="uas"))
        self._driver = SipDriver(endpoint, self._on_event)
        self._udp = await UdpTransport.start(self._driver, "127.0.0.1", 0)
        self._tcp = await TcpTransport.start(self._driver, "127.0.0.1", 0)

    def uri(self, transport: str = "udp") -> str:
        sip = self._udp if transport == "udp" else self._tcp
        assert sip is not None
        return f"sip:uas@127.0.0.1:{sip.local_addr[1]}"

    async def stop(self) -> None:
        for task in [*self._tasks, *self._media.values()]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            await self._tcp.close()
        if self._driver is not None:
            self._driver.close()

    @property
    def driver(self) -> SipDriver:
        assert self._driver is not None
        return self._driver

    def _on_event(self, event: Event) -> None:
        ep = self.driver.endpoint
        if isinstance(event, InviteReceived):
            self.log.invites += 1
            call = event.call
            if self.behaviour.reject_status is not None:
                status = self.behaviour.reject_status
                self.driver.run(lambda now: ep.reject(call, status, now))
            elif self.behaviour.ring_only:
                self.driver.run(lambda now: ep.ring(call, now))
            else:
                assert event.sdp is not None
                self._spawn(self._answer(call, event.sdp))
        elif isinstance(event, AckReceived):
            self.log.acks += 1
        elif isinstance(event, ByeReceived):
            self.log.byes += 1
        elif isinstance(event, CallCancelled):
            self.log.cancels += 1
        elif isinstance(event, DialogEnded):
            self.log.ended.append(event.reason.value)
            task = self._media.pop(event.call, None)
            if task is not None:
                task.cancel()
            self.done.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, call: CallHandle, sdp: bytes) -> None:
        offer = parse_offer(sdp.decode())
        params, _ = negotiate(offer, self.behaviour.codecs, "127.0.0.1", 0, 7, 1)
        self.log.params = params
        rtp = await RtpSession.open("127.0.0.1", 0, params, clock=LoopClock())
        _, answer = negotiate(offer, self.behaviour.codecs, "127.0.0.1", rtp.local_address[1], 7, 1)
        if self.behaviour.g729_answer:
            answer = answer.replace("RTP/AVP 0 101", "RTP/AVP 18 101").replace(
                "a=rtpmap:0 PCMU/8000", "a=rtpmap:18 G729/8000")
        ep = self.driver.endpoint
        early = self.behaviour.early_media_s
        ringback: list[bytes] = []
        if early is not None:
            self.driver.run(lambda now: ep.ring(call, now, sdp=answer.encode()))
            ringback = _tone_frames(G711Codec(params.codec), 425.0, early, -20.0)
        self._media[call] = asyncio.ensure_future(self._media_loop(call, rtp, ringback))
        if early is not None:
            await asyncio.sleep(early)
        self.driver.run(lambda now: ep.answer(call, answer.encode(), now))

    async def _media_loop(self, call: CallHandle, rtp: RtpSession, tone: list[bytes]) -> None:
        codec = G711Codec(rtp.params.codec)
        vad = UtteranceVad(rate=PHONE_RATE)
        b = self.behaviour
        ep = self.driver.endpoint
        loop = asyncio.get_running_loop()
        start, tick = loop.time(), 0
        try:
            while True:
                out = rtp.jitter.pop()
                pcm = codec.decode(out.payload) if out.kind is Output.AUDIO else np.zeros(
                    PHONE_FRAME_SAMPLES, dtype=np.int16)
                utterance = vad.feed(pcm.astype(np.float32) / 32768.0)
                if utterance is not None:
                    self.log.utterances.append(utterance)
                    more = b.max_replies is None or self.log.tones_played < b.max_replies
                    if b.tone_hz is not None and not tone and more:
                        tone = _tone_frames(codec, b.tone_hz, b.tone_s, b.tone_dbfs)
                        self.log.tones_played += 1
                if tone:
                    rtp.send_audio(tone.pop(0), PHONE_FRAME_SAMPLES)
                    if not tone and b.hang_up_after_tone:
                        self.driver.run(lambda now: ep.hang_up(call, now))
                        return
                else:
                    rtp.send_audio(codec.silence(), PHONE_FRAME_SAMPLES)
                tick += 1
                await asyncio.sleep(max(0.0, start + tick * FRAME_S - loop.time()))
        finally:
            await rtp.close()


def _tone_frames(codec: G711Codec, hz: float, seconds: float, dbfs: float) -> list[bytes]:
    n = round(seconds * PHONE_RATE)
    amp = 32767 * 10 ** (dbfs / 20) * np.sqrt(2)
    pcm = np.round(amp * np.sin(2 * np.pi * hz * np.arange(n) / PHONE_RATE)).astype(np.int16)
    return [codec.encode(pcm[i : i + PHONE_FRAME_SAMPLES])
            for i in range(0, n - PHONE_FRAME_SAMPLES + 1, PHONE_FRAME_SAMPLES)]

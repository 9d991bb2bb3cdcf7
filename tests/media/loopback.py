"""aiortc on loopback for tests and benches only.

aioice leaves 127.0.0.1 out of its host candidates, so two peers in one test would have nothing
to pair. `loopback_only_ice()` replaces aioice's host address enumeration with just
127.0.0.1 for the duration (no other address is ever offered, no STUN: callers must pass
RTCConfiguration(iceServers=[])). The production version lives in gateway/orga/peer.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
from collections.abc import Callable, Iterator

import aioice.ice
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from gateway.media.transcode import AudioFrame, make_frame


@contextlib.contextmanager
def loopback_only_ice() -> Iterator[None]:
    original = aioice.ice.get_host_addresses

    def only_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"] if use_ipv4 else []

    aioice.ice.get_host_addresses = only_loopback
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = original


def new_peer() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


class GeneratedAudioTrack(MediaStreamTrack):
    """48 kHz mono s16 frames from `source(frame_index) -> 960 samples`, paced at 20 ms."""

    kind = "audio"

    def __init__(self, source: Callable[[int], np.ndarray]) -> None:
        super().__init__()
        self._source = source
        self._i = 0
        self._start: float | None = None
        self.sent_at: list[float] = []

    async def recv(self) -> AudioFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        wait = self._start + self._i * 0.02 - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        pcm = self._source(self._i)
        frame = make_frame(pcm, 48000, self._i * 960)
        frame.time_base = fractions.Fraction(1, 48000)
        self.sent_at.append(loop.time())
        self._i += 1
        return frame


def tone_source(freq: float, dbfs: float = -12.0, rate: int = 48000) -> Callable[[int], np.ndarray]:
    amp = 32767 * 10 ** (dbfs / 20) * np.sqrt(2)
    n = rate // 50

    def source(i: int) -> np.ndarray:
        t = (np.arange(n) + i * n) / rate
        return np.round(amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)

    return source


async def connect(offerer: RTCPeerConnection, answerer: RTCPeerConnection,
                  before_answer: Callable[[], None] | None = None) -> None:
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    if before_answer is not None:
        before_answer()
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)

"""The probe's default phrase, sent the way the gateway forwards caller audio (G.711 → jitter
buffer → CallerAudioTrack → Opus over WebRTC), is one utterance for the emulator's agent, which
then replies: the precondition of `make demo` and the probe-driven integration tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from gateway.clock import LoopClock
from gateway.emulator.server import Emulator
from gateway.media.jitter import JitterBuffer
from gateway.media.transcode import G711Codec
from gateway.media.uplink import CallerAudioTrack
from gateway.orga.api import OrgaApi
from gateway.orga.events import ResponseDone, ServerEvent
from gateway.orga.peer import OrgaPeer
from gateway.orga.session import open_session
from gateway.orga.settings import OrgaClientSettings, PeerSettings, SessionParams
from gateway.probe.audio import split_frames, spoken_phrase
from gateway.sdp import Direction, MediaParams
from tests.emulator.conftest import API_KEY, emulator  # noqa: F401  (fixture)

PARAMS = MediaParams("127.0.0.1", 4000, "PCMA", 8, 8000, 20, None, Direction.SENDRECV, False)


class _PhoneLeg:
    """What CallerAudioTrack reads: a jitter buffer fed in real time, as RTP would."""

    def __init__(self) -> None:
        self.jitter = JitterBuffer()
        self.params = PARAMS
        self.on_audio: Callable[[], None] | None = None  # set by the track: wakes it


async def test_emulator_hears_the_phrase_as_one_utterance_and_replies(
    emulator: Emulator,  # noqa: F811
) -> None:
    leg = _PhoneLeg()
    caller = CallerAudioTrack(leg, LoopClock())
    api = OrgaApi(OrgaClientSettings(base_url=emulator.base_url, api_key=API_KEY))
    params = SessionParams()
    session = await open_session(
        api,
        lambda servers: OrgaPeer(caller, PeerSettings(ice_addresses=("127.0.0.1",)), params,
                                 servers),
        params,
    )
    replied = asyncio.get_running_loop().create_future()

    def on_event(event: ServerEvent) -> None:
        if isinstance(event, ResponseDone) and not replied.done():
            replied.set_result(event)

    session.peer.add_event_listener(on_event)
    codec = G711Codec("PCMA")
    loop = asyncio.get_running_loop()
    start = loop.time()
    # The phrase plus 0.4 s more silence, one RTP packet's worth every 20 ms.
    frames = split_frames(spoken_phrase(trailing_silence_s=1.2))
    for seq, frame in enumerate(frames):
        leg.jitter.push(seq, codec.encode(frame))
        if leg.on_audio is not None:
            leg.on_audio()
        await asyncio.sleep(max(0.0, start + (seq + 1) * 0.02 - loop.time()))
    await asyncio.wait_for(replied, 5.0)
    utterances = emulator.sessions[session.conversation_id].stats.utterances
    assert len(utterances) == 1
    assert utterances[0].speech_s == pytest.approx(1.42, abs=0.25)
    assert caller.frames_voiced >= 60  # the gateway's own VAD saw speech too
    await session.peer.close()
    await api.aclose()

"""The emulator reports what the real service would not accept on the data channel, and can
be extended with more routes."""

from __future__ import annotations

import asyncio
import json

import httpx
from aiortc.mediastreams import AudioStreamTrack
from fastapi import APIRouter

from gateway.emulator.agent import AgentSettings, session_update_problems
from gateway.emulator.server import Emulator, EmulatorConfig
from gateway.orga.api import OrgaApi
from gateway.orga.catalog import VOICES
from gateway.orga.peer import OrgaPeer
from gateway.orga.session import open_session
from gateway.orga.settings import OrgaClientSettings, PeerSettings, SessionParams
from tests.emulator.conftest import API_KEY

LOOPBACK = PeerSettings(ice_addresses=("127.0.0.1",))


def test_audio_gate_is_on_by_default() -> None:
    assert AgentSettings().audio_gate


async def test_malformed_updates_and_a_wrong_channel_label_are_reported(
    emulator: Emulator,
) -> None:
    api = OrgaApi(OrgaClientSettings(base_url=emulator.base_url, api_key=API_KEY))
    session = await open_session(
        api, lambda s: OrgaPeer(AudioStreamTrack(), LOOPBACK, SessionParams(), s),
        SessionParams())
    emu_session = emulator.sessions[session.conversation_id]
    assert emu_session.stats.protocol_errors == []  # our own session.update is well formed
    channel = session.peer._channel
    channel.send("{not json")
    channel.send(json.dumps({"event": "session.update", "data": {"voice": "Nobody",
                                                                 "modalities": ["audio"]}}))
    channel.send(json.dumps({"event": "response.create"}))
    session.peer.pc.createDataChannel("orga-events")  # wrong label: negotiated in-band
    async with asyncio.timeout(3):
        while len(emu_session.stats.protocol_errors) < 4:
            await asyncio.sleep(0.02)
    errors = emu_session.stats.protocol_errors
    assert errors[0] == "client message is not JSON"
    assert "voice 'Nobody' is not a known voice" in errors[1]
    assert "unknown client event 'response.create'" in errors[2]
    assert "data channel label 'orga-events'" in errors[3]
    assert len(emu_session.stats.session_updates) == 1  # only the good one was applied
    state = emulator.state()["sessions"][0]
    assert len(state["protocol_errors"]) == 4
    await session.peer.close()
    await api.aclose()


def test_session_update_problems() -> None:
    good = {"model": "orga-1-beta", "voice": "Sofía", "temperature": 0.5,
            "instructions": "Be brief.", "modalities": ["audio"]}
    assert session_update_problems(good, VOICES) == []
    assert session_update_problems([], VOICES) == ["data is not an object"]
    problems = session_update_problems(
        {"temperature": 2, "modalities": "audio", "extra": 1, "model": "x"}, VOICES)
    assert len(problems) == 4


async def test_extra_routers_are_served() -> None:
    router = APIRouter()

    @router.get("/_emulator/extra")
    async def extra() -> dict[str, str]:
        return {"mode": "extra"}

    emu = Emulator(EmulatorConfig(api_keys=(API_KEY,)), extra_routers=[router])
    await emu.start()
    async with httpx.AsyncClient(base_url=emu.base_url) as client:
        assert (await client.get("/_emulator/extra")).json() == {"mode": "extra"}
    await emu.stop()

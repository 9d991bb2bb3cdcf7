"""Shared fixtures: an in-process emulator on 127.0.0.1, port 0.

The audio gate is on (caller audio ignored until a session.update with "audio", the quirk the
RN SDK works around), so every test that hears an utterance also proves we send that update.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.emulator.agent import AgentSettings
from gateway.emulator.server import Emulator, EmulatorConfig

API_KEY = "sk_orga_ai_test_key_0123456789"


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    emu = Emulator(EmulatorConfig(api_keys=(API_KEY,), agent=AgentSettings(audio_gate=True)))
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()

"""Shared fixtures: an in-process emulator on 127.0.0.1, port 0."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.emulator.agent import AgentSettings
from gateway.emulator.server import Emulator, EmulatorConfig

API_KEY = "sk_orga_ai_test_key_0123456789"


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    emu = Emulator(EmulatorConfig(api_keys=(API_KEY,), agent=AgentSettings()))
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()

"""Shared fixtures: an in-process emulator on 127.0.0.1, port 0.

The audio gate is on (caller audio ignored until a session.update with "audio", the quirk the
RN SDK works around), so every test that hears an utterance also proves we send that update.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.emulator.server import Emulator, EmulatorConfig
from gateway.orga.events import ServerEvent

API_KEY = "sk_orga_ai_test_key_0123456789"


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    emu = Emulator(EmulatorConfig(api_keys=(API_KEY,)))  # audio gate on: the default
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()


class EventLog:
    """Records a peer's server events through its listener (the peer keeps none itself)."""

    def __init__(self) -> None:
        self.events: list[ServerEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, event: ServerEvent) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait_for(self, kind: type, timeout_s: float = 5.0) -> ServerEvent:
        async with asyncio.timeout(timeout_s):
            while True:
                for event in self.events:
                    if isinstance(event, kind):
                        return event
                self._changed.clear()
                await self._changed.wait()

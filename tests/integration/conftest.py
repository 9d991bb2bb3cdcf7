"""Fixtures for the end-to-end tests: the emulator and the gateway in this process.

`stack` takes its settings by indirect parametrisation, e.g.
`@pytest.mark.parametrize("stack", [{"rtp": {"inactivity_timeout_s": 1.0}}], indirect=True)`;
the keys are those of `tests.integration.stack.Stack` (config sections as dicts,
`max_calls`, `port_quarantine_s`, `emulator`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.integration.stack import Stack


@pytest.fixture
async def stack(request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    running = await Stack(**getattr(request, "param", {})).start()
    try:
        yield running
    finally:
        await running.stop()

"""Which asyncio event loop the daemon runs on: uvloop when it is installed, else asyncio's own.

Why uvloop: the media plane is one UDP receive and one send per 20 ms per call, plus aiortc's
RTP/RTCP/ICE traffic; a receive + send costs 22.3 µs of CPU on asyncio's loop and 6.9 µs on
uvloop (bench/loop_udp.py; `bench/media_path.py --loop` runs the whole path on either).
Nothing in the gateway depends on which loop runs: every part reads time from the loop clock
(gateway/clock.py) and uses only asyncio's public API, so the pure-asyncio loop stays a full
fallback (`run --event-loop asyncio`, or uvloop simply not installed).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

CHOICES = ("auto", "uvloop", "asyncio")
T = TypeVar("T")


class EventLoopUnavailable(RuntimeError):
    """The event loop asked for cannot be used here."""


def loop_factory(choice: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for `choice` (None: asyncio's default). "uvloop" when it is missing raises
    `EventLoopUnavailable` with what to do; "auto" falls back quietly."""
    if choice not in CHOICES:
        raise ValueError(f"event loop must be one of {', '.join(CHOICES)}")
    if choice == "asyncio":
        return None
    if importlib.util.find_spec("uvloop") is None:
        if choice == "uvloop":
            raise EventLoopUnavailable("event loop uvloop: not installed — pip install "
                                       "uvloop, or use --event-loop asyncio")
        return None
    import uvloop

    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """`asyncio.run(main)` on the chosen loop."""
    factory = loop_factory(choice)
    with asyncio.Runner(loop_factory=factory) as runner:
        log.debug("event loop: %s", type(runner.get_loop()).__module__)
        return runner.run(main)

"""Which asyncio event loop the daemon runs on: uvloop where it is installed (a dependency on
Linux), asyncio's own otherwise or on request (`--event-loop asyncio`).

uvloop looked to make one UDP receive + send much cheaper (22.3 µs of CPU on asyncio's loop,
6.9 µs on uvloop: bench/loop_udp.py; mostly an allocation artefact, see the end), but the whole
gateway did not get cheaper and its pacing got worse:
`bench/media_path.py --calls 20 --seconds 20`, same machine, back to back (load ~1):
asyncio 2.48–2.53 % of a core per call, RTP to the phone with 0–4 of ~20,000 gaps over 30 ms
(max 29–31 ms), caller→AI p99 31–33 ms; uvloop 2.51–2.63 %, 162–204 gaps over 30 ms
(max 58–108 ms), caller→AI p99 55–70 ms. Measured again after the AI leg's RTP went direct
(aiortc_patches.py §4), three runs each, alternating: asyncio 1.87/1.88/2.07 %, uvloop
1.90/2.01/1.99 % per call, pacing now equal (gap max 27–33 ms): no difference this VM's drift
lets us see. Once more after the pump and the caller track moved to timer callbacks (which
first had to learn that uvloop fires timers up to a millisecond early, clock.TIMER_SLACK_S),
five runs each, alternating: uvloop 1.67-2.10 %, asyncio 1.80-2.14 % per call, pacing
equal (bench/results/media_path-2026-12-06-push.txt). So asyncio's loop stayed the default.
After the third pass (Opus complexity 0, the AI's RTP read without aiortc's parser) the loop's
own work is a larger share of what is left, and uvloop paid: eleven alternating pairs, 8 of
them cheaper on uvloop, ×0.94 CPU per call overall (×0.95 over five, ×0.93 over six with 5
of 6 cheaper), pacing equal (longest phone gap 24–31 ms on uvloop, 25–29 ms on asyncio's
loop), loop lag p99 2–3 ms against 3.6–5.5 ms (bench/results/media_path-2026-12-06-third.txt).
So `auto` is the default: uvloop if installed, asyncio's loop (always there) if not.
Nothing in the gateway depends on which loop runs: every part reads time from the loop clock
(gateway/clock.py) and uses only asyncio's public API.

One thing about asyncio's own loop is set here (`size_datagram_reads`, run by `run`): how much
its UDP transports ask the kernel for per datagram. asyncio asks for 256 KiB; CPython allocates
that much for each read and then shrinks it. Above glibc's mmap threshold (128 KiB until the
process frees a larger mapped block, which raises it) that is an mmap, a page fault and a munmap
per datagram: 22.6 µs per 172-byte read in a fresh process, 2.2 µs once the gateway's imports
have raised the threshold. The daemon was saved by that accident of its imports (an A/B of
`bench/media_path.py`, five runs each, showed no difference); `bench/loop_udp.py` was not, and
its 22.3 µs for asyncio above was mostly this: with the reads sized it reads asyncio 8.2 µs,
uvloop 7.7 µs per packet received and sent. 64 KiB holds the largest UDP payload there is
(65,507 bytes over IPv4), so no datagram is ever cut, and it is below the threshold whatever
the imports did.
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


DATAGRAM_READ_SIZE = 65536
"""Bytes asyncio's UDP transports read per datagram: any UDP payload fits whole."""


def size_datagram_reads() -> None:
    """Make asyncio's UDP transports read `DATAGRAM_READ_SIZE` bytes per datagram (the module
    docstring says why). Raises RuntimeError on a Python whose transport no longer has the
    class attribute this sets: untested, so the daemon stops at start instead of running
    with reads it did not mean."""
    from asyncio import selector_events

    transport = getattr(selector_events, "_SelectorDatagramTransport", None)
    if not isinstance(getattr(transport, "max_size", None), int):
        raise RuntimeError("asyncio's UDP transport (selector_events._SelectorDatagramTransport"
                           ".max_size) is not what gateway/eventloop.py was tested with: "
                           "review size_datagram_reads for this Python")
    transport.max_size = DATAGRAM_READ_SIZE  # type: ignore[union-attr]


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """`asyncio.run(main)` on the chosen loop, its UDP reads sized (`size_datagram_reads`)."""
    size_datagram_reads()
    factory = loop_factory(choice)
    with asyncio.Runner(loop_factory=factory) as runner:
        log.debug("event loop: %s", type(runner.get_loop()).__module__)
        return runner.run(main)

"""The daemon's event loop choice: uvloop where installed (the default, `auto`), asyncio's own as
the fallback or on request."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from gateway import eventloop
from gateway.clock import LoopClock


async def loop_module() -> str:
    await asyncio.sleep(0)
    LoopClock().now()  # the one clock works on either loop
    return type(asyncio.get_running_loop()).__module__


def test_asyncio_is_always_available() -> None:
    assert eventloop.loop_factory("asyncio") is None
    assert eventloop.run(loop_module(), "asyncio").startswith("asyncio")


@pytest.mark.skipif(importlib.util.find_spec("uvloop") is None, reason="uvloop not installed")
def test_auto_picks_uvloop_when_installed() -> None:
    assert eventloop.run(loop_module(), "auto").startswith("uvloop")


def test_uvloop_asked_for_but_missing_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert eventloop.loop_factory("auto") is None  # quiet fallback
    with pytest.raises(eventloop.EventLoopUnavailable, match="pip install uvloop"):
        eventloop.loop_factory("uvloop")


def test_unknown_choice() -> None:
    with pytest.raises(ValueError):
        eventloop.loop_factory("tokio")


async def read_one(size: int) -> tuple[int, object]:
    loop = asyncio.get_running_loop()
    got: asyncio.Future[int] = loop.create_future()

    class Receiver(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            got.set_result(len(data))

    rx, _ = await loop.create_datagram_endpoint(Receiver, local_addr=("127.0.0.1", 0))
    tx, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                remote_addr=rx.get_extra_info("sockname"))
    try:
        tx.sendto(b"x" * size)
        return await asyncio.wait_for(got, 5.0), getattr(rx, "max_size", None)
    finally:
        rx.close()
        tx.close()


def test_asyncio_reads_any_datagram_whole_without_a_256_kib_buffer() -> None:
    length, read_size = eventloop.run(read_one(65507), "asyncio")
    assert length == 65507  # the largest UDP payload over IPv4 arrives uncut
    assert read_size == eventloop.DATAGRAM_READ_SIZE < 128 * 1024  # below glibc's mmap threshold

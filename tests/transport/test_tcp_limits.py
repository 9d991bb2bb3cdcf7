"""TCP edge limits on real loopback sockets (issue 7 item 5): connection caps per source and in
total, the header-read (slow-loris) timeout and the message size limit each close exactly the
misbehaving connection, report their reason, and leave the other connections serving."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gateway.sip.core import EndpointConfig
from gateway.sip.endpoint import SipEndpoint
from gateway.sip.parser import Limits
from gateway.transport.driver import SipDriver
from gateway.transport.tcp import TcpLimits, TcpTransport
from tests.transport.test_transports import read_message, tcp_raw

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@asynccontextmanager
async def serving(limits: TcpLimits, max_message: int = 65535
                  ) -> AsyncIterator[tuple[TcpTransport, list[str]]]:
    endpoint = SipEndpoint(EndpointConfig(limits=Limits(max_message_bytes=max_message)))
    driver = SipDriver(endpoint, lambda event: None)
    reasons: list[str] = []
    tcp = await TcpTransport.start(driver, limits=limits, on_reject=reasons.append)
    try:
        yield tcp, reasons
    finally:
        await tcp.close()
        driver.close()


async def connect(tcp: TcpTransport, source: str = "127.0.0.1") -> Stream:
    return await asyncio.open_connection("127.0.0.1", tcp.local_addr[1], local_addr=(source, 0))


async def is_closed(stream: Stream) -> bool:
    """The server closed (or reset) this connection without sending anything."""
    try:
        return await asyncio.wait_for(stream[0].read(), 2) == b""
    except ConnectionResetError:
        return True


async def serves(stream: Stream, branch: str) -> bool:
    stream[1].write(tcp_raw(branch=branch))
    return (await read_message(stream[0])).startswith(b"SIP/2.0 200")


def close_all(*streams: Stream) -> None:
    for _, writer in streams:
        writer.close()


async def test_connections_per_source_capped_other_sources_and_older_connections_unaffected(
) -> None:
    async with serving(TcpLimits(max_per_source=2, max_total=10)) as (tcp, reasons):
        a1, a2 = await connect(tcp), await connect(tcp)
        assert await serves(a1, "z9hG4bK-a1") and await serves(a2, "z9hG4bK-a2")
        a3 = await connect(tcp)
        assert await is_closed(a3)
        assert reasons == ["tcp_connections_source"]
        b1 = await connect(tcp, "127.0.0.2")  # another source still gets in
        assert await serves(b1, "z9hG4bK-b1")
        assert await serves(a1, "z9hG4bK-a1b")  # the admitted ones keep working
        close_all(a1, a3)
        await asyncio.sleep(0.05)
        a4 = await connect(tcp)  # a freed slot can be used again
        assert await serves(a4, "z9hG4bK-a4")
        assert reasons == ["tcp_connections_source"]
        close_all(a2, a4, b1)


async def test_total_connections_capped() -> None:
    async with serving(TcpLimits(max_per_source=5, max_total=2)) as (tcp, reasons):
        a, b = await connect(tcp, "127.0.0.1"), await connect(tcp, "127.0.0.2")
        assert await serves(a, "z9hG4bK-a") and await serves(b, "z9hG4bK-b")
        c = await connect(tcp, "127.0.0.3")
        assert await is_closed(c)
        assert reasons == ["tcp_connections_total"]
        assert tcp.connection_count == 2
        assert await serves(a, "z9hG4bK-a2")
        close_all(a, b, c)


async def test_slow_loris_closed_by_header_timeout_while_others_served() -> None:
    async with serving(TcpLimits(header_timeout=0.3, idle_timeout=30)) as (tcp, reasons):
        loris, good = await connect(tcp), await connect(tcp)
        data = tcp_raw(branch="z9hG4bK-loris")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        closed_at: float | None = None
        for byte in data[:-4]:  # one byte every 20 ms: each resets the idle timer, not this one
            if loris[0].at_eof():
                break
            loris[1].write(bytes([byte]))
            await asyncio.sleep(0.02)
            if tcp.connection_count < 2 and closed_at is None:
                closed_at = loop.time()
                break
        assert await is_closed(loris)
        # Closed by the header timer: not before it, and before the headers were complete
        # (`closed_at` is set only while bytes are still to come; 30 s idle is far off).
        assert closed_at is not None and closed_at - t0 >= 0.3
        assert reasons == ["tcp_header_timeout"]
        assert await serves(good, "z9hG4bK-good")
        close_all(loris, good)


async def test_complete_messages_do_not_arm_the_header_timeout() -> None:
    async with serving(TcpLimits(header_timeout=0.2, idle_timeout=30)) as (tcp, reasons):
        conn = await connect(tcp)
        for n in range(4):  # 0.6 s of whole messages, each answered
            assert await serves(conn, f"z9hG4bK-w{n}")
            await asyncio.sleep(0.15)
        assert reasons == []
        close_all(conn)


async def test_oversized_message_closes_only_that_connection() -> None:
    async with serving(TcpLimits(), max_message=2000) as (tcp, reasons):
        big, good = await connect(tcp), await connect(tcp)
        big[1].write(b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nX-Pad: " + b"a" * 3000)
        assert await is_closed(big)
        assert reasons == ["malformed"]
        assert await serves(good, "z9hG4bK-g")
        close_all(big, good)


async def test_idle_close_is_reported() -> None:
    async with serving(TcpLimits(idle_timeout=0.1)) as (tcp, reasons):
        conn = await connect(tcp)
        assert await is_closed(conn)
        assert reasons == ["tcp_idle"]
        close_all(conn)

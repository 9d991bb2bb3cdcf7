"""The asyncio adapters on real loopback sockets: UDP round trip and the driver's one timer,
TCP replies on the same connection, broken framing and idle connections closed one at a time,
oversized messages refused."""

from __future__ import annotations

import asyncio

from gateway.sip.core import EndpointConfig
from gateway.sip.endpoint import SipEndpoint
from gateway.sip.events import (
    AckReceived,
    CallAnswered,
    DialogEnded,
    Event,
    InviteReceived,
    SipEndReason,
)
from gateway.sip.parser import Limits
from gateway.sip.timers import TimerSettings
from gateway.transport.driver import SipDriver
from gateway.transport.tcp import TcpTransport
from gateway.transport.udp import UdpTransport
from tests.sip.test_endpoint_uas import raw

FAST = TimerSettings(T1=0.01, T2=0.04, T4=0.05)


def tcp_raw(method: str = "OPTIONS", branch: str = "z9hG4bK-t") -> bytes:
    return raw(method, via=f"SIP/2.0/TCP 127.0.0.1:5090;branch={branch}", branch=branch)


async def test_udp_round_trip_and_single_timer_drives_retransmission() -> None:
    events: list[Event] = []
    endpoint = SipEndpoint(EndpointConfig(timers=FAST))
    driver = SipDriver(endpoint, events.append)
    udp = await UdpTransport.start(driver)
    loop = asyncio.get_running_loop()
    received: asyncio.Queue[bytes] = asyncio.Queue()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            received.put_nowait(data)

    client, _ = await loop.create_datagram_endpoint(Client, local_addr=("127.0.0.1", 0))
    try:
        client.sendto(raw(), udp.local_addr)
        assert (await asyncio.wait_for(received.get(), 2)).startswith(b"SIP/2.0 100")
        (invite,) = events
        assert isinstance(invite, InviteReceived)
        driver.run(lambda now: endpoint.answer(invite.call, b"v=0\r\n", now))
        # Never ACKed: 200 at 0, then copies from the driver's one timer, then (at 64·T1) BYE to
        # the Contact (port 5090, not this socket) and the end of the call.
        async def ended() -> None:
            while not events or not isinstance(events[-1], DialogEnded):
                await asyncio.sleep(0.01)

        await asyncio.wait_for(ended(), 3)
        assert events[-1] == DialogEnded(invite.call, SipEndReason.ACK_TIMEOUT)
        lines = []
        while not received.empty():
            lines.append(received.get_nowait().split(b"\r\n", 1)[0])
        assert 5 <= lines.count(b"SIP/2.0 200 OK") <= 20  # ideal: 1 + 17 copies in 0.64 s
    finally:
        client.close()
        udp.close()
        driver.close()


async def open_tcp(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def read_message(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    return head + await reader.readexactly(length)


async def test_tcp_replies_on_the_connection_and_broken_framing_closes_only_it() -> None:
    endpoint = SipEndpoint()
    driver = SipDriver(endpoint, lambda event: None)
    tcp = await TcpTransport.start(driver, idle_timeout=5.0)
    port = tcp.local_addr[1]
    try:
        r1, w1 = await open_tcp(port)
        r2, w2 = await open_tcp(port)
        data = tcp_raw()
        w1.write(data[:40])
        await w1.drain()
        await asyncio.sleep(0.01)
        w1.write(data[40:] + tcp_raw(branch="z9hG4bK-u"))  # the rest, then a pipelined one
        assert (await read_message(r1)).startswith(b"SIP/2.0 200")
        assert (await read_message(r1)).startswith(b"SIP/2.0 200")
        w2.write(b"INVITE garbage\r\n\r\n")
        assert await asyncio.wait_for(r2.read(), 2) == b""  # closed by us
        w1.write(tcp_raw(branch="z9hG4bK-v"))  # the other connection still works
        assert (await read_message(r1)).startswith(b"SIP/2.0 200")
        w1.close()
        w2.close()
    finally:
        await tcp.close()
        driver.close()


async def test_tcp_idle_connection_is_closed_and_oversize_message_refused() -> None:
    endpoint = SipEndpoint(EndpointConfig(limits=Limits(max_message_bytes=2000)))
    driver = SipDriver(endpoint, lambda event: None)
    tcp = await TcpTransport.start(driver, idle_timeout=0.1)
    port = tcp.local_addr[1]
    try:
        reader, writer = await open_tcp(port)
        assert await asyncio.wait_for(reader.read(), 2) == b""  # idle: closed after 0.1 s
        writer.close()
        reader, writer = await open_tcp(port)
        writer.write(b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nX-Pad: " + b"a" * 3000)
        assert await asyncio.wait_for(reader.read(), 2) == b""  # header section too large
        writer.close()
        await asyncio.sleep(0.05)
        assert tcp.connection_count == 0
        assert endpoint.table_sizes()["streams"] == 0
    finally:
        await tcp.close()
        driver.close()


async def test_two_endpoints_call_each_other_over_tcp() -> None:
    """Our UAC opens the connection; both directions of the dialog then reuse it."""
    a_events: list[Event] = []
    b_events: list[Event] = []
    a_ep, b_ep = SipEndpoint(EndpointConfig(timers=FAST)), SipEndpoint(EndpointConfig(timers=FAST))
    a = SipDriver(a_ep, a_events.append)
    b = SipDriver(b_ep, b_events.append)
    a_tcp = await TcpTransport.start(a)
    b_tcp = await TcpTransport.start(b)

    async def wait_for(events: list[Event], kind: type) -> Event:
        async def poll() -> Event:
            while not any(isinstance(e, kind) for e in events):
                await asyncio.sleep(0.005)
            return next(e for e in events if isinstance(e, kind))

        return await asyncio.wait_for(poll(), 2)

    try:
        port = b_tcp.local_addr[1]
        call = a.run(lambda now: a_ep.invite(
            f"sip:agent@127.0.0.1:{port};transport=tcp", now, sdp=b"v=0\r\n",
            from_uri="<sip:probe@127.0.0.1>"))
        invite = await wait_for(b_events, InviteReceived)
        assert isinstance(invite, InviteReceived) and invite.source.conn_id is not None
        b.run(lambda now: b_ep.answer(invite.call, b"v=0\r\n", now))
        answered = await wait_for(a_events, CallAnswered)
        assert isinstance(answered, CallAnswered) and answered.call == call
        await wait_for(b_events, AckReceived)
        b.run(lambda now: b_ep.hang_up(invite.call, now))  # BYE back over the same connection
        ended = await wait_for(a_events, DialogEnded)
        assert ended == DialogEnded(call, SipEndReason.REMOTE_BYE)
        assert a_tcp.connection_count == 1 and b_tcp.connection_count == 1
    finally:
        await a_tcp.close()
        await b_tcp.close()
        a.close()
        b.close()

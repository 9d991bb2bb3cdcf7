"""A loopback STUN binding server (RFC 8489 §6), so the emulator's ice-config can hand out a
STUN URL that really answers, in the form providers write it (`stun:host:port?transport=udp`).

Binding requests only: each is answered with XOR-MAPPED-ADDRESS set to the request's source.
Anything else is ignored. It binds to loopback only, like everything the tests start. Message
encoding comes from aioice (already a dependency through aiortc), not from our own code.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging

from aioice import stun

log = logging.getLogger(__name__)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, server: LoopbackStunServer) -> None:
        self._server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint's

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            request = stun.parse_message(data)
        except ValueError:
            return
        if (request.message_method != stun.Method.BINDING
                or request.message_class != stun.Class.REQUEST):
            return
        response = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE,
                                transaction_id=request.transaction_id)
        response.attributes["XOR-MAPPED-ADDRESS"] = (addr[0], addr[1])
        response.add_fingerprint()
        self._server.requests += 1
        if self.transport is not None:
            self.transport.sendto(bytes(response), addr)


class LoopbackStunServer:
    """`await start()`, read `url`, `close()` at the end."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError("the emulator's STUN server binds to loopback only")
        self._host = host
        self._protocol: _Protocol | None = None
        self.requests = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(self._host, 0))
        self._protocol = protocol

    @property
    def port(self) -> int:
        assert self._protocol is not None and self._protocol.transport is not None
        return int(self._protocol.transport.get_extra_info("sockname")[1])

    @property
    def url(self) -> str:
        """In the provider form that aiortc itself rejects (`?transport=` on a STUN URL)."""
        return f"stun:{self._host}:{self.port}?transport=udp"

    def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None

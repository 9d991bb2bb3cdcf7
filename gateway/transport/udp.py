"""SIP over UDP (RFC 3261 §18): one datagram socket feeding a `SipDriver`.

The protocol object only moves bytes: datagrams in go to the driver with their source address,
the driver's output goes out with `sendto`. ICMP errors are logged and otherwise ignored; the
transaction layer retransmits or times out on its own.

The socket asks for a large receive buffer (`RECEIVE_BUFFER`, clamped by the kernel to
net.core.rmem_max): under a flood the kernel queue is shared by every sender, so a loop that
falls behind for a moment must not make the kernel drop a legitimate BYE with the flood.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import cast

from gateway.sip.address import Addr, Outgoing, Transport
from gateway.transport.driver import SipDriver

log = logging.getLogger(__name__)

RECEIVE_BUFFER = 4 << 20


class UdpTransport(asyncio.DatagramProtocol):
    def __init__(self, driver: SipDriver) -> None:
        self._driver = driver
        self._transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def start(
        cls, driver: SipDriver, host: str = "127.0.0.1", port: int = 0,
        advertise: str | None = None,
    ) -> UdpTransport:
        """Bind `host:port` (0: any free port) and register with the driver."""
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(
            lambda: cls(driver), local_addr=(host, port)
        )
        sock = protocol._transport.get_extra_info("socket") if protocol._transport else None
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            except OSError as exc:  # not fatal: the default buffer still works
                log.info("cannot enlarge the SIP receive buffer: %s", exc)
        bound = protocol.local_addr
        driver.register(Transport.UDP, protocol, advertise or bound[0], bound[1])
        return protocol

    @property
    def local_addr(self) -> Addr:
        assert self._transport is not None
        sockname = self._transport.get_extra_info("sockname")
        return (str(sockname[0]), int(sockname[1]))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._driver.datagram_received(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)

    def send(self, item: Outgoing) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(item.data, item.addr)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

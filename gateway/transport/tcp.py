"""SIP over TCP (RFC 3261 §18): a listening socket and the connections it (or we) open.

Each connection gets an id; the endpoint frames its byte stream (`receive_stream`) and names
the connection in its output, so responses go back on the connection the request came on
(§18.2.2). When that connection is gone, or for a request to a new peer, we connect to the
address and send there. A connection whose framing breaks is closed alone; a connection idle
for `idle_timeout` seconds is closed too (RFC 5626 keep-alive CRLFs count as activity).
Message size limits are the endpoint parser's `Limits`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

from gateway.sip.address import Addr, Outgoing, Transport
from gateway.transport.driver import SipDriver

log = logging.getLogger(__name__)

_ids = itertools.count(1)


class _Connection(asyncio.Protocol):
    def __init__(self, owner: TcpTransport, conn_id: int) -> None:
        self.owner = owner
        self.conn_id = conn_id
        self.addr: Addr = ("", 0)
        self.transport: asyncio.Transport | None = None
        self._idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.addr = (str(peer[0]), int(peer[1]))
        self.owner._add(self)
        self.touch()

    def data_received(self, data: bytes) -> None:
        self.touch()
        if not self.owner.driver.stream_received(data, self.conn_id, self.addr):
            self.close()  # broken framing: this connection only

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self.owner._remove(self)
        self.owner.driver.connection_closed(self.conn_id)

    def touch(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        loop = asyncio.get_running_loop()
        self._idle = loop.call_later(self.owner.idle_timeout, self._on_idle)

    def _on_idle(self) -> None:
        log.debug("closing idle TCP connection %s from %s", self.conn_id, self.addr)
        self.close()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.touch()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class TcpTransport:
    def __init__(self, driver: SipDriver, idle_timeout: float = 300.0) -> None:
        self.driver = driver
        self.idle_timeout = idle_timeout
        self._server: asyncio.Server | None = None
        self._conns: dict[int, _Connection] = {}
        self._by_addr: dict[Addr, _Connection] = {}
        self._connecting: dict[Addr, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def start(
        cls, driver: SipDriver, host: str = "127.0.0.1", port: int = 0,
        idle_timeout: float = 300.0, advertise: str | None = None,
    ) -> TcpTransport:
        self = cls(driver, idle_timeout)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self, next(_ids)), host, port
        )
        sockname = self._server.sockets[0].getsockname()
        driver.register(Transport.TCP, self, advertise or str(sockname[0]), int(sockname[1]))
        return self

    @property
    def local_addr(self) -> Addr:
        assert self._server is not None
        sockname = self._server.sockets[0].getsockname()
        return (str(sockname[0]), int(sockname[1]))

    @property
    def connection_count(self) -> int:
        return len(self._conns)

    def _add(self, conn: _Connection) -> None:
        self._conns[conn.conn_id] = conn
        self._by_addr[conn.addr] = conn

    def _remove(self, conn: _Connection) -> None:
        self._conns.pop(conn.conn_id, None)
        if self._by_addr.get(conn.addr) is conn:
            del self._by_addr[conn.addr]

    def send(self, item: Outgoing) -> None:
        conn = self._conns.get(item.conn_id) if item.conn_id is not None else None
        conn = conn or self._by_addr.get(item.addr)
        if conn is not None:
            conn.write(item.data)
            return
        pending = self._connecting.get(item.addr)
        if pending is not None:
            pending.append(item.data)
            return
        self._connecting[item.addr] = [item.data]
        task = asyncio.get_running_loop().create_task(self._connect(item.addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, addr: Addr) -> None:
        """§18.2.2 / §18.1.1: open a connection for a peer we have none to."""
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(
                lambda: _Connection(self, next(_ids)), addr[0], addr[1]
            )
        except OSError as exc:
            log.info("TCP connect to %s failed: %s", addr, exc)
            self._connecting.pop(addr, None)
            return  # the transaction times out (Timer B/F) and reports it
        for data in self._connecting.pop(addr, []):
            conn.write(data)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns.values()):
            conn.close()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            await self._server.wait_closed()

"""SIP over TCP (RFC 3261 §18): a listening socket and the connections it (or we) open.

Each connection gets an id; the endpoint frames its byte stream (`receive_stream`) and names
the connection in its output, so responses go back on the connection the request came on
(§18.2.2). When that connection is gone, or for a request to a new peer, we connect to the
address and send there. Message size limits are the endpoint parser's `Limits`.

Edge limits (issue 7 item 5), each closing one connection and never touching the others:
- connections accepted per source address and in total (`TcpLimits`): one over the cap is
  aborted at once, before a byte is read;
- idle timeout: no bytes for `idle_timeout` seconds (RFC 5626 keep-alive CRLFs count);
- header-read timeout (slow-loris): part of a message has been pending for `header_timeout`
  seconds — armed by the first byte of a message, not pushed back by later trickles;
- broken framing (a message too large, no Content-Length, garbage): closed by the endpoint's
  verdict.
Every such close is reported to `on_reject(reason)` (the app counts it in
`security_rejections_total`); the transport itself knows nothing of metrics.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from gateway.security.ratelimit import ConcurrencyLimiter
from gateway.sip.address import Addr, Outgoing, Transport
from gateway.transport.driver import SipDriver

log = logging.getLogger(__name__)

_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class TcpLimits:
    idle_timeout: float = 300.0
    header_timeout: float = 5.0
    max_per_source: int = 16
    max_total: int = 1024


class _Connection(asyncio.Protocol):
    def __init__(self, owner: TcpTransport, conn_id: int, inbound: bool) -> None:
        self.owner = owner
        self.conn_id = conn_id
        self.inbound = inbound
        self.admitted = False  # holds a slot in the owner's limiter
        self.addr: Addr = ("", 0)
        self.transport: asyncio.Transport | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._header: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport: a cast, not an isinstance.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.addr = (str(peer[0]), int(peer[1]))
        if self.inbound and not self.owner._admit(self):
            transport.abort()  # over a cap: close at once, read nothing
            return
        self.owner._accepted(self)

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.touch()
        driver = self.owner.driver
        if not driver.stream_received(data, self.conn_id, self.addr, self.owner.kind):
            self.owner._reject("malformed")
            self.close()  # broken framing: this connection only
            return
        if driver.stream_pending(self.conn_id):
            if self._header is None:
                loop = asyncio.get_running_loop()
                self._header = loop.call_later(self.owner.limits.header_timeout,
                                               self._on_header_timeout)
        elif self._header is not None:
            self._header.cancel()
            self._header = None

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._idle, self._header):
            if timer is not None:
                timer.cancel()
        self._idle = self._header = None
        if self.admitted:
            self.owner._release(self)
        self.owner._remove(self)
        self.owner.driver.connection_closed(self.conn_id)

    def touch(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        loop = asyncio.get_running_loop()
        self._idle = loop.call_later(self.owner.limits.idle_timeout, self._on_idle)

    def _on_idle(self) -> None:
        log.debug("closing idle TCP connection %s from %s", self.conn_id, self.addr)
        self._idle = None
        self.owner._reject("tcp_idle")
        self.close()

    def _on_header_timeout(self) -> None:
        self._header = None
        self.owner._reject("tcp_header_timeout")
        log.info("closing TCP connection %s from %s: message incomplete after %.1f s",
                 self.conn_id, self.addr[0], self.owner.limits.header_timeout)
        self.close()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.touch()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class TcpTransport:
    kind = Transport.TCP

    def __init__(self, driver: SipDriver, limits: TcpLimits | None = None, *,
                 on_reject: Callable[[str], None] | None = None,
                 admission: ConcurrencyLimiter | None = None) -> None:
        """`admission`: connection slots shared with another stream transport (TCP and TLS
        count against one per-source and one total cap); by default this transport's own."""
        self.driver = driver
        self.limits = limits or TcpLimits()
        self._on_reject = on_reject
        self._admission = admission or ConcurrencyLimiter(self.limits.max_per_source,
                                                          self.limits.max_total)
        self._server: asyncio.Server | None = None
        self._conns: dict[int, _Connection] = {}
        self._by_addr: dict[Addr, _Connection] = {}
        self._connecting: dict[Addr, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def idle_timeout(self) -> float:
        return self.limits.idle_timeout

    @classmethod
    async def start(
        cls, driver: SipDriver, host: str = "127.0.0.1", port: int = 0,
        idle_timeout: float | None = None, advertise: str | None = None, *,
        limits: TcpLimits | None = None, on_reject: Callable[[str], None] | None = None,
        admission: ConcurrencyLimiter | None = None,
    ) -> TcpTransport:
        limits = limits or TcpLimits()
        if idle_timeout is not None:
            limits = TcpLimits(idle_timeout, limits.header_timeout, limits.max_per_source,
                               limits.max_total)
        self = cls(driver, limits, on_reject=on_reject, admission=admission)
        await self._listen(host, port, advertise)
        return self

    async def _listen(self, host: str, port: int, advertise: str | None) -> None:
        """Bind the listening socket and register it with the driver (Via, Contact)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: self._new_connection(True), host, port)
        sockname = self._server.sockets[0].getsockname()
        self.driver.register(self.kind, self, advertise or str(sockname[0]), int(sockname[1]))

    @property
    def local_addr(self) -> Addr:
        assert self._server is not None
        sockname = self._server.sockets[0].getsockname()
        return (str(sockname[0]), int(sockname[1]))

    @property
    def connection_count(self) -> int:
        return len(self._conns)

    def _admit(self, conn: _Connection) -> bool:
        host = conn.addr[0]
        if self._admission.acquire(host):
            conn.admitted = True
            return True
        total = self._admission.active >= self._admission.total
        reason = "tcp_connections_total" if total else "tcp_connections_source"
        self._reject(reason)
        log.debug("refused TCP connection from %s: %s", host, reason)
        return False

    def _accepted(self, conn: _Connection) -> None:
        """A connection passed admission (inbound) or is up (outbound): it may carry SIP."""
        self._add(conn)
        conn.touch()

    def _release(self, conn: _Connection) -> None:
        conn.admitted = False
        self._admission.release(conn.addr[0])

    def _reject(self, reason: str) -> None:
        if self._on_reject is not None:
            self._on_reject(reason)

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
        try:
            conn = await self._open(addr)
        except OSError as exc:  # ssl.SSLError (a refused certificate) is an OSError too
            log.info("%s connect to %s failed: %s", self.kind.value, addr, exc)
            self._connecting.pop(addr, None)
            return  # the transaction times out (Timer B/F) and reports it
        for data in self._connecting.pop(addr, []):
            conn.write(data)

    async def _open(self, addr: Addr) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: self._new_connection(False),
                                               addr[0], addr[1])
        return conn

    def _new_connection(self, inbound: bool) -> _Connection:
        return _Connection(self, next(_ids), inbound)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns.values()):
            conn.close()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            await self._server.wait_closed()

"""The asyncio side of the sans-IO SIP endpoint: loop time in, bytes and events out, one timer.

`SipDriver` owns one `SipEndpoint` and the transports registered with it (`udp.py`, `tcp.py`,
`tls.py`).
After every input (a datagram, stream bytes, a timer, an application command) it flushes the
endpoint's output to the right transport, hands every event to the application callback, and
re-arms its single `loop.call_at` timer at `endpoint.get_timer()` — the aioquic
`asyncio/protocol.py` pattern. It makes no protocol decisions.

Application commands go through `run`: `driver.run(lambda now: ep.answer(call, sdp, now))`, so
the command sees loop time and its output is sent at once. Callbacks may call `run` again.
`wait_idle(timeout)` lets a shutdown wait until the endpoint has nothing in flight (our BYEs
answered, see `SipEndpoint.idle`) before the sockets close.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol, TypeVar

from gateway.sip.address import Addr, Outgoing, Transport
from gateway.sip.endpoint import SipEndpoint
from gateway.sip.events import Event

log = logging.getLogger(__name__)

T = TypeVar("T")


class Sender(Protocol):
    """A transport that can put the endpoint's output on the wire."""

    def send(self, item: Outgoing) -> None: ...


class SipDriver:
    def __init__(
        self, endpoint: SipEndpoint, on_event: Callable[[Event], None],
        loop: asyncio.AbstractEventLoop | None = None,
        trace: Callable[[str, bytes, Addr], None] | None = None,
    ) -> None:
        """`trace(direction, data, addr)` sees every datagram/segment ("in"/"out"), for tests."""
        self.endpoint = endpoint
        self._trace = trace
        self._on_event = on_event
        self._loop = loop or asyncio.get_running_loop()
        self._senders: dict[Transport, Sender] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._dispatching = False
        self._idle_waiters: list[asyncio.Future[None]] = []

    def now(self) -> float:
        return self._loop.time()

    def register(self, transport: Transport, sender: Sender, host: str, port: int) -> None:
        self._senders[transport] = sender
        self.endpoint.bind(transport, host, port)

    # --- inputs from transports ---------------------------------------------------------------
    def datagram_received(self, data: bytes, addr: Addr) -> None:
        if self._trace is not None:
            self._trace("in", data, addr)
        self.endpoint.receive_datagram(data, addr, self.now())
        self._after_input()

    def stream_received(self, data: bytes, conn_id: int, addr: Addr,
                        transport: Transport = Transport.TCP) -> bool:
        if self._trace is not None:
            self._trace("in", data, addr)
        ok = self.endpoint.receive_stream(data, conn_id, addr, self.now(), transport)
        self._after_input()
        return ok

    def connection_closed(self, conn_id: int) -> None:
        self.endpoint.connection_closed(conn_id)

    def stream_pending(self, conn_id: int) -> bool:
        return self.endpoint.stream_pending(conn_id)

    # --- application commands ------------------------------------------------------------------
    def run(self, command: Callable[[float], T]) -> T:
        """Run an endpoint command at loop time and flush what it produced."""
        try:
            return command(self.now())
        finally:
            self._after_input()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until `endpoint.idle`, at most `timeout` seconds; True when it got there."""
        if self.endpoint.idle:
            return True
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._idle_waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return False
        finally:
            if waiter in self._idle_waiters:
                self._idle_waiters.remove(waiter)
        return True

    # --- internals --------------------------------------------------------------------------
    def _after_input(self) -> None:
        self._flush()
        if not self._dispatching:
            self._dispatching = True
            try:
                while (event := self.endpoint.next_event()) is not None:
                    try:
                        self._on_event(event)
                    except Exception:
                        log.exception("SIP event handler failed on %s", type(event).__name__)
                    self._flush()
            finally:
                self._dispatching = False
        self._arm()
        # Only asked while someone waits: idle is a scan of the endpoint's tables.
        if self._idle_waiters and self.endpoint.idle:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _flush(self) -> None:
        for item in self.endpoint.datagrams_to_send():
            sender = self._senders.get(item.transport)
            if sender is None:
                log.warning("no %s transport to send to %s", item.transport.value, item.addr)
                continue
            if self._trace is not None:
                self._trace("out", item.data, item.addr)
            try:
                sender.send(item)
            except OSError as exc:  # a full socket buffer or an unreachable peer: SIP retries
                log.info("send to %s failed: %s", item.addr, exc)

    def _arm(self) -> None:
        deadline = self.endpoint.get_timer()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        due = self._timer_at
        self._timer = None
        self._timer_at = None
        # call_at may run a hair before the deadline (clock resolution): never pass an earlier now.
        now = max(self.now(), due or 0.0)
        self.endpoint.handle_timer(now)
        self._after_input()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = None

"""A tiny application on the SIP core and the real UDP/TCP transports, for SIPp to call.

It answers every INVITE with a fixed SDP (optionally ringing first, after a delay, or never),
answers re-INVITE/UPDATE offers with the same SDP, can hang up a set time after the ACK, and
records every event and every datagram that crossed its sockets (time, direction, first line).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from gateway.sip.address import Addr
from gateway.sip.core import EndpointConfig
from gateway.sip.endpoint import SipEndpoint
from gateway.sip.errors import UsageError
from gateway.sip.events import AckReceived, Event, InviteReceived, ReinviteReceived
from gateway.sip.timers import TimerSettings
from gateway.transport.driver import SipDriver
from gateway.transport.tcp import TcpTransport
from gateway.transport.udp import UdpTransport

ANSWER_SDP = (
    b"v=0\r\no=gateway 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
)


@dataclass(frozen=True, slots=True)
class Behaviour:
    ring_after: float | None = 0.0  # seconds after the INVITE; None: never ring
    answer_after: float | None = 0.0  # seconds after the INVITE; None: never answer
    hang_up_after: float | None = None  # seconds after the ACK


class SipTestApp:
    def __init__(
        self, behaviour: Behaviour, timers: TimerSettings | None = None, min_se: int = 90
    ) -> None:
        self.behaviour = behaviour
        self.endpoint = SipEndpoint(
            EndpointConfig(timers=timers or TimerSettings(), min_se=min_se)
        )
        self.events: list[Event] = []
        self.wire: list[tuple[float, str, str]] = []
        self.driver: SipDriver | None = None
        self.udp: UdpTransport | None = None
        self.tcp: TcpTransport | None = None

    async def start(self) -> None:
        self.driver = SipDriver(self.endpoint, self._on_event, trace=self._trace)
        self.udp = await UdpTransport.start(self.driver, "127.0.0.1", 0)
        self.tcp = await TcpTransport.start(self.driver, "127.0.0.1", 0, idle_timeout=30.0)

    async def stop(self) -> None:
        if self.udp is not None:
            self.udp.close()
        if self.tcp is not None:
            await self.tcp.close()
        if self.driver is not None:
            self.driver.close()

    @property
    def udp_port(self) -> int:
        assert self.udp is not None
        return self.udp.local_addr[1]

    @property
    def tcp_port(self) -> int:
        assert self.tcp is not None
        return self.tcp.local_addr[1]

    def of_type(self, kind: type) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]

    def sent(self, prefix: str) -> list[float]:
        return [t for t, d, line in self.wire if d == "out" and line.startswith(prefix)]

    def received(self, prefix: str) -> list[float]:
        return [t for t, d, line in self.wire if d == "in" and line.startswith(prefix)]

    def _trace(self, direction: str, data: bytes, addr: Addr) -> None:
        assert self.driver is not None
        line = data.lstrip(b"\r\n").split(b"\r\n", 1)[0].decode(errors="replace")
        self.wire.append((self.driver.now(), direction, line))

    def _on_event(self, event: Event) -> None:
        self.events.append(event)
        driver = self.driver
        assert driver is not None
        loop = asyncio.get_running_loop()
        ep = self.endpoint
        if isinstance(event, InviteReceived):
            call = event.call
            if self.behaviour.ring_after is not None:
                loop.call_later(
                    self.behaviour.ring_after, self._command, lambda now: ep.ring(call, now)
                )
            delay = self.behaviour.answer_after
            if delay is not None:
                loop.call_later(delay, self._command, lambda now: ep.answer(call, ANSWER_SDP, now))
        elif isinstance(event, ReinviteReceived):
            driver.run(lambda now: ep.answer_offer(event.call, ANSWER_SDP, now))
        elif isinstance(event, AckReceived) and self.behaviour.hang_up_after is not None:
            call = event.call
            loop.call_later(
                self.behaviour.hang_up_after, self._command, lambda now: ep.hang_up(call, now)
            )

    def _command(self, command: Callable[[float], None]) -> None:
        """Run a delayed command; the call may have ended meanwhile (UsageError is fine)."""
        assert self.driver is not None
        with contextlib.suppress(UsageError):
            self.driver.run(command)

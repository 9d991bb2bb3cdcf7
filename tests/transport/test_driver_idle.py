"""SipDriver.wait_idle on real loopback sockets: a shutdown keeps its socket until our BYE is
answered, and gives up after its bound when the peer is gone."""

from __future__ import annotations

import asyncio

from gateway.sip.core import EndpointConfig
from gateway.sip.endpoint import SipEndpoint
from gateway.sip.events import ByeCompleted, CallAnswered, Event, InviteReceived
from gateway.sip.timers import TimerSettings
from gateway.transport.driver import SipDriver
from gateway.transport.udp import UdpTransport

FAST = TimerSettings(T1=0.05, T2=0.2, T4=0.25)
SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"


class Side:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.endpoint = SipEndpoint(EndpointConfig(timers=FAST))
        self.driver = SipDriver(self.endpoint, self.events.append)
        self.udp: UdpTransport | None = None

    async def start(self) -> None:
        self.udp = await UdpTransport.start(self.driver, "127.0.0.1", 0)

    def close(self) -> None:
        if self.udp is not None:
            self.udp.close()
        self.driver.close()

    async def event(self, kind: type) -> Event:
        async def seen() -> Event:
            while True:
                for event in self.events:
                    if isinstance(event, kind):
                        return event
                await asyncio.sleep(0.005)

        return await asyncio.wait_for(seen(), 2)


async def call_up(caller: Side, callee: Side) -> int:
    assert callee.udp is not None
    port = callee.udp.local_addr[1]
    handle = caller.driver.run(lambda now: caller.endpoint.invite(
        f"sip:agent@127.0.0.1:{port}", now, sdp=SDP, from_uri="<sip:probe@127.0.0.1>",
    ))
    invite = await callee.event(InviteReceived)
    assert isinstance(invite, InviteReceived)
    callee.driver.run(lambda now: callee.endpoint.answer(invite.call, SDP, now))
    await caller.event(CallAnswered)
    return handle


async def test_wait_idle_returns_once_our_bye_is_answered() -> None:
    caller, callee = Side(), Side()
    await caller.start()
    await callee.start()
    try:
        handle = await call_up(caller, callee)
        assert not caller.endpoint.idle
        caller.driver.run(lambda now: caller.endpoint.hang_up(handle, now))
        assert not caller.endpoint.idle  # the call ended for the app; the BYE is in flight
        assert await caller.driver.wait_idle(4 * FAST.T1)
        done = await caller.event(ByeCompleted)
        assert isinstance(done, ByeCompleted) and done.status == 200
    finally:
        caller.close()
        callee.close()


async def test_wait_idle_gives_up_after_its_bound_when_the_peer_is_gone() -> None:
    caller, callee = Side(), Side()
    await caller.start()
    await callee.start()
    try:
        handle = await call_up(caller, callee)
        callee.close()  # the far end vanishes: our BYE is never answered
        caller.driver.run(lambda now: caller.endpoint.hang_up(handle, now))
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert not await caller.driver.wait_idle(4 * FAST.T1)
        assert loop.time() - started >= 4 * FAST.T1
        assert not any(isinstance(e, ByeCompleted) for e in caller.events)
    finally:
        caller.close()

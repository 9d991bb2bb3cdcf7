"""A UAC endpoint and a UAS endpoint joined by a fake UDP link and a hand-stepped clock.

Modelled on h11's pair-over-fake-link helper: every datagram is recorded (time, sender, first
line) so tests assert on what crossed the wire; `drop` filters datagrams to simulate loss.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.clock import FakeClock
from gateway.sip.address import Addr, Transport
from gateway.sip.core import EndpointConfig
from gateway.sip.endpoint import SipEndpoint
from gateway.sip.events import (
    AckReceived,
    CallAnswered,
    Event,
    InviteReceived,
    ProvisionalReceived,
)
from gateway.sip.timers import TimerSettings

UAC_ADDR: Addr = ("127.0.0.1", 5071)
UAS_ADDR: Addr = ("127.0.0.1", 5072)
SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
HOLD = SDP + b"m=audio 4000 RTP/AVP 0\r\na=sendonly\r\n"
RESUME = SDP + b"m=audio 4000 RTP/AVP 0\r\na=sendrecv\r\n"
TARGET = f"sip:agent@{UAS_ADDR[0]}:{UAS_ADDR[1]}"
FROM = "<sip:+4930111@127.0.0.1>"


class Link:
    def __init__(self, timers: TimerSettings | None = None, **config: object) -> None:
        self.clock = FakeClock(0.0)
        cfg = EndpointConfig(timers=timers or TimerSettings(), **config)  # type: ignore[arg-type]
        self.uac = SipEndpoint(cfg)
        self.uas = SipEndpoint(cfg)
        self.uac.bind(Transport.UDP, *UAC_ADDR)
        self.uas.bind(Transport.UDP, *UAS_ADDR)
        self.wire: list[tuple[float, str, str]] = []  # (time, "uac"|"uas", first line)
        self.drop: Callable[[str, bytes], bool] = lambda sender, data: False
        self.events: dict[str, list[Event]] = {"uac": [], "uas": []}

    @property
    def now(self) -> float:
        return self.clock.now()

    def pump(self) -> None:
        """Deliver datagrams both ways until the link is quiet; collect events."""
        moved = True
        while moved:
            moved = False
            for name, ep, other, addr in (
                ("uac", self.uac, self.uas, UAC_ADDR),
                ("uas", self.uas, self.uac, UAS_ADDR),
            ):
                for out in ep.datagrams_to_send():
                    moved = True
                    self.wire.append((self.now, name, out.data.split(b"\r\n", 1)[0].decode()))
                    if not self.drop(name, out.data):
                        other.receive_datagram(out.data, addr, self.now)
                while (event := ep.next_event()) is not None:
                    self.events[name].append(event)

    def run_until(self, t: float) -> None:
        """Fire every timer of both endpoints at its exact time, up to `t`."""
        self.pump()
        while True:
            deadlines = [d for d in (self.uac.get_timer(), self.uas.get_timer()) if d is not None]
            if not deadlines or min(deadlines) > t:
                break
            self.clock.set(max(self.now, min(deadlines)))
            for ep in (self.uac, self.uas):
                timer = ep.get_timer()
                if timer is not None and timer <= self.now:
                    ep.handle_timer(self.now)
            self.pump()
        self.clock.set(max(self.now, t))

    def uas_events(self) -> list[Event]:
        """Events the UAS endpoint produced since the last pump (for hand-delivered input)."""
        out: list[Event] = []
        while (event := self.uas.next_event()) is not None:
            out.append(event)
        return out

    def take(self, side: str) -> list[Event]:
        out, self.events[side] = self.events[side], []
        return out

    def sent(self, side: str, prefix: str) -> list[float]:
        wire = self.wire
        return [round(t, 6) for t, who, line in wire if who == side and line.startswith(prefix)]


def establish(link: Link, ring: bool = True) -> tuple[int, int]:
    """INVITE → (180 →) 200 → ACK; returns (uac handle, uas handle)."""
    uac_call = link.uac.invite(TARGET, link.now, sdp=SDP, from_uri=FROM)
    link.pump()
    (invite,) = link.take("uas")
    assert isinstance(invite, InviteReceived) and invite.sdp == SDP
    if ring:
        link.uas.ring(invite.call, link.now)
        link.pump()
    link.uas.answer(invite.call, SDP, link.now)
    link.pump()
    uac_events = link.take("uac")
    expected = [ProvisionalReceived, CallAnswered] if ring else [CallAnswered]
    assert [type(e) for e in uac_events] == expected
    assert link.take("uas") == [AckReceived(invite.call, None)]
    return uac_call, invite.call


def assert_empty(link: Link) -> None:
    """Once every call is over and every timer has run, no table holds anything."""
    for endpoint in (link.uac, link.uas):
        assert set(endpoint.table_sizes().values()) == {0}, endpoint.table_sizes()
        assert endpoint.active_calls == 0 and endpoint.get_timer() is None

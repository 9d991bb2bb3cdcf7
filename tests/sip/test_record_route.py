"""Record-Route and route sets behind proxies (RFC 3261 §12.1.1, §12.1.2, §12.2.1.1, §16.12).

Each case is an INVITE as a record-routing proxy (Kamailio, an SBC) delivers it to us, with the
proxies' Record-Route fields written as real ones are: several fields, several values in one
field, parameters on the URI and on the header, IPv6, a strict router (RFC 2543, no `lr`).
The UAS must copy them verbatim and in order into its 180 and 200 (never into 100 Trying), and
send its own BYE through the route set: to the first route, with loose routing keeping the
caller's Contact as Request-URI and strict routing putting the first route there. The UAC side
(our probe phone) builds its route set from the 200's Record-Route reversed and sends ACK and
BYE through it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gateway.sip.address import Outgoing, Transport
from gateway.sip.endpoint import SipEndpoint
from gateway.sip.events import CallAnswered, InviteReceived, ReinviteReceived
from gateway.sip.headers import parse_name_addr
from gateway.sip.message import SipRequest, SipResponse
from gateway.sip.parser import parse_message
from tests.sip.helpers import SDP

PROXY = ("127.0.0.1", 5060)
CALLER_CONTACT = "sip:caller@192.0.2.7:5090;transport=udp"


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    record_route: tuple[str, ...]  # header fields, top first, as the proxies added them
    bye_uri: str  # Request-URI of our BYE
    bye_routes: tuple[str, ...]  # its Route values, in order
    bye_to: tuple[str, int]  # where it is sent


CASES = [
    Case("one loose router (Kamailio record_route())",
         ("<sip:127.0.0.1;lr>",),
         CALLER_CONTACT, ("<sip:127.0.0.1;lr>",), ("127.0.0.1", 5060)),
    Case("two fields, ports and unknown params kept",
         ("<sip:lb.example.net:5070;lr;ftag=ab12;did=7f.1>",
          '"edge" <sip:sbc.example.com;lr;transport=udp>;x-hdr-param=1'),
         CALLER_CONTACT,
         ("<sip:lb.example.net:5070;lr;ftag=ab12;did=7f.1>",
          '"edge" <sip:sbc.example.com;lr;transport=udp>;x-hdr-param=1'),
         ("lb.example.net", 5070)),
    Case("two values in one field (comma list)",
         ("<sip:10.0.0.1:5080;lr>, <sip:10.0.0.2;lr>",),
         CALLER_CONTACT, ("<sip:10.0.0.1:5080;lr>", "<sip:10.0.0.2;lr>"), ("10.0.0.1", 5080)),
    Case("IPv6 loose router with maddr-free reference",
         ("<sip:[2001:db8::5]:5062;lr>",),
         CALLER_CONTACT, ("<sip:[2001:db8::5]:5062;lr>",), ("2001:db8::5", 5062)),
    Case("strict router first (RFC 2543): it becomes the Request-URI",
         ("<sip:old-proxy.example.com:5064>", "<sip:10.0.0.9;lr>"),
         "sip:old-proxy.example.com:5064",
         ("<sip:10.0.0.9;lr>", f"<{CALLER_CONTACT}>"), ("old-proxy.example.com", 5064)),
]


def invite(record_route: tuple[str, ...]) -> bytes:
    rr = "".join(f"Record-Route: {value}\r\n" for value in record_route)
    return (
        "INVITE sip:800@127.0.0.1:5072 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-proxy-1\r\n"
        "Via: SIP/2.0/UDP 192.0.2.7:5090;branch=z9hG4bK-caller-1;received=192.0.2.7\r\n"
        f"{rr}"
        "From: <sip:+4930111@192.0.2.7>;tag=caller1\r\n"
        "To: <sip:800@example.net>\r\n"
        "Call-ID: rr-1@192.0.2.7\r\nCSeq: 1 INVITE\r\nMax-Forwards: 69\r\n"
        f"Contact: <{CALLER_CONTACT}>\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(SDP)}\r\n\r\n"
    ).encode() + SDP


def ack(to_tag: str | None) -> bytes:
    """The caller's ACK for our 200 as the proxy relays it (loose routing: our Contact)."""
    return (
        "ACK sip:800@127.0.0.1:5072 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-proxy-2\r\n"
        "From: <sip:+4930111@192.0.2.7>;tag=caller1\r\n"
        f"To: <sip:800@example.net>;tag={to_tag}\r\n"
        "Call-ID: rr-1@192.0.2.7\r\nCSeq: 1 ACK\r\nMax-Forwards: 69\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def sent(ep: SipEndpoint) -> list[tuple[SipRequest | SipResponse, Outgoing]]:
    out: list[tuple[SipRequest | SipResponse, Outgoing]] = []
    for item in ep.datagrams_to_send():
        message = parse_message(item.data)
        assert isinstance(message, SipRequest | SipResponse)
        out.append((message, item))
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_uas_copies_record_route_and_routes_its_bye(case: Case) -> None:
    ep = SipEndpoint()
    ep.bind(Transport.UDP, "127.0.0.1", 5072)
    ep.receive_datagram(invite(case.record_route), PROXY, 0.0)
    event = ep.next_event()
    assert isinstance(event, InviteReceived)
    ep.ring(event.call, 0.0)
    ep.answer(event.call, SDP, 0.1)
    responses = [(m, out) for m, out in sent(ep) if isinstance(m, SipResponse)]
    assert [m.status for m, _ in responses] == [100, 180, 200]
    for message, out in responses:
        # Along the Via path: back to the proxy that sent the INVITE.
        assert out.addr == PROXY
        expected = list(case.record_route) if message.status != 100 else []
        assert message.headers.fields("Record-Route") == expected, message.status

    ep.receive_datagram(ack(responses[-1][0].to.tag), PROXY, 0.2)
    ep.hang_up(event.call, 1.0)
    (bye, out), = [(m, o) for m, o in sent(ep) if isinstance(m, SipRequest)]
    assert bye.method == "BYE"
    assert str(bye.uri) == case.bye_uri
    assert tuple(bye.headers.get_all("Route")) == case.bye_routes
    assert out.addr == case.bye_to


def test_reinvite_answer_keeps_the_dialog_route_set() -> None:
    """A re-INVITE's 200 copies what the re-INVITE carried; our next request still uses the
    route set fixed by the first INVITE (§12.2: target refreshes do not change it)."""
    ep = SipEndpoint()
    ep.bind(Transport.UDP, "127.0.0.1", 5072)
    ep.receive_datagram(invite(("<sip:127.0.0.1;lr>",)), PROXY, 0.0)
    event = ep.next_event()
    assert isinstance(event, InviteReceived)
    ep.answer(event.call, SDP, 0.0)
    (ok, _), = [(m, o) for m, o in sent(ep) if isinstance(m, SipResponse) and m.status == 200]
    ep.receive_datagram(ack(ok.to.tag), PROXY, 0.05)
    reinvite = (
        "INVITE sip:800@127.0.0.1:5072 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-proxy-3\r\n"
        "Record-Route: <sip:127.0.0.1;lr;mid=2>\r\n"
        "From: <sip:+4930111@192.0.2.7>;tag=caller1\r\n"
        f"To: <sip:800@example.net>;tag={ok.to.tag}\r\n"
        "Call-ID: rr-1@192.0.2.7\r\nCSeq: 2 INVITE\r\nMax-Forwards: 69\r\n"
        f"Contact: <{CALLER_CONTACT}>\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(SDP)}\r\n\r\n"
    ).encode() + SDP
    ep.receive_datagram(reinvite, PROXY, 1.0)
    events = list(iter(ep.next_event, None))
    (refresh,) = [e for e in events if isinstance(e, ReinviteReceived)]
    ep.answer_offer(refresh.call, SDP, 1.0)
    (ok2, _), = [(m, o) for m, o in sent(ep) if isinstance(m, SipResponse) and m.status == 200]
    assert ok2.headers.fields("Record-Route") == ["<sip:127.0.0.1;lr;mid=2>"]
    ep.hang_up(event.call, 2.0)
    (bye, out), = [(m, o) for m, o in sent(ep) if isinstance(m, SipRequest) and m.method == "BYE"]
    assert bye.headers.get_all("Route") == ["<sip:127.0.0.1;lr>"] and out.addr == PROXY


def test_uac_route_set_from_the_200_reversed() -> None:
    """Our own INVITE (the probe phone): the 200's Record-Route, reversed, routes ACK and BYE."""
    uac = SipEndpoint()
    uac.bind(Transport.UDP, "127.0.0.1", 5090)
    handle = uac.invite("sip:800@127.0.0.1:5060", 0.0, sdp=SDP, from_uri="<sip:probe@127.0.0.1>")
    (inv, _), = sent(uac)
    assert isinstance(inv, SipRequest)
    # The 200 as it comes back through two proxies: the one next to the callee on top.
    rr = ("<sip:10.0.0.2;lr>", "<sip:127.0.0.1:5060;lr>")
    head = "".join(f"Via: {v}\r\n" for v in inv.headers.fields("Via"))
    ok = (
        "SIP/2.0 200 OK\r\n" + head
        + "".join(f"Record-Route: {v}\r\n" for v in rr)
        + f"From: {inv.headers.get('From')}\r\nTo: {inv.headers.get('To')};tag=uas1\r\n"
        f"Call-ID: {inv.call_id}\r\nCSeq: 1 INVITE\r\n"
        "Contact: <sip:800@10.0.0.3:5072>\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(SDP)}\r\n\r\n"
    ).encode() + SDP
    uac.receive_datagram(ok, ("127.0.0.1", 5060), 0.1)
    assert any(isinstance(e, CallAnswered) for e in iter(uac.next_event, None))
    (ack, ack_out), = sent(uac)
    assert isinstance(ack, SipRequest) and ack.method == "ACK"
    assert ack.headers.get_all("Route") == list(reversed(rr))
    assert str(ack.uri) == "sip:800@10.0.0.3:5072" and ack_out.addr == ("127.0.0.1", 5060)
    uac.hang_up(handle, 1.0)
    (bye, bye_out), = sent(uac)
    assert isinstance(bye, SipRequest) and bye.method == "BYE"
    assert bye.headers.get_all("Route") == list(reversed(rr))
    assert bye_out.addr == ("127.0.0.1", 5060)
    assert parse_name_addr(bye.headers.get_all("Route")[0]).uri.host == "127.0.0.1"  # type: ignore[union-attr]

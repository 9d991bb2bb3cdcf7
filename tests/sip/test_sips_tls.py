"""SIP over TLS in the sans-IO core: a TLS stream's requests are answered on that connection with
`transport=tls` in our Contact; a dialog set up with a SIPS URI over TLS gets a SIPS Contact
(RFC 3261 §12.1.1, §26.2.2); a SIPS target is reached over TLS."""

from __future__ import annotations

import pytest

from gateway.sip.address import Peer, Transport
from gateway.sip.dialog import hop_for_uri
from gateway.sip.endpoint import SipEndpoint
from gateway.sip.events import InviteReceived
from gateway.sip.message import SipResponse
from gateway.sip.parser import parse_message
from gateway.sip.uri import parse_uri
from tests.sip.test_endpoint_uas import raw

SRC = ("127.0.0.1", 40001)


def answered_contact(ep: SipEndpoint, data: bytes, transport: Transport) -> tuple[str, Transport]:
    ep.receive_stream(data, 7, SRC, 0.0, transport)
    ep.datagrams_to_send()  # 100 Trying
    event = ep.next_event()
    assert isinstance(event, InviteReceived)
    ep.answer(event.call, b"v=0\r\n", 0.01)
    (out,) = ep.datagrams_to_send()
    ok = parse_message(out.data)
    assert isinstance(ok, SipResponse) and ok.status == 200
    assert out.conn_id == 7
    return ok.headers.get("Contact") or "", out.transport


@pytest.mark.parametrize(("scheme", "transport", "contact"), [
    ("sip", Transport.TLS, "<sip:gateway@127.0.0.1:5061;transport=tls>"),
    ("sips", Transport.TLS, "<sips:gateway@127.0.0.1:5061>"),
    ("sips", Transport.TCP, "<sip:gateway@127.0.0.1:5060;transport=tcp>"),  # not really TLS
])
def test_contact_follows_transport_and_sips(scheme: str, transport: Transport,
                                           contact: str) -> None:
    ep = SipEndpoint()
    ep.bind(Transport.TCP, "127.0.0.1", 5060)
    ep.bind(Transport.TLS, "127.0.0.1", 5061)
    via = f"SIP/2.0/{transport.value} 127.0.0.1:5090;branch=z9hG4bK-s"
    data = raw("INVITE", via=via, branch="z9hG4bK-s", body="v=0\r\n")
    data = data.replace(b"INVITE sip:", f"INVITE {scheme}:".encode(), 1)
    got, sent_on = answered_contact(ep, data, transport)
    assert got == contact and sent_on is transport


def test_sips_record_route_makes_a_sips_contact() -> None:
    ep = SipEndpoint()
    ep.bind(Transport.TLS, "127.0.0.1", 5061)
    data = raw("INVITE", via="SIP/2.0/TLS 10.0.0.9:5061;branch=z9hG4bK-r", branch="z9hG4bK-r",
               extra="Record-Route: <sips:proxy.example;lr>\r\n", body="v=0\r\n")
    got, _ = answered_contact(ep, data, Transport.TLS)
    assert got == "<sips:gateway@127.0.0.1:5061>"


@pytest.mark.parametrize(("uri", "expected"), [
    ("sips:pbx.example", ("pbx.example", 5061, Transport.TLS)),
    ("sips:pbx.example:5071;transport=tcp", ("pbx.example", 5071, Transport.TLS)),
    ("sip:pbx.example;transport=tls", ("pbx.example", 5061, Transport.TLS)),
    ("sip:pbx.example", ("pbx.example", 5060, Transport.UDP)),
])
def test_hop_for_sips_and_tls_targets(uri: str, expected: tuple[str, int, Transport]) -> None:
    hop = hop_for_uri(parse_uri(uri), Peer("127.0.0.1", 5060, Transport.UDP))
    assert (hop.host, hop.port, hop.transport) == expected


def test_response_over_tls_without_sent_by_port_defaults_to_5061() -> None:
    from gateway.sip.headers import Via
    from gateway.sip.routing import response_peer

    via = Via("TLS", "pbx.example", None, ())
    peer = response_peer(via, Peer("192.0.2.7", 40123, Transport.TLS, 3))
    assert (peer.host, peer.port, peer.conn_id) == ("192.0.2.7", 5061, 3)

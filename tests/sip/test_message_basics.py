"""Parser and serialiser basics; the RFC 4475 torture corpus lives in test_torture.py."""

from collections.abc import Callable

import pytest

from gateway.sip.errors import ParseError
from gateway.sip.headers import parse_name_addr
from gateway.sip.message import SipResponse, make_response
from gateway.sip.parser import Limits, StreamParser, parse_message
from gateway.sip.uri import SipUri, parse_uri

INVITE = (
    b"INVITE sip:+4930123@127.0.0.1:5080;transport=udp SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1;rport\r\n"
    b"Via: SIP/2.0/TCP [2001:db8::1]:5061;branch=z9hG4bK-2, SIP/2.0/UDP x.example.com\r\n"
    b'f: "Alice \\"A\\"" <sip:alice@example.com>;tag=abc\r\n'
    b"t: sip:+4930123@example.com\r\n"
    b"i: call-1@host\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
    b"m: <sip:alice@10.0.0.1:5060;transport=udp>;expires=3\r\n"
    b"Subject: hi\r\n  there\r\n"
    b"c: application/sdp\r\nl: 4\r\n\r\nv=0\r\nJUNK"
)


def test_compact_forms_multi_via_folding_and_content_length() -> None:
    msg = parse_message(INVITE)
    assert [v.host for v in msg.vias] == ["10.0.0.1", "[2001:db8::1]", "x.example.com"]
    assert msg.top_via.branch == "z9hG4bK-1" and msg.top_via.param("rport") == ""
    assert msg.from_.display == 'Alice "A"' and msg.from_.tag == "abc"
    assert msg.to.tag is None
    assert msg.cseq.number == 1 and msg.call_id == "call-1@host"
    assert msg.headers.get("subject") == "hi there"
    assert msg.body == b"v=0\r"  # datagram octets past Content-Length are discarded


def test_serialisation_round_trips() -> None:
    once = parse_message(INVITE).to_bytes()
    assert parse_message(once).to_bytes() == once


def test_stream_parser_partial_reads_and_pipelining() -> None:
    data = b"\r\n\r\n" + parse_message(INVITE).to_bytes() * 3
    parser = StreamParser()
    got = []
    for i in range(0, len(data), 7):
        got += parser.feed(data[i : i + 7])
    assert len(got) == 3 and all(m.body == b"v=0\r" for m in got)
    assert parser.buffered == 0


def test_stream_needs_content_length() -> None:
    raw = INVITE.replace(b"l: 4\r\n", b"")
    with pytest.raises(ParseError, match="Content-Length is mandatory"):
        StreamParser().feed(raw)


@pytest.mark.parametrize(
    ("mutation", "reason"),
    [
        ((b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), "does not match"),
        ((b"i: call-1@host\r\n", b""), "missing Call-ID"),
        ((b"l: 4", b"l: 40"), "Content-Length 40"),
        ((b"SIP/2.0\r\nv:", b"SIP/7.0\r\nv:"), "unsupported SIP version"),
        ((b"CSeq: 1 INVITE", b"CSeq: 99999999999 INVITE"), "out of range"),
        ((b"Max-Forwards: 70", b"Max-Forwards: 70\x00"), "NUL"),
    ],
)
def test_bad_messages_say_what_is_wrong(mutation: tuple[bytes, bytes], reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        parse_message(INVITE.replace(*mutation))


def test_size_limits() -> None:
    many = INVITE.replace(b"Max-Forwards: 70\r\n", b"Via: SIP/2.0/UDP h;branch=z9hG4bKx\r\n" * 300)
    with pytest.raises(ParseError) as info:
        parse_message(many, Limits(max_message_bytes=1 << 20))
    assert info.value.status == 413


def test_uri_and_name_addr() -> None:
    uri = parse_uri("sips:user%20x:pw@[::1]:5061;transport=tcp;lr?Subject=x&Priority=y")
    assert isinstance(uri, SipUri)
    assert uri.host == "[::1]" and uri.port == 5061 and uri.has_param("lr")
    assert uri.user_unescaped == "user x" and uri.headers == (("Subject", "x"), ("Priority", "y"))
    assert parse_uri(str(uri)) == uri
    na = parse_name_addr("Bob <sip:bob@h;transport=udp>;tag=9 ; expires = 60")
    assert na.display == "Bob" and na.tag == "9" and na.param("expires") == "60"
    addr_spec = parse_name_addr("sip:bob@h;tag=9")  # params belong to the header here
    assert addr_spec.tag == "9" and isinstance(addr_spec.uri, SipUri) and not addr_spec.uri.params
    assert str(parse_uri("tel:+1-201-555-0123")) == "tel:+1-201-555-0123"


def test_make_response_copies_dialog_headers_and_adds_to_tag() -> None:
    req = parse_message(INVITE)
    resp = make_response(req, 180, to_tag="xyz")
    assert resp.reason == "Ringing" and resp.to.tag == "xyz"
    assert resp.headers.fields("Via") == req.headers.fields("Via")
    assert parse_message(resp.to_bytes()).cseq.method == "INVITE"


@pytest.mark.parametrize(
    ("edit", "header", "expected"),
    [
        (lambda r: r.headers.add("Subject", "hi\r\nVia: SIP/2.0/UDP evil"), "Subject",
         "hi  Via: SIP/2.0/UDP evil"),
        (lambda r: r.headers.add("X-Note", "bare\nline feed"), "X-Note", "bare line feed"),
        (lambda r: setattr(r, "reason", "OK\rInjected: yes"), "Injected", None),
    ],
)
def test_serialiser_neutralises_line_breaks_that_would_inject_headers(
    edit: Callable[[SipResponse], None], header: str, expected: str | None
) -> None:
    response = make_response(parse_message(INVITE), 200, to_tag="t")
    edit(response)
    wire = response.to_bytes()
    again = parse_message(wire)
    assert isinstance(again, SipResponse)
    assert again.headers.get(header) == expected
    assert again.headers.fields("Via") == response.headers.fields("Via")
    assert wire.count(b"\r\n\r\n") == 1

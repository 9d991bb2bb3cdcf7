"""RFC 4475 torture corpus (our own messages), valid half: tests/data/sip/valid.

Every file has a row here with the parsed values that make the case tricky; each also
round-trips and frames on a stream. Categories follow RFC 4475 §3.1.1, §3.2–§3.4 and RFC 5118
(see tests/data/sip/README.md); the invalid half is in test_torture_invalid.py.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import pytest

from gateway.sip.message import Message, SipRequest, SipResponse
from gateway.sip.parser import FramingError, Limits, StreamParser, parse_message
from gateway.sip.uri import SipUri
from tests.sip.fuzzing import CORPUS_DIR, header_values

VALID_DIR = CORPUS_DIR / "valid"
INVALID_DIR = CORPUS_DIR / "invalid"


def _req(m: Message) -> SipRequest:
    assert isinstance(m, SipRequest)
    return m


def _resp(m: Message) -> SipResponse:
    assert isinstance(m, SipResponse)
    return m


def _ruri(m: Message) -> SipUri:
    uri = _req(m).uri
    assert isinstance(uri, SipUri)
    return uri


def _addr(na: object) -> tuple[object, ...]:
    from gateway.sip.headers import NameAddr

    assert isinstance(na, NameAddr)
    return (na.display, str(na.uri), na.params)


# Views of a message by name, so the table below reads as data.
VIEWS: dict[str, Callable[[Message], object]] = {
    "method": lambda m: _req(m).method,
    "uri": lambda m: str(_req(m).uri),
    "ruri.user": lambda m: _ruri(m).user,
    "ruri.user_unescaped": lambda m: _ruri(m).user_unescaped,
    "ruri.password": lambda m: _ruri(m).password,
    "ruri.host": lambda m: _ruri(m).host,
    "ruri.port": lambda m: _ruri(m).port,
    "ruri.params": lambda m: _ruri(m).params,
    "ruri.scheme": lambda m: type(_req(m).uri).__name__ + ":" + _req(m).uri.scheme,  # type: ignore[union-attr]
    "status": lambda m: _resp(m).status,
    "reason": lambda m: _resp(m).reason,
    "vias": lambda m: [(v.transport, v.host, v.port, v.branch) for v in m.vias],
    "via_count": lambda m: len(m.vias),
    "top_via.params": lambda m: m.top_via.params,
    "from": lambda m: _addr(m.from_),
    "to": lambda m: _addr(m.to),
    "from.tag": lambda m: m.from_.tag,
    "to.tag": lambda m: m.to.tag,
    "from.user_unescaped": lambda m: getattr(m.from_.uri, "user_unescaped", None),
    "to.user_unescaped": lambda m: getattr(m.to.uri, "user_unescaped", None),
    "cseq": lambda m: (m.cseq.number, m.cseq.method),
    "call_id": lambda m: m.call_id,
    "contacts": lambda m: [_addr(c) for c in m.contacts],
    "contact_uris": lambda m: [(c.sip_uri.user, c.sip_uri.params, c.sip_uri.headers)
                               for c in m.contacts if c.sip_uri is not None],
    "wildcard": lambda m: [c.wildcard for c in m.contacts],
    "content_type": lambda m: m.content_type,
    "body": lambda m: m.body,
    "body_len": lambda m: len(m.body),
    "body_has_every_octet": lambda m: bytes(range(256)) in m.body,
    "body_tail": lambda m: m.body[-22:],
    "header_names": lambda m: [name for name, _ in m.headers],
}


def _view(m: Message, key: str) -> object:
    if key.startswith("h:"):  # the first value of a header, as written (folding joined)
        return m.headers.get(key[2:])
    if key.startswith("all:"):  # every element of a (list) header
        return m.headers.get_all(key[4:])
    return VIEWS[key](m)


SDP_LEN = 135
V6 = "[2001:db8::9:1]"

VALID: dict[str, dict[str, object]] = {
    # §3.1.1.1 short tortuous INVITE: LWS and folding everywhere, odd case, compact forms.
    "wsinv-tortuous-whitespace": {
        "method": "INVITE",
        "ruri.params": (("unknownparam", None),),
        "to": (None, "sip:+4930555000@gw.example.net", (("tag", "t-9f2"),)),
        "from": ('Carrier "Main" Trunk', "sip:trunk@carrier.example.com", (("tag", "f-77a"),)),
        "h:Max-Forwards": "0069",
        "cseq": (9, "INVITE"),
        "h:Subject": "",
        "h:NewFangledHeader": "first part of a value continued on a folded line",
        "h:UnknownHeaderWithOddValue": ";;,,;;,;",
        "vias": [("TCP", "edge.example.net", None, "z9hG4bK-ws1"),
                 ("UDP", "198.51.100.7", None, "z9hG4bK-ws2")],
        "contacts": [('Quoted "" name', "sip:trunk@198.51.100.7",
                      (("newparam", "newvalue"), ("secondparam", None), ("q", "0.33")))],
        "all:Route": ["<sip:edge.example.net;lr;unknownwith=value;unknown-no-value>"],
        "content_type": "application/sdp",
        "body_len": SDP_LEN,
    },
    "compact-forms-all": {
        "header_names": ["Via", "From", "To", "Call-ID", "CSeq", "Contact", "Supported",
                         "Subject", "Content-Encoding", "Content-Type", "Event", "Allow-Events",
                         "Session-Expires", "Refer-To", "Referred-By", "Content-Length"],
        "all:Supported": ["timer", "100rel"],
        "all:Allow-Events": ["dialog", "presence"],
        "h:Session-Expires": "1800;refresher=uac",
        "body": b"hello",
    },
    # §3.1.1.2 wide range of valid characters, incl. NUL/BEL/DEL as quoted-pairs.
    "valid-chars-tokens": {
        "method": "!odd-Method0123456789_*+`.%here'~",
        "ruri.user": "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*",
        "ruri.password": "&it+has=1,weird!*pw$wo~d_too.(x)",
        "vias": [("UDP", "198.51.100.9", None, "z9hG4bK-.!%66*_+`'~")],
        "to": ("BEL:\x07 NUL:\x00 DEL:\x7f",
               "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@gw.example.net", ()),
        "from": ("token1~` token2'+_ token3*%!.-", "sip:mundane@example.com",
                 (("fromParam''~+*_!.-%", "работающий"), ("tag", "_token~1'+`*%!-."))),
        "call_id": "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{",
        "cseq": (139122385, "!odd-Method0123456789_*+`.%here'~"),
        "h:extensionHeader-!.%*+_`'~": "\ufeffbig-value",
    },
    # §3.1.1.3 valid escapes: kept as written, decoded once on request.
    "escapes-in-uri": {
        "ruri.user": "sips%3Auser%40example.com",
        "ruri.user_unescaped": "sips:user@example.com",
        "ruri.host": "gw.example.net",
        "to.user_unescaped": "sips:user@example.com",
        "from.user_unescaped": "I have spaces",
        "contact_uris": [("cal%6Cer", (("%6C%72", None), ("n%61me", "v%61lue%25%34%31")), ())],
    },
    # §3.1.1.4 escaped NULs.
    "escaped-null-in-uri": {
        "to.user_unescaped": "null-\x00-null",
        "from.user_unescaped": "null-\x00-null",
        "contact_uris": [("%00", (), ()), ("%00%00", (), ())],
    },
    # §3.1.1.5 '%' that is not an escape: the method is not REGISTER.
    "percent-not-escape": {
        "method": "RE%47IST%45R",
        "cseq": (29, "RE%47IST%45R"),
        "to": ("%Z%45", "sip:resource@example.com", ()),
        "h:X-Percent": "100% sure, %%",
    },
    # §3.1.1.6 no LWS between display name and '<'.
    "no-lws-display-name": {
        "from": ("caller", "sip:caller@example.com", (("tag", "f-lws"),)),
        "contacts": [("Mr. Bob Smith", "sip:bob@198.51.100.13", ())],
    },
    # §3.1.1.7 long values.
    "long-values": {
        "to.tag": "t" + "0123456789abcdef" * 60,
        "from.tag": "t" + "0123456789abcdef" * 60 + "-from",
        "call_id": "longreq." + "callid-" * 400 + "@198.51.100.14",
        "vias": [("TCP", "198.51.100.14", None, "z9hG4bK-" + "long" * 200),
                 ("UDP", "198.51.100.15", None, "z9hG4bK-" + "long" * 200 + "-2")],
        "ruri.params": (("unknownparam", "v" * 900),),
        "h:X-Unknown-Long-Header": "x" * 6000,
        "body_len": SDP_LEN,
    },
    # §3.1.1.8 extra trailing octets in a datagram: only the first message counts.
    "trailing-octets-second-message": {
        "method": "REGISTER", "cseq": (8, "REGISTER"), "body": b"",
        "call_id": "dblreq.0ha0isndaksdj99sdfafnl3lk233412",
    },
    "content-length-shorter-than-datagram": {"body": b"hello", "content_type": "text/plain"},
    # §3.1.1.9 semicolon-separated parameters in the URI user part.
    "semicolon-in-user-part": {
        "ruri.user": "user;par=u%40example.net",
        "ruri.host": "example.com",
        "ruri.params": (),
        "all:Accept": ["application/sdp", "application/pkcs7-mime", "multipart/mixed",
                       "multipart/signed", "message/sip", "message/sipfrag"],
    },
    # §3.1.1.10 varied and unknown transports (names are case-insensitive).
    "varied-transports": {
        "vias": [("UDP", "t1.example.com", None, "z9hG4bK-tr1"),
                 ("SCTP", "t2.example.com", None, "z9hG4bK-tr2"),
                 ("TLS", "t3.example.com", None, "z9hG4bK-tr3"),
                 ("UNKNOWN", "t4.example.com", None, "z9hG4bK-tr4"),
                 ("TCP", "t5.example.com", None, "z9hG4bK-tr5"),
                 ("WSS", "t6.example.com", None, "z9hG4bK-tr6")],
    },
    # §3.1.1.11 multipart body with every octet value, kept byte-exact.
    "multipart-binary-body": {
        "content_type": "multipart/mixed",
        "h:Content-Type": "multipart/mixed;boundary=7a9cbec.3f6b7a",
        "h:Content-Length": "561",
        "body_len": 561,
        "body_has_every_octet": True,
        "body_tail": b"\r\n--7a9cbec.3f6b7a--\r\n",
    },
    # §3.1.1.12 unusual (UTF-8, punctuation) reason phrase.
    "unusual-reason-phrase": {
        "status": 200,
        "reason": "= 2**3 * 5**2 но сто девяносто девять - простое; ¿sí?",
        "top_via.params": (("branch", "z9hG4bK-unr1"), ("received", "198.51.100.20")),
    },
    # §3.1.1.13 empty reason phrase; and (liberal) no SP before it.
    "empty-reason-phrase": {"status": 100, "reason": ""},
    "status-line-without-reason-sp": {"status": 180, "reason": "", "to.tag": "t-nosp"},
    # §3.3.1, §3.3.2 unknown and novel schemes parse (the core answers 416).
    "unknown-scheme-request-uri": {
        "uri": "nobodyknowsthisscheme:totallyopaquecontent",
        "ruri.scheme": "AbsoluteUri:nobodyknowsthisscheme",
    },
    "novel-scheme-and-to-scheme": {
        "uri": "soap.beep+x://198.51.100.25:3002",
        "to": (None, "isbn:2983792873", ()),
        "from": (None, "http://www.example.com", (("tag", "3234233"),)),
    },
    # Unknown methods; methods are case-sensitive, so "invite" is not INVITE (§7.1).
    "unknown-method": {"method": "NEWMETHOD", "cseq": (8, "NEWMETHOD"), "body_len": SDP_LEN},
    "lowercase-method-is-a-different-method": {"method": "invite", "cseq": (8, "invite")},
    # Zero-length body, and no Content-Length on a datagram (the body runs to its end).
    "zero-length-body": {"body": b"", "content_type": "application/sdp"},
    "datagram-without-content-length": {
        "body": b"Signal=5\r\nDuration=160\r\n", "h:Content-Length": None,
    },
    # RFC 5118 IPv6: references, port ambiguity, received with and without brackets, mapped v4.
    "ipv6-references": {
        "ruri.host": "[2001:db8::10]", "ruri.port": 5070,
        "vias": [("UDP", V6, 5060, "z9hG4bK-v6a"), ("UDP", "[2001:db8::9:2]", None, "z9hG4bK-v6b")],
        "top_via.params": (("branch", "z9hG4bK-v6a"), ("received", "[2001:db8::9:255]")),
        "all:Route": ["<sip:[2001:db8::20];lr>"],
        "contacts": [("Caller", "sip:caller@[2001:db8::9:1]:5060;transport=udp", ())],
    },
    "ipv6-port-ambiguous": {"ruri.host": "[2001:db8::10:5070]", "ruri.port": None},
    "ipv4-mapped-ipv6": {
        "ruri.host": "[::ffff:192.0.2.10]",
        "vias": [("UDP", "[::ffff:192.0.2.12]", 5060, "z9hG4bK-v4map")],
    },
    # Several Vias in separate fields and comma lists, mixed with the compact form: order kept.
    "multiple-vias-order": {
        "vias": [("UDP", "p1.example.net", None, "z9hG4bK-h1"),
                 ("UDP", "p2.example.net", 5062, "z9hG4bK-h2"),
                 ("TCP", "p3.example.net", None, "z9hG4bK-h3"),
                 ("UDP", "p4.example.net", None, "z9hG4bK-h4"),
                 ("UDP", "203.0.113.5", None, "z9hG4bK-h5")],
    },
    "seventy-vias": {"via_count": 70, "h:Max-Forwards": "0"},
    # Tabs, spaces before colons and around '/', LWS inside CSeq and sent-by.
    "unusual-whitespace": {
        "method": "ACK",
        "vias": [("UDP", "198.51.100.31", 5070, "z9hG4bK-tab")],
        "from.tag": "f-tab",
        "cseq": (12, "ACK"),
        "h:Max-Forwards": "70",
        "content_type": "application/sdp",
    },
    "lowercase-sip-version": {"method": "OPTIONS", "vias": [("UDP", "198.51.100.32", None,
                                                             "z9hG4bK-lcver")]},
    "leading-crlfs": {"method": "OPTIONS", "cseq": (1, "OPTIONS")},
    # §3.3.9 Max-Forwards 0; §3.3.5-6, §3.3.12 unknown Require / Content-Type / Accept.
    "max-forwards-zero": {"h:Max-Forwards": "0"},
    "unknown-require-and-content-type": {
        "all:Require": ["nothingSupportsThis", "nothingSupportsThisEither"],
        "all:Proxy-Require": ["noProxiesSupportThis"],
        "content_type": "application/unknownformat",
    },
    # §3.3.8 unknown auth scheme: authentication headers are never split at commas.
    "unknown-authorization-scheme": {
        "all:Authorization": ['NoOneKnowsThisScheme opaque-data=here, more="a,b", realm=x'],
        "all:WWW-Authenticate": [
            'Digest realm="gw, example", nonce="abc,def", qop="auth,auth-int"'
        ],
    },
    # §3.3.13/14 Contact params: addr-spec → header params; inside <> → URI params.
    "contact-params-addr-spec-vs-name-addr": {
        "contacts": [
            (None, "sip:+19725552222@gw1.example.net", (("unknownparam", None), ("expires", "60"))),
            (None, "sip:+19725552222@gw2.example.net;unknownparam", (("expires", "120"),)),
            ("Two", "sip:two@gw3.example.net", (("q", "0.5"),)),
        ],
    },
    "contact-wildcard": {"wildcard": [True], "h:Expires": "0"},
    # §3.3.15 escaped headers in a Contact URI are URI headers.
    "uri-headers-in-contact": {
        "contact_uris": [("user", (), (("Route", "%3Csip:sip.example.com%3E"), ("Subject", "hi")))],
    },
    # §3.4.1 RFC 2543 style; §3.2.2 branch that is only the magic cookie; §3.3.11 broadcast.
    "rfc2543-style-invite": {
        "vias": [("UDP", "198.51.100.40", None, None)],
        "from.tag": None, "to.tag": None, "h:Max-Forwards": None,
    },
    "branch-only-magic-cookie-broadcast": {
        "top_via.params": (("branch", "z9hG4bK"), ("received", "255.255.255.255"),
                           ("maddr", "224.0.1.75"), ("ttl", "1")),
    },
    # Commas and semicolons inside quoted strings do not split list values or parameters.
    "quoted-strings-in-lists": {
        "from": ('Back\\slash; and "quotes", too', "sip:a@example.com", (("tag", "f-quot"),)),
        "contacts": [("Smith, John", "sip:john@example.com", (("note", "a,b;c"),)),
                     ("<not a uri>", "sip:x@example.com", ())],
    },
    # Issue 7: deep escapes decode exactly once.
    "deep-uri-escapes": {
        "ruri.user_unescaped": "%25252541" + "A" * 600,
        "from.user_unescaped": "%25%25",
    },
    "cseq-largest-legal": {"cseq": (2**31 - 1, "BYE")},
    "binary-body-nul-bad-utf8": {
        "body": b"\x00\x00\xff\xfe\xc3\x28\r\n\r\n\x00SIP/2.0 200 OK\r\n\xed\xa0\x80",
    },
    "utf8-text": {
        "from": ("Jürgen Müller 日本", "sip:juergen@example.com", (("tag", "f-utf8"),)),
        "h:Subject": "Grüße — über alles",
    },
    "response-200-record-route": {
        "status": 200,
        "all:Record-Route": ["<sip:p2.example.net;lr>", "<sip:p1.example.net;lr;transport=tcp>",
                             "<sip:[2001:db8::1];lr>"],
        "to.tag": "t-ok",
        "top_via.params": (("branch", "z9hG4bK-ok1"), ("received", "127.0.0.1"), ("rport", "5060")),
        "body_len": SDP_LEN,
    },
    # §3.1.2.12 non-GMT Date: the RFC lets an element that does not use Date ignore it; we
    # never read Date, so rejecting a call over it would only hurt. Kept as written.
    "date-non-gmt-ignored": {"h:Date": "Fri, 01 Jan 2010 16:00:00 EST"},
    "tel-and-sips-uris": {
        "ruri.scheme": "SipUri:sips",
        "ruri.params": (("transport", "tcp"),),
        "from": (None, "tel:+1-201-555-0123;phone-context=example.com", (("tag", "f-tel"),)),
        "all:P-Asserted-Identity": ["<tel:+12015550123>",
                                    "<sip:+12015550123@carrier.example.com;user=phone>"],
    },
}

def _files(directory: pathlib.Path) -> set[str]:
    return {p.stem for p in directory.glob("*.sip")}


def test_every_valid_file_has_a_row_and_the_corpus_is_big_enough() -> None:
    assert _files(VALID_DIR) == set(VALID)
    assert len(VALID) + len(_files(INVALID_DIR)) >= 50


def test_corpus_files_use_crlf_line_ends() -> None:
    for path in [*VALID_DIR.glob("*.sip"), *INVALID_DIR.glob("*.sip")]:
        head = path.read_bytes().split(b"\r\n\r\n", 1)[0]
        assert b"\n" not in head.replace(b"\r\n", b""), path.name


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_message_parses_to_the_tricky_values(name: str) -> None:
    message = parse_message((VALID_DIR / f"{name}.sip").read_bytes())
    for key, expected in VALID[name].items():
        assert _view(message, key) == expected, key


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_message_round_trips(name: str) -> None:
    first = parse_message((VALID_DIR / f"{name}.sip").read_bytes())
    wire = first.to_bytes()
    second = parse_message(wire)
    assert header_values(second) == header_values(first)
    assert second.body == first.body
    assert second.headers.get("Content-Length") == str(len(first.body))
    assert second.to_bytes() == wire
    for key in VALID[name]:  # the typed views agree as well
        if key not in ("header_names", "h:Content-Length", "h:Max-Forwards", "h:Expires"):
            assert _view(second, key) == _view(first, key), key


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_message_through_stream_parser_byte_by_byte(name: str) -> None:
    wire = parse_message((VALID_DIR / f"{name}.sip").read_bytes()).to_bytes()
    parser = StreamParser()
    got: list[Message] = []
    for i in range(len(wire)):
        got += parser.feed(wire[i : i + 1])
    assert [m.to_bytes() for m in got] == [wire]
    assert parser.buffered == 0 and not parser.in_message


def test_stream_keeps_messages_before_broken_framing() -> None:
    good = parse_message((VALID_DIR / "leading-crlfs.sip").read_bytes()).to_bytes()
    bad = (INVALID_DIR / "cseq-method-mismatch.sip").read_bytes()
    parser = StreamParser()
    with pytest.raises(FramingError) as info:
        parser.feed(good + good + bad)
    assert [m.to_bytes() for m in info.value.messages] == [good, good]
    with pytest.raises(FramingError, match="already failed"):
        parser.feed(good)


def test_stream_refuses_oversize_header_section_however_it_arrives() -> None:
    limits = Limits(max_message_bytes=2_000)
    data = b"OPTIONS sip:a SIP/2.0\r\nX: " + b"y" * 3_000
    whole = StreamParser(limits)
    with pytest.raises(FramingError) as one:
        whole.feed(data)
    chunked = StreamParser(limits)
    with pytest.raises(FramingError) as many:
        for i in range(0, len(data), 100):
            chunked.feed(data[i : i + 100])
    assert one.value.status == many.value.status == 413
    assert one.value.reason == many.value.reason

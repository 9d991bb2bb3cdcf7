"""Our own hostile SIP messages (issue 7 item 8), beyond the RFC 4475 corpus: each is a
(name, bytes) pair built for a gateway at `target` from a sender at `host:port`.

`legit` (Call-ID, From tag, To tag, INVITE branch of a live call) lets some of them aim at a
real dialog: forged BYEs and responses must not end or disturb it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Dialog:
    call_id: str
    from_tag: str
    to_tag: str
    uri: str


def _msg(start: str, headers: list[str], body: bytes = b"", length: str | None = None) -> bytes:
    cl = str(len(body)) if length is None else length
    return (start + "\r\n" + "".join(h + "\r\n" for h in headers)
            + f"Content-Length: {cl}\r\n\r\n").encode("utf-8", "surrogateescape") + body


def nasty_messages(target: str, host: str, port: int, transport: str = "UDP",
                   legit: Dialog | None = None) -> list[tuple[str, bytes]]:
    uri = f"sip:100@{target}"

    def base(method: str = "OPTIONS", *, cseq: str | None = None, branch: str | None = None,
             call_id: str | None = None, extra: tuple[str, ...] = (),
             from_tag: str = "n1", to: str | None = None) -> list[str]:
        b = branch or "z9hG4bK-" + secrets.token_hex(6)
        return [
            f"Via: SIP/2.0/{transport} {host}:{port};branch={b};rport",
            "Max-Forwards: 70",
            f"From: <sip:x@{host}>;tag={from_tag}",
            f"To: {to or f'<{uri}>'}",
            f"Call-ID: {call_id or secrets.token_hex(8)}",
            f"CSeq: {cseq or f'1 {method}'}",
            *extra,
        ]

    sdp = (f"v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
           "m=audio 9 RTP/AVP 0\r\n").encode()
    out: list[tuple[str, bytes]] = [
        ("huge header value (60 kB)",
         _msg(f"OPTIONS {uri} SIP/2.0", base(extra=("X-Big: " + "a" * 60_000,)))),
        ("huge message (200 kB)",
         _msg(f"OPTIONS {uri} SIP/2.0", base(extra=("X-Big: " + "a" * 200_000,)))),
        ("10,000 Via headers",
         _msg(f"OPTIONS {uri} SIP/2.0",
              [f"Via: SIP/2.0/{transport} 10.0.{i // 250}.{i % 250}:5060;branch=z9hG4bK{i}"
               for i in range(10_000)] + base()[1:])),
        ("1,000 one-byte headers",
         _msg(f"OPTIONS {uri} SIP/2.0", base(extra=tuple(f"X-{i}: y" for i in range(1000))))),
        ("negative Content-Length", _msg(f"OPTIONS {uri} SIP/2.0", base(), b"", "-5")),
        ("lying Content-Length (too big)",
         _msg(f"INVITE {uri} SIP/2.0", base("INVITE", extra=("Content-Type: application/sdp",)),
              sdp, "99999")),
        ("lying Content-Length (too small)",
         _msg(f"OPTIONS {uri} SIP/2.0", base(), b"hello world", "3")),
        ("Content-Length not a number", _msg(f"OPTIONS {uri} SIP/2.0", base(), b"", "1e3")),
        ("two Content-Lengths",
         _msg(f"OPTIONS {uri} SIP/2.0", base(extra=("Content-Length: 7",)), b"")),
        ("NUL in a header",
         _msg(f"OPTIONS {uri} SIP/2.0", base(extra=("Subject: a\x00b",)))),
        ("NUL in the request line", _msg(f"OPTIONS sip:1\x0000@{target} SIP/2.0", base())),
        ("NUL bytes body",
         _msg(f"OPTIONS {uri} SIP/2.0", base(extra=("Content-Type: text/plain",)),
              b"\x00" * 100)),
        ("bad UTF-8 in a header",
         _msg(f"OPTIONS {uri} SIP/2.0", base()).replace(b"Max-Forwards: 70",
                                                          b"Subject: \xff\xfe\xc3\x28")),
        ("bad UTF-8 in From display name",
         _msg(f"OPTIONS {uri} SIP/2.0", base()).replace(b"From: <", b"From: \"\xc0\xaf\" <")),
        ("bad UTF-8 SDP in INVITE",
         _msg(f"INVITE {uri} SIP/2.0", base("INVITE", extra=("Content-Type: application/sdp",)),
              b"v=0\r\n\xff\xfe\xfd garbage\r\nm=audio \xc3\x28 RTP/AVP 0\r\n")),
        ("garbage SDP in INVITE",
         _msg(f"INVITE {uri} SIP/2.0", base("INVITE", extra=("Content-Type: application/sdp",)),
              b"m=audio 99999999999 RTP/AVP 999999\r\nc=IN IP4 ;;;\r\n" * 50)),
        ("deep URI escapes (%25 x 5000)",
         _msg(f"OPTIONS sip:{'%25' * 5000}@{target} SIP/2.0", base())),
        ("broken URI escapes", _msg(f"OPTIONS sip:%%%zz%4@{target} SIP/2.0", base())),
        ("escaped NUL in URI user", _msg(f"INVITE sip:%00%00@{target} SIP/2.0",
                                         base("INVITE", extra=("Content-Type: application/sdp",)),
                                         b"v=0\r\nm=audio 0 RTP/AVP 0\r\n")),
        ("request line 20 kB", _msg(f"OPTIONS sip:{'1' * 20_000}@{target} SIP/2.0", base())),
        ("absurd CSeq number", _msg(f"OPTIONS {uri} SIP/2.0",
                                    base(cseq="99999999999999999999999999 OPTIONS"))),
        ("CSeq 2^32", _msg(f"OPTIONS {uri} SIP/2.0", base(cseq="4294967296 OPTIONS"))),
        ("negative CSeq", _msg(f"OPTIONS {uri} SIP/2.0", base(cseq="-1 OPTIONS"))),
        ("CSeq method mismatch", _msg(f"INVITE {uri} SIP/2.0", base(cseq="1 BYE"))),
        ("Max-Forwards 99999", _msg(f"OPTIONS {uri} SIP/2.0", base()).replace(
            b"Max-Forwards: 70", b"Max-Forwards: 99999")),
        ("folded header bomb", _msg(f"OPTIONS {uri} SIP/2.0",
                                    base(extra=("Subject: a" + "\r\n b" * 3000,)))),
        ("missing Call-ID", _msg(f"OPTIONS {uri} SIP/2.0",
                                 [h for h in base() if not h.startswith("Call-ID")])),
        ("Via without branch", _msg(f"OPTIONS {uri} SIP/2.0",
                                    [f"Via: SIP/2.0/{transport} {host}:{port}", *base()[1:]])),
        ("Via to a foreign host", _msg(f"OPTIONS {uri} SIP/2.0",
                                       [f"Via: SIP/2.0/{transport} 192.0.2.1:5060;branch="
                                        "z9hG4bK-far", *base()[1:]])),
        ("unknown method", _msg(f"FOO {uri} SIP/2.0", base("FOO"))),
        ("SIP/3.0", _msg(f"OPTIONS {uri} SIP/3.0", base())),
        ("ACK for nothing", _msg(f"ACK {uri} SIP/2.0", base("ACK", to=f"<{uri}>;tag=zz"))),
        ("CANCEL for nothing", _msg(f"CANCEL {uri} SIP/2.0", base("CANCEL"))),
        ("BYE outside a dialog", _msg(f"BYE {uri} SIP/2.0", base("BYE", to=f"<{uri}>;tag=q"))),
        ("response to nothing (200)", _msg("SIP/2.0 200 OK", base(cseq="1 INVITE"))),
        ("response to nothing (180)", _msg("SIP/2.0 180 Ringing", base(cseq="7 INVITE"))),
        ("response status 999", _msg("SIP/2.0 999 Nope", base())),
        ("response status 099", _msg("SIP/2.0 099 Nope", base())),
        ("empty datagram of CRLFs", b"\r\n\r\n\r\n\r\n"),
        ("start line only", b"INVITE\r\n\r\n"),
        ("random binary", secrets.token_bytes(1200)),
        ("HTTP request", b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
    ]
    if legit is not None:
        d = legit
        out += [
            ("forged BYE, wrong From tag",
             _msg(f"BYE {d.uri} SIP/2.0", base("BYE", cseq="99 BYE", call_id=d.call_id,
                                                from_tag="evil", to=f"<{d.uri}>;tag={d.to_tag}"))),
            ("forged BYE, wrong To tag",
             _msg(f"BYE {d.uri} SIP/2.0", base("BYE", cseq="99 BYE", call_id=d.call_id,
                                                from_tag=d.from_tag, to=f"<{d.uri}>;tag=evil"))),
            ("forged CANCEL for the live call",
             _msg(f"CANCEL {d.uri} SIP/2.0", base("CANCEL", call_id=d.call_id,
                                                  from_tag=d.from_tag))),
            ("forged 200 with the call's Call-ID",
             _msg("SIP/2.0 200 OK", base(cseq="1 INVITE", call_id=d.call_id,
                                         from_tag=d.from_tag, to=f"<{d.uri}>;tag={d.to_tag}"))),
            ("forged 481 to the call's BYE-to-be",
             _msg("SIP/2.0 481 Gone", base(cseq="1 BYE", call_id=d.call_id,
                                           from_tag=d.to_tag, to=f"<{d.uri}>;tag={d.from_tag}"))),
            ("re-INVITE with absurd CSeq on the live dialog",
             _msg(f"INVITE {d.uri} SIP/2.0",
                  base("INVITE", cseq="99999999999999 INVITE", call_id=d.call_id,
                       from_tag="evil", to=f"<{d.uri}>;tag={d.to_tag}",
                       extra=("Content-Type: application/sdp",)), sdp)),
        ]
    return out

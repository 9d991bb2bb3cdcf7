"""Messages per second for parsing and serialising a typical carrier INVITE and its 200 OK.

    python bench/parse_speed.py [--seconds 2]

Figures are per CPU core: process CPU time (so other work on this shared machine does not
count), best of three runs of about `--seconds` each.

- `parse`: 2,000 distinct messages (own Call-ID, branch, tags), cycled, so the parsed-view
  caches (512 entries) miss as they would for new calls;
- `parse (same bytes)`: one message again and again, as for retransmissions (cache hits);
- `parse+views`: distinct messages, then the views every layer reads (top Via, CSeq, tags);
- `serialise`: `to_bytes()`; `stream`: 20 pipelined distinct messages through `StreamParser`.
"""

from __future__ import annotations

import argparse
import itertools
import pathlib
import sys
import time
from collections.abc import Callable

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from gateway.sip.message import Message, make_response
from gateway.sip.parser import StreamParser, parse_message

SDP = (
    b"v=0\r\no=- 3912873 3912873 IN IP4 203.0.113.10\r\ns=-\r\nc=IN IP4 203.0.113.10\r\n"
    b"t=0 0\r\nm=audio 31000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
)

INVITE = (
    b"INVITE sip:+4930123456@gw.example.net:5060;user=phone SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK-524287-1---8d5a1c3e;rport\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.2:5060;branch=z9hG4bK-carrier-77a1;received=198.51.100.2\r\n"
    b"Max-Forwards: 69\r\n"
    b"Record-Route: <sip:198.51.100.2;lr;ftag=as5f2e1a7b>\r\n"
    b'From: "+49301111111" <sip:+49301111111@carrier.example.com;user=phone>;tag=as5f2e1a7b\r\n'
    b"To: <sip:+4930123456@gw.example.net;user=phone>\r\n"
    b"Call-ID: 1c2b3a4d5e6f7a8b9c0d1e2f3a4b5c6d@203.0.113.10\r\n"
    b"CSeq: 102 INVITE\r\n"
    b"Contact: <sip:+49301111111@203.0.113.10:5060;transport=udp>\r\n"
    b"Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, INFO, UPDATE, PRACK\r\n"
    b"Supported: replaces, timer, 100rel\r\n"
    b"Session-Expires: 1800;refresher=uac\r\nMin-SE: 90\r\n"
    b"P-Asserted-Identity: <sip:+49301111111@carrier.example.com;user=phone>\r\n"
    b"User-Agent: Carrier-SBC 4.2\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP
)


def _ok_response() -> bytes:
    request = parse_message(INVITE)
    response = make_response(request, 200, to_tag="gw-8f3e2a")
    response.headers.add("Contact", "<sip:gw@192.0.2.5:5060>")
    response.headers.add("Content-Type", "application/sdp")
    response.body = SDP
    return response.to_bytes()


OK_200 = _ok_response()


def _views(message: Message) -> None:
    message.top_via.branch  # noqa: B018 - the reads are the work being measured
    message.cseq  # noqa: B018
    message.from_.tag  # noqa: B018
    message.to.tag  # noqa: B018
    message.call_id  # noqa: B018


def variants(wire: bytes, count: int) -> list[bytes]:
    """Copies that differ where new calls differ: Call-ID, Via branches and tags."""
    out = []
    for i in range(count):
        text = wire
        for old in (b"1c2b3a4d5e6f", b"8d5a1c3e", b"77a1", b"as5f2e1a7b", b"gw-8f3e2a"):
            text = text.replace(old, old[:-4] + b"%04d" % i)
        out.append(text)
    return out


def rate(work: Callable[[], object], seconds: float) -> float:
    """Calls per CPU second: best of three runs of about `seconds` each."""
    best = 0.0
    for _ in range(3):
        count = 0
        started = time.process_time()
        deadline = started + seconds
        while True:
            for _ in range(200):
                work()
            count += 200
            now = time.process_time()
            if now >= deadline:
                break
        best = max(best, count / (now - started))
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    for name, wire in (("INVITE", INVITE), ("200 OK", OK_200)):
        message = parse_message(wire)
        distinct = variants(wire, 2_000)
        assert len(set(distinct)) == len(distinct)
        cycle = itertools.cycle(distinct)
        pipelined = itertools.cycle(
            [b"".join(distinct[i : i + 20]) for i in range(0, len(distinct), 20)]
        )
        figures = {
            "parse": rate(lambda c=cycle: parse_message(next(c)), args.seconds),
            "parse (same bytes)": rate(lambda wire=wire: parse_message(wire), args.seconds),
            "parse+views": rate(lambda c=cycle: _views(parse_message(next(c))), args.seconds),
            "serialise": rate(message.to_bytes, args.seconds),
            "stream": 20 * rate(lambda p=pipelined: StreamParser().feed(next(p)), args.seconds),
        }
        print(f"{name} ({len(wire)} bytes):")
        for label, value in figures.items():
            print(f"  {label:20s} {value:>10,.0f} msg/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Input generators shared by the hypothesis property tests and `bench/fuzz_sip.py`.

Everything takes a `random.Random`, so the property tests can drive it from hypothesis
(`st.randoms()`, shrinkable and deterministic) and the benchmark from a seeded RNG at full speed.

Two kinds of input:
- `mutate`: a corpus message with 1-4 mutations (byte flips, insertions of SIP-significant or
  Unicode-tricky snippets, deletions, header duplication/removal/swaps, truncation, splicing
  with another corpus message, Content-Length lies, repetition bombs).
- `generate`: a structure-aware message built from random grammar pieces (methods, URIs with
  escapes and IPv6, Via lists, name-addrs with quoted display names, CSeq extremes, bodies with
  right or wrong Content-Length), so deep paths are reached more often than byte noise reaches them.

`outcome` and `stream_outcome` reduce a parse to a comparable value: the serialised messages or
the `ParseError` status; anything else escapes and is a crash.
"""

from __future__ import annotations

import pathlib
import random
from collections.abc import Callable

from gateway.sip.errors import ParseError
from gateway.sip.message import Message
from gateway.sip.parser import FramingError, StreamParser, parse_message

CORPUS_DIR = pathlib.Path(__file__).resolve().parent.parent / "data" / "sip"


def load_corpus(kind: str = "valid", max_bytes: int = 20_000) -> list[bytes]:
    """Corpus files of one kind (sorted, so seeds are reproducible); huge ones are skipped."""
    paths = sorted((CORPUS_DIR / kind).glob("*.sip"))
    return [data for data in (p.read_bytes() for p in paths) if len(data) <= max_bytes]


# Snippets that mean something to a SIP parser, or that trip Unicode-aware string methods
# (str.isdigit, str.split, str.strip, re \d \s and re.I all accept more than ASCII).
SNIPPETS: tuple[bytes, ...] = (
    b"\r\n", b"\r\n ", b"\r\n\t", b"\n", b"\r", b"\r\n\r\n", b" ", b"\t", b";", b",", b":",
    b"=", b'"', b"\\", b"<", b">", b"@", b"?", b"&", b"%", b"%00", b"%4", b"%%", b"[", b"]",
    b"[::1]", b"[2001:db8::1]:5060", b"::", b"/", b"*", b"\x00", b"\x7f", b"\x1b", b"\xff",
    b"\xc3", b"\xc0\xaf", b"\xed\xa0\x80", "١٢".encode(), "²".encode(), "\u00a0".encode(),
    "\u2028".encode(), "\x85".encode(), "ſ".encode(), "\u212a".encode(), "İ".encode(),
    b"0", b"-1", b"00000000000000000001", b"2147483648", b"4294967296", b"9" * 40,
    b"SIP/2.0", b"SIP/2.0/UDP ", b"sip:", b"sips:", b"tel:", b"branch=z9hG4bK", b";tag=",
    b";branch=", b";received=", b";rport", b";lr", b"Via: ", b"v: ", b"Content-Length: ",
    b"l: ", b"CSeq: ", b"Call-ID: ", b"i: ", b"From: ", b"To: ", b"Contact: ", b"*",
    b"Max-Forwards: ", b"Expires: ", b"Route: ", b"Record-Route: ", b"Content-Type: ",
    b"INVITE", b"ACK", b"BYE", b"CANCEL", b"OPTIONS",
)


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n")


def _flip(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    if not data:
        return bytes([rng.randrange(256)])
    i = rng.randrange(len(data))
    value = data[i] ^ (1 << rng.randrange(8)) if rng.random() < 0.5 else rng.randrange(256)
    return data[:i] + bytes([value]) + data[i + 1 :]


def _insert(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    i = rng.randrange(len(data) + 1)
    if rng.random() < 0.8:
        snippet = rng.choice(SNIPPETS)
    else:
        snippet = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return data[:i] + snippet + data[i:]


def _delete(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    if not data:
        return data
    i = rng.randrange(len(data))
    return data[:i] + data[i + rng.randint(1, min(16, len(data) - i)) :]


def _truncate(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    return data[: rng.randrange(len(data) + 1)]


def _duplicate_line(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    lines = _lines(data)
    line = rng.choice(lines)
    lines.insert(rng.randrange(len(lines) + 1), line)
    return b"\r\n".join(lines)


def _drop_line(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    lines = _lines(data)
    if len(lines) > 1:
        del lines[rng.randrange(len(lines))]
    return b"\r\n".join(lines)


def _swap_lines(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    lines = _lines(data)
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return b"\r\n".join(lines)


def _splice(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    other = rng.choice(corpus)
    if rng.random() < 0.5:  # at line boundaries: a plausible but inconsistent message
        mine, theirs = _lines(data), _lines(other)
        cut_a, cut_b = rng.randrange(len(mine) + 1), rng.randrange(len(theirs) + 1)
        return b"\r\n".join(mine[:cut_a] + theirs[cut_b:])
    return data[: rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1) :]


def _content_length_lie(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    value = rng.choice([b"0", b"1", b"-1", b"4", b"65536", b"99999999999", b"000", b" 5 ", b"0x10"])
    lines = _lines(data)
    for i, line in enumerate(lines):
        if line.lower().startswith((b"content-length", b"l:", b"l :")):
            lines[i] = line.split(b":", 1)[0] + b": " + value
            return b"\r\n".join(lines)
    return data.replace(b"\r\n\r\n", b"\r\nContent-Length: " + value + b"\r\n\r\n", 1)


def _repeat(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    if not data:
        return data
    i = rng.randrange(len(data))
    chunk = data[i : i + rng.randint(1, 40)]
    return data[:i] + chunk * rng.randint(2, 300) + data[i:]


def _replace_value(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    lines = _lines(data)
    i = rng.randrange(len(lines))
    name, colon, _ = lines[i].partition(b":")
    if not colon:
        return data
    value = b"".join(rng.choice(SNIPPETS) for _ in range(rng.randint(1, 6)))
    lines[i] = name + b": " + value
    return b"\r\n".join(lines)


MUTATORS: tuple[Callable[[random.Random, bytes, list[bytes]], bytes], ...] = (
    _flip, _flip, _insert, _insert, _insert, _delete, _truncate, _duplicate_line, _drop_line,
    _swap_lines, _splice, _content_length_lie, _repeat, _replace_value,
)


def mutate(rng: random.Random, corpus: list[bytes]) -> bytes:
    data = rng.choice(corpus)
    for _ in range(rng.randint(1, 4)):
        data = rng.choice(MUTATORS)(rng, data, corpus)
    return data


# --- structure-aware generation --------------------------------------------------------------

METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE", "REGISTER", "X-ODD")


def _pick(rng: random.Random, p: float, good: list[str], bad: list[str]) -> str:
    """A legal choice, or with probability `p` a hostile one. Each message draws its own `p`,
    so many messages are fully legal (reaching serialisation and the deep paths) while others
    are hostile in one or several places."""
    return rng.choice(bad) if rng.random() < p else rng.choice(good)


def _host(rng: random.Random, p: float) -> str:
    return _pick(rng, p, ["gw.example.net", "198.51.100.7", "[2001:db8::1]",
                          "[::ffff:192.0.2.1]", "a", "example.com.", "[::1]"],
                 ["256.1.1.1", "[2001:db8:::1]", "host-", "-h", "[::1", "1.2.3.4.5", ""])


def _uri(rng: random.Random, p: float, uri_headers: bool) -> str:
    scheme = _pick(rng, p, ["sip", "sip", "sips", "tel", "SIP"], ["x-unknown", "1sip", ""])
    if scheme == "tel":
        return "tel:+1-201-555-" + str(rng.randrange(10_000))
    user = _pick(rng, p, ["", "alice@", "%41lice@", "a;b=c@", "u:pw@", "%00@", "+49301@"],
                 ["a%2@", "@", "a@b@", "a b@", "ü@"])
    port = _pick(rng, p, ["", ":5060", ":0", ":65535"], [":65536", ":x", ":", ":٥"])
    params = "".join(_pick(rng, p, [";lr", ";transport=udp", ";maddr=[::1]", ";x=%41"],
                           [";;", ";="]) for _ in range(rng.randint(0, 3)))
    headers = _pick(rng, p, ["", "", "?Subject=hi", "?a=b&c=d"] if uri_headers else [""],
                    ["?bad", "?a=<b>", "?x=y"])
    return f"{scheme}:{user}{_host(rng, p)}{port}{params}{headers}"


def _name_addr(rng: random.Random, p: float, tag: bool) -> str:
    display = _pick(rng, p, ["", '"Alice" ', '"A \\"q\\" \\\\" ', "Bob ", '"Jürgen" ',
                             '"\\\x00"'],
                    ["Bell, A ", '"open ', "Jürgen ", '"\x00" '])
    uri = _uri(rng, p, True)
    core = f"{display}<{uri}>" if display or rng.random() < 0.7 else uri.partition("?")[0]
    params = ";tag=" + _pick(rng, p, ["a1", "t" * 50, '"q"'], ["", "x y"]) if tag else ""
    return core + params + _pick(rng, p, ["", "", ";expires=60", ";q=0.5", ";x"],
                                 [";;", ";tag=1;tag=2"])


def _via(rng: random.Random, p: float) -> str:
    version = _pick(rng, p, ["SIP/2.0", "sip / 2.0"], ["SIP/3.0", "SIP/2"])
    transport = _pick(rng, p, ["UDP", "TCP", "TLS", "WS", "SCTP", "udp"], ["", "U D P"])
    sent_by = _host(rng, p) + _pick(rng, p, ["", ":5060", " : 5060"], [":99999"])
    branch = _pick(rng, p, ["z9hG4bK-" + str(rng.randrange(10**6)), "z9hG4bK"],
                   ["", "1;branch=2"])
    extra = _pick(rng, p, ["", ";rport", ";rport=5060", ";received=2001:db8::1",
                           ";received=[::1]", ";received=1.2.3.4", " ; ttl = 3"],
                  [";received=::g", ";rport;rport"])
    return f"{version}/{transport} {sent_by};branch={branch}{extra}"


def generate(rng: random.Random) -> bytes:
    """A structurally plausible message with random (often legal, sometimes hostile) fields."""
    p = rng.choice([0.0, 0.0, 0.01, 0.03, 0.1, 0.3])
    method = rng.choice(METHODS)
    if rng.random() < 0.3:
        status = _pick(rng, p, ["100", "180", "200", "487", "699"], ["700", "099", "2000", "a"])
        start = f"SIP/2.0 {status} {rng.choice(['OK', '', 'Trying', 'Ünïcode'])}"
    else:
        version = _pick(rng, p, ["SIP/2.0", "sip/2.0"], ["SIP/3.0", "SIP/2.0.1", "SIP/2.0 "])
        start = f"{method} {_uri(rng, p, False)} {version}"
    lines = [start]
    vias = [_via(rng, p) for _ in range(rng.randint(0 if rng.random() < p else 1, 4))]
    if vias and rng.random() < 0.3:
        lines.append("Via: " + ", ".join(vias))
    else:
        lines += [f"{rng.choice(['Via', 'v'])}: {v}" for v in vias]
    lines.append(f"{rng.choice(['From', 'f'])}: {_name_addr(rng, p, True)}")
    lines.append(f"{rng.choice(['To', 't'])}: {_name_addr(rng, p, rng.random() < 0.5)}")
    lines.append("Call-ID: " + _pick(rng, p, ["c1@h", "x", "id-" * 20], ["", "a b", "ü@h"]))
    number = _pick(rng, p, ["1", "0", "2147483647", "007"], ["2147483648", "-5", "1" * 30, "١"])
    cseq_method = rng.choice(METHODS) if rng.random() < p else method
    lines.append(f"CSeq: {number} {cseq_method}")
    if rng.random() < 0.7:
        lines.append("Max-Forwards: " + _pick(rng, p, ["70", "0", "255", "0070"], ["256", "²"]))
    for _ in range(rng.randint(0, 3)):
        lines.append(f"{rng.choice(['Contact', 'm', 'Route', 'Record-Route'])}: "
                     + ", ".join(_name_addr(rng, p, False) for _ in range(rng.randint(1, 3))))
    if rng.random() < 0.2:
        lines.append(rng.choice(["Subject: folded", "X-Odd: ;;,,"])
                     + rng.choice(["", "\r\n  more"]))
    noise = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
    body = rng.choice([b"", b"v=0\r\n", noise])
    if body and rng.random() < 0.8:
        kind = _pick(rng, p, ["application/sdp", "a / b", "x/y;p=1"], ["bad", "a/b/c"])
        lines.append("Content-Type: " + kind)
    length: int | None = len(body)
    if rng.random() < p:
        length = rng.choice([len(body) + 1, max(0, len(body) - 1), -1, None])
    if length is not None:
        lines.append(f"{rng.choice(['Content-Length', 'l'])}: {length}")
    if rng.random() < p:
        tail = lines[1:]
        rng.shuffle(tail)
        lines = [lines[0], *tail]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


# --- outcomes ----------------------------------------------------------------------------------

Outcome = tuple[str, object]


def _digest(message: Message) -> bytes:
    return message.to_bytes()


def outcome(data: bytes) -> Outcome:
    """('ok', serialised) or ('error', status); other exceptions propagate (a crash)."""
    try:
        return ("ok", _digest(parse_message(data)))
    except ParseError as exc:
        return ("error", exc.status)


def stream_outcome(data: bytes, cuts: list[int]) -> tuple[list[bytes], int | None]:
    """Feed `data` split at `cuts`; return the serialised messages and the final error status."""
    parser = StreamParser()
    messages: list[bytes] = []
    start = 0
    for end in [*sorted(cuts), len(data)]:
        try:
            messages += [_digest(m) for m in parser.feed(data[start:end])]
        except FramingError as exc:
            messages += [_digest(m) for m in exc.messages]
            return messages, exc.status
        start = end
    return messages, None


def random_cuts(rng: random.Random, length: int) -> list[int]:
    if length == 0:
        return []
    return sorted(rng.randrange(length + 1) for _ in range(rng.randint(1, 12)))


def round_trip_problem(data: bytes) -> str | None:
    """For a message that parses: does parse → to_bytes → parse keep headers and body?"""
    try:
        first = parse_message(data)
    except ParseError:
        return None
    wire = first.to_bytes()
    try:
        second = parse_message(wire)
    except ParseError as exc:
        return f"serialised message does not parse: {exc.reason}"
    if header_values(first) != header_values(second):
        return "header values changed"
    if first.body != second.body:
        return "body changed"
    if second.to_bytes() != wire:
        return "second serialisation differs"
    return None


def header_values(message: Message) -> list[tuple[str, str]]:
    """Header fields with Content-Length left out (to_bytes rewrites it to the body length)."""
    return [(name, value) for name, value in message.headers if name != "Content-Length"]

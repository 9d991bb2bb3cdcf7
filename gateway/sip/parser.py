"""Parsing SIP messages from datagrams and from TCP byte streams (RFC 3261 §7, §18.3, §20, §25).

`parse_message` takes one complete message (a UDP datagram) and returns a `SipRequest` or
`SipResponse`, or raises `ParseError` naming what was wrong and the status it deserves.
`StreamParser` frames a TCP stream by Content-Length (mandatory on streams, §18.3): it accepts
partial reads and pipelined messages, skips the CRLF keep-alives of RFC 5626, and raises
`FramingError` (a `ParseError` carrying the messages completed before the break) when the framing is
broken, after which the connection must be closed. How the bytes arrive never changes what is
parsed.

We are liberal where RFC 3261 and RFC 4475 §3.1.1 allow it: folded lines, compact names, any
LWS around colons, slashes and CSeq parts, leading zeros, a case-insensitive `SIP/2.0`, leading
CRLFs, bare-LF line ends in datagrams, control octets as quoted-pairs in quoted strings (§25.1),
unknown methods, schemes and headers. We are strict where misreading would hurt (RFC 4475 §3.1.2):
the headers every transaction needs (Via, From, To, Call-ID, CSeq) must be present once and well
formed, key parameters (tag, branch, received, rport, maddr) must not repeat, CSeq's method must
match the request method, Content-Length must be single and not lie, numbers are ASCII digits in
range, and no bare control octet, NUL or invalid UTF-8 may appear in the header section.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.sip.errors import ParseError
from gateway.sip.headers import (
    Headers,
    is_digits,
    is_token,
    parse_cseq,
    parse_name_addr,
    parse_via,
)
from gateway.sip.message import Message, SipRequest, SipResponse
from gateway.sip.uri import SipUri, parse_uri


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits applied before any other work, so hostile input costs little."""

    max_message_bytes: int = 65_535
    max_headers: int = 256
    max_line_bytes: int = 8_192
    max_body_bytes: int = 32_768
    # A request crossing 70 proxies (the default Max-Forwards) carries ~71 Vias.
    max_vias: int = 100
    # Contact, Route and Record-Route entries each: every one is parsed, so without a bound a
    # 64 KB datagram of 4,000 short Contacts costs ~200 times a normal INVITE to check.
    max_addresses: int = 64


DEFAULT_LIMITS = Limits()

_RESPONSE_LINE = re.compile(r"^SIP/([0-9]+\.[0-9]+) ([0-9]{3})(?: (.*))?$", re.S | re.I | re.A)
_REQUEST_LINE = re.compile(
    r"^([A-Za-z0-9\-.!%*_+`'~]+) ([^ ]+) SIP/([0-9]+\.[0-9]+)$", re.I | re.A
)
# name HCOLON value; the value is stripped in Python (a lazy regex tail could backtrack badly).
_HEADER_LINE = re.compile(r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*:(.*)", re.S)
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_LINE_END = re.compile(r"\r?\n")
_LWS = " \t"
# Octets no header grammar allows outside a quoted-pair: C0 controls except HTAB, and DEL.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_HEAD_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]|\r(?!\n)")  # besides line ends
_REQUIRED = ("Via", "From", "To", "Call-ID", "CSeq")
# Headers that hold exactly one value (§20): a second field is a parse error, not a guess.
_SINGLE = ("From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Type", "Expires")
_CALL_ID = re.compile(r"^[\x21-\x7e]+$")  # word ["@" word] (§25.1), liberal within ASCII
MAX_EXPIRES = 2**32 - 1  # §20.19, also the bound for Retry-After (§20.33)


def parse_message(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Message:
    """Parse one complete message; Content-Length, when present, must fit the body."""
    if len(data) > limits.max_message_bytes:
        raise ParseError(f"message of {len(data)} bytes exceeds {limits.max_message_bytes}", 413)
    head, body = _split_head(data)
    message = _parse_head(head, limits)
    length = _content_length(message.headers)
    if length is not None:
        if length > len(body):
            raise ParseError(f"Content-Length {length} but only {len(body)} body bytes")
        body = body[:length]  # RFC 3261 §18.3: extra octets of a datagram are discarded
    if len(body) > limits.max_body_bytes:
        raise ParseError(f"body of {len(body)} bytes exceeds {limits.max_body_bytes}", 413)
    message.body = body
    return message


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    data = data.lstrip(b"\r\n")  # leading CRLFs before a start line are ignored (§7.5)
    # The first empty line ends the header section; some stacks end lines with a bare LF.
    match = _BLANK_LINE.search(data)
    if match is None:
        raise ParseError("no blank line after the header section")
    return data[: match.start()], data[match.end() :]


def _parse_head(head: bytes, limits: Limits) -> Message:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(f"header section is not valid UTF-8 (byte {exc.start})") from None
    raw_lines = _LINE_END.split(text)
    if len(raw_lines) > limits.max_headers + 1:
        raise ParseError(f"more than {limits.max_headers} header lines", 413)
    start_line, header_lines = raw_lines[0], raw_lines[1:]
    if len(start_line) > limits.max_line_bytes:
        raise ParseError("start line too long", 414 if not start_line.startswith("SIP/") else 413)
    # One search over the whole section; only when it finds something are lines looked at.
    controls = _HEAD_CONTROL.search(text) is not None
    if controls and _CONTROL.search(start_line.replace("\t", " ")):
        raise ParseError("control character or NUL byte in start line")
    message = _parse_start_line(start_line)
    message.headers = _parse_headers(header_lines, limits, controls)
    _validate(message, limits)
    return message


def _parse_start_line(line: str) -> Message:
    if line[:4].upper() == "SIP/":
        match = _RESPONSE_LINE.match(line)
        if not match:
            raise ParseError(f"bad status line {line[:80]!r}")
        if match.group(1) != "2.0":
            raise ParseError(f"unsupported SIP version {match.group(1)}", 505)
        status = int(match.group(2))
        if not 100 <= status <= 699:
            raise ParseError(f"status code {status} out of range")
        return SipResponse(status=status, reason=match.group(3) or "")
    match = _REQUEST_LINE.match(line)
    if not match:
        raise ParseError(f"bad request line {line[:80]!r}")
    method, uri_text, version = match.groups()
    if version != "2.0":
        raise ParseError(f"unsupported SIP version {version}", 505)
    try:
        uri = parse_uri(uri_text)
    except ParseError as exc:
        status = 416 if ":" not in uri_text else 400
        raise ParseError(f"bad Request-URI: {exc.reason}", status) from None
    if isinstance(uri, SipUri) and uri.headers:
        # §19.1.1 table 1: headers are not allowed in a Request-URI (RFC 4475 §3.1.2.11).
        raise ParseError("Request-URI must not carry URI headers")
    return SipRequest(method=method, uri=uri)


def _parse_headers(lines: list[str], limits: Limits, controls: bool) -> Headers:
    fields: list[tuple[str, str]] = []
    name: str | None = None
    value = ""
    max_line = limits.max_line_bytes
    for line in lines:
        if len(line) > max_line:
            raise ParseError(f"header line longer than {max_line} bytes", 413)
        if line[:1] in (" ", "\t"):
            if name is None:
                raise ParseError("continuation line before any header")
            part = line.strip(_LWS)
            if part:  # header folding (§7.3.1): the line break and its LWS become one space
                value = f"{value} {part}" if value else part
            if len(value) > max_line:
                raise ParseError(f"header {name} longer than {max_line} bytes", 413)
            continue
        if name is not None:
            fields.append((name, _checked_value(name, value) if controls else value))
        if len(fields) >= limits.max_headers:
            raise ParseError(f"more than {limits.max_headers} headers", 413)
        match = _HEADER_LINE.match(line)
        if match is None:
            raise ParseError(f"bad header line {line[:60]!r}")
        name, value = match.group(1), match.group(2).strip(_LWS)
    if name is not None:
        fields.append((name, _checked_value(name, value) if controls else value))
    return Headers(fields)


def _checked_value(name: str, value: str) -> str:
    """Reject control octets unless they are quoted-pairs inside a quoted string (§25.1)."""
    if _CONTROL.search(value) is None:
        return value
    in_quote = False
    i = 0
    while i < len(value):
        ch = value[i]
        if in_quote and ch == "\\" and i + 1 < len(value) and value[i + 1] not in "\r\n":
            i += 2  # quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
            continue
        if ch == '"':
            in_quote = not in_quote
        elif _CONTROL.match(ch):
            what = "NUL byte" if ch == "\x00" else f"control character {ord(ch):#04x}"
            raise ParseError(f"{what} in {name} header")
        i += 1
    return value


def _validate(message: Message, limits: Limits) -> None:
    """Check the headers the transaction and dialog layers rely on (§8.1.1, RFC 4475 §3.1.2)."""
    headers = message.headers
    for name in _REQUIRED:
        if name not in headers:
            raise ParseError(f"missing {name} header")
    for name in _SINGLE:
        if headers.count(name) > 1:
            raise ParseError(f"more than one {name} header")
    call_id = headers.get("Call-ID") or ""
    if not call_id:
        raise ParseError("empty Call-ID")
    if not _CALL_ID.match(call_id):
        raise ParseError("Call-ID must be one word of printable ASCII")
    vias = headers.get_all("Via")
    if len(vias) > limits.max_vias:
        raise ParseError(f"more than {limits.max_vias} Via entries", 413)
    for via in vias:
        parse_via(via)
    for name in ("From", "To"):
        if parse_name_addr(headers.get(name) or "").wildcard:
            raise ParseError(f"'*' is not an address in {name}")
    cseq = parse_cseq(headers.get("CSeq") or "")
    if isinstance(message, SipRequest):
        if cseq.method != message.method:
            raise ParseError(f"CSeq method {cseq.method} does not match {message.method}")
        max_forwards = headers.get("Max-Forwards")
        if max_forwards is not None and _bounded_int(max_forwards, 255) is None:
            raise ParseError(f"bad Max-Forwards {max_forwards[:20]!r}")
    contacts = [parse_name_addr(contact) for contact in _bounded_list(headers, "Contact", limits)]
    if len(contacts) > 1 and any(contact.wildcard for contact in contacts):
        raise ParseError("Contact '*' must stand alone")
    for name in ("Route", "Record-Route"):
        for route in _bounded_list(headers, name, limits):
            if parse_name_addr(route).wildcard:
                raise ParseError(f"'*' is not a route in {name}")
    content_type = headers.get("Content-Type")
    if content_type is not None:
        kind, slash, sub = content_type.split(";")[0].partition("/")
        if not slash or not is_token(kind.strip(_LWS)) or not is_token(sub.strip(_LWS)):
            raise ParseError(f"bad Content-Type {content_type[:40]!r}")
    expires = headers.get("Expires")
    if expires is not None and _bounded_int(expires, MAX_EXPIRES) is None:
        raise ParseError(f"bad Expires {expires[:20]!r}")
    retry_after = headers.get("Retry-After")
    if retry_after is not None:
        seconds = re.split(r"[ \t;(]", retry_after, maxsplit=1)[0]
        if _bounded_int(seconds, MAX_EXPIRES) is None:
            raise ParseError(f"bad Retry-After {retry_after[:20]!r}")
    for warning in headers.get_all("Warning"):
        if not (len(warning) > 4 and is_digits(warning[:3]) and warning[3] == " "):
            raise ParseError(f"bad Warning {warning[:30]!r}")  # warn-code is 3DIGIT
    _content_length(headers)


def _bounded_list(headers: Headers, name: str, limits: Limits) -> list[str]:
    values = headers.get_all(name)
    if len(values) > limits.max_addresses:
        raise ParseError(f"more than {limits.max_addresses} {name} entries", 413)
    return values


def _bounded_int(text: str, maximum: int) -> int | None:
    """ASCII digits (leading zeros allowed) with a value up to `maximum`, else None."""
    text = text.strip(_LWS)
    if not is_digits(text):
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(maximum)) or int(digits) > maximum:
        return None  # length first: int() of a 5,000-digit string is slow, then refused
    return int(digits)


def _content_length(headers: Headers) -> int | None:
    values = headers.fields("Content-Length")
    if not values:
        return None
    if len(values) > 1:
        raise ParseError("more than one Content-Length header")
    text = values[0].strip(_LWS)
    if not is_digits(text) or len(text) > 9:
        raise ParseError(f"bad Content-Length {text[:20]!r}")
    return int(text)


class FramingError(ParseError):
    """A TCP stream broke framing; `messages` were completed before the break, in this feed."""

    def __init__(
        self, reason: str, status: int = 400, messages: list[Message] | None = None
    ) -> None:
        super().__init__(reason, status)
        self.messages: list[Message] = messages or []


@dataclass(slots=True)
class _Pending:
    """A parsed header section waiting for the rest of its body."""

    message: Message
    body_start: int
    length: int


class StreamParser:
    """Frames SIP messages out of a TCP byte stream (§18.3): feed bytes, get whole messages.

    Lines must end with CRLF on a stream. The header section is parsed once, when its blank
    line arrives; the body is then awaited without parsing again.
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._buffer = bytearray()
        self._pending: _Pending | None = None
        self._error: FramingError | None = None
        # Where the search for the blank line resumes: tiny reads of a big header section
        # (slow-loris) must not rescan it from the start each time.
        self._scanned = 0

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def in_message(self) -> bool:
        """True while part of a message has arrived (for header-read timeouts)."""
        # Keep-alive CRLF pairs are dropped as they arrive; at most half of one ("\r") is left.
        return self._pending is not None or (bool(self._buffer) and self._buffer != b"\r")

    def feed(self, data: bytes) -> list[Message]:
        """Add bytes; return the messages completed by them. Raises `FramingError` on broken
        framing (with the messages completed earlier in this call); every later call raises."""
        if self._error is not None:
            raise FramingError(f"stream already failed: {self._error.reason}", self._error.status)
        self._buffer += data
        messages: list[Message] = []
        try:
            while True:
                message = self._next()
                if message is None:
                    return messages
                messages.append(message)
        except ParseError as exc:
            self._error = FramingError(exc.reason, exc.status, messages)
            self._buffer.clear()
            raise self._error from None

    def _next(self) -> Message | None:
        if self._pending is None:
            self._pending = self._next_head()
            if self._pending is None:
                return None
        pending = self._pending
        total = pending.body_start + pending.length
        if len(self._buffer) < total:
            return None
        pending.message.body = bytes(self._buffer[pending.body_start : total])
        del self._buffer[:total]
        self._pending = None
        self._scanned = 0
        return pending.message

    def _next_head(self) -> _Pending | None:
        # Keep-alive CRLFs between messages are not messages (RFC 5626 §3.5.1).
        while self._buffer[:2] == b"\r\n":
            del self._buffer[:2]
            self._scanned = 0
        limit = self._limits.max_message_bytes
        end = self._buffer.find(b"\r\n\r\n", max(0, self._scanned - 3), limit + 4)
        self._scanned = len(self._buffer)
        if end < 0 or end + 4 > limit:
            # The same outcome whether the bytes came at once or one by one: only a header
            # section that cannot fit the limit is refused, and only once the limit is passed.
            if len(self._buffer) > limit:
                raise ParseError(f"message exceeds {limit} bytes", 413)
            return None
        message = _parse_head(bytes(self._buffer[:end]), self._limits)
        length = _content_length(message.headers)
        if length is None:
            raise ParseError("Content-Length is mandatory on stream transports")
        if length > self._limits.max_body_bytes:
            raise ParseError(f"body of {length} bytes exceeds {self._limits.max_body_bytes}", 413)
        if end + 4 + length > limit:
            raise ParseError(f"message exceeds {limit} bytes", 413)
        return _Pending(message, end + 4, length)

"""Parsing SIP messages from datagrams and from TCP byte streams (RFC 3261 §7, §18.3, §20, §25).

`parse_message` takes one complete message (a UDP datagram) and returns a `Request` or
`Response`, or raises `ParseError` naming what was wrong. `StreamParser` frames a TCP stream by
Content-Length (mandatory on streams, §18.3): it accepts partial reads and pipelined messages,
skips the CRLF keep-alives of RFC 5626, and raises `ParseError` when the framing is broken, after
which the connection must be closed.

We are liberal where RFC 3261 allows it (folded lines, compact names, any amount of whitespace
around the colon, lower-case methods are *not* allowed) and strict where misreading would hurt:
the headers every transaction needs (Via, From, To, Call-ID, CSeq) must be present and well
formed, CSeq's method must match the request method, and Content-Length must not lie.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.sip.errors import ParseError
from gateway.sip.headers import Headers, is_token, parse_cseq, parse_name_addr, parse_via
from gateway.sip.message import Message, Request, Response
from gateway.sip.uri import parse_uri


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits applied before any other work, so hostile input costs little."""

    max_message_bytes: int = 65_535
    max_headers: int = 256
    max_line_bytes: int = 8_192
    max_body_bytes: int = 32_768


DEFAULT_LIMITS = Limits()

_RESPONSE_LINE = re.compile(r"^SIP/(\d+\.\d+) (\d{3}) (.*)$", re.S)
_REQUEST_LINE = re.compile(r"^([A-Za-z0-9\-.!%*_+`'~]+) (\S+) SIP/(\d+\.\d+)$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_REQUIRED = ("Via", "From", "To", "Call-ID", "CSeq")


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
    index = data.find(b"\r\n\r\n")
    if index < 0:
        # Some stacks end lines with bare LF; accept it rather than reject the whole message.
        index = data.find(b"\n\n")
        if index < 0:
            raise ParseError("no blank line after the header section")
        return data[:index], data[index + 2 :]
    return data[:index], data[index + 4 :]


def _parse_head(head: bytes, limits: Limits) -> Message:
    if b"\x00" in head:
        raise ParseError("NUL byte in header section")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(f"header section is not valid UTF-8 (byte {exc.start})") from None
    raw_lines = re.split(r"\r?\n", text)
    if len(raw_lines) > limits.max_headers + 1:
        raise ParseError(f"more than {limits.max_headers} header lines", 413)
    start_line, header_lines = raw_lines[0], raw_lines[1:]
    if len(start_line) > limits.max_line_bytes:
        raise ParseError("start line too long", 414 if not start_line.startswith("SIP/") else 400)
    message = _parse_start_line(start_line)
    message.headers = _parse_headers(header_lines, limits)
    _validate(message)
    return message


def _parse_start_line(line: str) -> Message:
    if line.startswith("SIP/"):
        match = _RESPONSE_LINE.match(line)
        if not match:
            raise ParseError(f"bad status line {line[:80]!r}")
        if match.group(1) != "2.0":
            raise ParseError(f"unsupported SIP version {match.group(1)}")
        status = int(match.group(2))
        if not 100 <= status <= 699:
            raise ParseError(f"status code {status} out of range")
        return Response(status=status, reason=match.group(3))
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
    return Request(method=method, uri=uri)


def _parse_headers(lines: list[str], limits: Limits) -> Headers:
    headers = Headers()
    name: str | None = None
    value = ""
    count = 0
    for line in lines:
        if len(line) > limits.max_line_bytes:
            raise ParseError(f"header line longer than {limits.max_line_bytes} bytes")
        if line[:1] in (" ", "\t"):
            if name is None:
                raise ParseError("continuation line before any header")
            value += " " + line.strip()  # header folding (§7.3.1) becomes one space
            if len(value) > limits.max_line_bytes:
                raise ParseError(f"header {name} longer than {limits.max_line_bytes} bytes")
            continue
        if name is not None:
            headers.add(name, value)
        count += 1
        if count > limits.max_headers:
            raise ParseError(f"more than {limits.max_headers} headers", 413)
        raw_name, colon, raw_value = line.partition(":")
        raw_name = raw_name.rstrip(" \t")
        if not colon or not _HEADER_NAME.match(raw_name):
            raise ParseError(f"bad header line {line[:60]!r}")
        name, value = raw_name, raw_value.strip()
    if name is not None:
        headers.add(name, value)
    return headers


def _validate(message: Message) -> None:
    """Check the headers the transaction and dialog layers rely on (§8.1.1)."""
    headers = message.headers
    for name in _REQUIRED:
        if name not in headers:
            raise ParseError(f"missing {name} header")
    for name in ("From", "To", "Call-ID", "CSeq"):
        if len(headers.fields(name)) > 1:
            raise ParseError(f"more than one {name} header")
    if not headers.get("Call-ID"):
        raise ParseError("empty Call-ID")
    for via in headers.get_all("Via"):
        parse_via(via)
    parse_name_addr(headers.get("From") or "")
    parse_name_addr(headers.get("To") or "")
    cseq = parse_cseq(headers.get("CSeq") or "")
    if isinstance(message, Request):
        if cseq.method != message.method:
            raise ParseError(f"CSeq method {cseq.method} does not match {message.method}")
        max_forwards = headers.get("Max-Forwards")
        if max_forwards is not None and (
            not max_forwards.isdigit() or len(max_forwards) > 3 or int(max_forwards) > 255
        ):
            raise ParseError(f"bad Max-Forwards {max_forwards[:20]!r}")
    for contact in headers.get_all("Contact"):
        parse_name_addr(contact)
    if message.headers.get("Content-Type") is not None:
        media_type = (message.headers.get("Content-Type") or "").split(";")[0].strip()
        kind, slash, sub = media_type.partition("/")
        if not slash or not is_token(kind) or not is_token(sub):
            raise ParseError(f"bad Content-Type {media_type[:40]!r}")
    _content_length(headers)


def _content_length(headers: Headers) -> int | None:
    values = headers.fields("Content-Length")
    if not values:
        return None
    if len(set(values)) > 1:
        raise ParseError("conflicting Content-Length headers")
    text = values[0].strip()
    if not text.isdigit() or len(text) > 9:
        raise ParseError(f"bad Content-Length {text[:20]!r}")
    return int(text)


class StreamParser:
    """Frames SIP messages out of a TCP byte stream (§18.3): feed bytes, get whole messages."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._buffer = bytearray()
        self._broken = False

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def in_message(self) -> bool:
        """True while part of a message has arrived (for header-read timeouts)."""
        return bool(self._buffer.lstrip(b"\r\n"))

    def feed(self, data: bytes) -> list[Message]:
        """Add bytes; return the messages completed by them. Raises on broken framing."""
        if self._broken:
            raise ParseError("stream already failed")
        self._buffer += data
        messages: list[Message] = []
        try:
            while True:
                message = self._next()
                if message is None:
                    return messages
                messages.append(message)
        except ParseError:
            self._broken = True
            raise

    def _next(self) -> Message | None:
        # Keep-alive CRLFs between messages are not messages (RFC 5626 §3.5.1).
        while self._buffer[:2] == b"\r\n":
            del self._buffer[:2]
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > self._limits.max_message_bytes:
                raise ParseError("header section too large", 413)
            return None
        head = bytes(self._buffer[:end])
        message = _parse_head(head, self._limits)
        length = _content_length(message.headers)
        if length is None:
            raise ParseError("Content-Length is mandatory on stream transports")
        if length > self._limits.max_body_bytes:
            raise ParseError(f"body of {length} bytes exceeds {self._limits.max_body_bytes}", 413)
        total = end + 4 + length
        if len(self._buffer) < total:
            return None
        message.body = bytes(self._buffer[end + 4 : total])
        del self._buffer[:total]
        return message

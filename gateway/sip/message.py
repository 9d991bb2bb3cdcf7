"""SIP requests and responses (RFC 3261 §7) and their serialisation.

A message holds its start line, a `Headers` container with values as written, and a body of
bytes. Typed accessors (`via`, `cseq`, `from_`, `to`, ...) parse on demand. `to_bytes()` always
writes a Content-Length that matches the body, so what we send frames correctly on TCP.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.sip.headers import (
    CSeq,
    Headers,
    NameAddr,
    Via,
    parse_cseq,
    parse_name_addr,
    parse_via,
)
from gateway.sip.uri import Uri

SIP_VERSION = "SIP/2.0"

REASON_PHRASES: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 407: "Proxy Authentication Required", 408: "Request Timeout",
    413: "Request Entity Too Large", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 421: "Extension Required",
    422: "Session Interval Too Small", 423: "Interval Too Brief",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete", 486: "Busy Here",
    487: "Request Terminated", 488: "Not Acceptable Here", 491: "Request Pending",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline",
    604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}


def reason_phrase(status: int) -> str:
    return REASON_PHRASES.get(status, "Unknown")


@dataclass(slots=True, eq=False)
class _Message:
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    # --- typed views of the headers every message carries -------------------------------
    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> CSeq:
        return parse_cseq(self.headers.get("CSeq") or "")

    @property
    def vias(self) -> list[Via]:
        return [parse_via(v) for v in self.headers.get_all("Via")]

    @property
    def top_via(self) -> Via:
        return parse_via(self.headers.get("Via") or "")

    @property
    def from_(self) -> NameAddr:
        return parse_name_addr(self.headers.get("From") or "")

    @property
    def to(self) -> NameAddr:
        return parse_name_addr(self.headers.get("To") or "")

    @property
    def contacts(self) -> list[NameAddr]:
        return [parse_name_addr(v) for v in self.headers.get_all("Contact")]

    @property
    def content_type(self) -> str | None:
        """`type/subtype` in lower case, without parameters or the LWS §25.1 allows around '/'."""
        value = self.headers.get("Content-Type")
        if value is None:
            return None
        kind, _, sub = value.split(";")[0].partition("/")
        return (kind.strip(" \t") + "/" + sub.strip(" \t")).lower()

    def _head_lines(self) -> list[str]:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        lines = self._head_lines()
        for name, value in self.headers:
            if name != "Content-Length":
                lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        head = "\r\n".join(lines)
        breaks = len(lines) - 1
        if head.count("\n") != breaks or head.count("\r") != breaks:
            # A line break inside a value or reason phrase (built by the application, or
            # echoed from a hostile message) would inject header fields or a second message
            # into what we send: it becomes a space. Serialising never raises.
            head = "\r\n".join(line.replace("\r", " ").replace("\n", " ") for line in lines)
        return (head + "\r\n\r\n").encode("utf-8") + self.body


@dataclass(slots=True, eq=False)
class SipRequest(_Message):
    method: str = ""
    uri: Uri | None = None

    def _head_lines(self) -> list[str]:
        return [f"{self.method} {self.uri} {SIP_VERSION}"]

    def __repr__(self) -> str:
        return f"<SipRequest {self.method} {self.uri} call-id={self.call_id!r}>"


@dataclass(slots=True, eq=False)
class SipResponse(_Message):
    status: int = 0
    reason: str = ""

    def _head_lines(self) -> list[str]:
        return [f"{SIP_VERSION} {self.status} {self.reason}"]

    def __repr__(self) -> str:
        return f"<SipResponse {self.status} {self.reason} call-id={self.call_id!r}>"


Message = SipRequest | SipResponse


def make_request(method: str, uri: Uri, headers: Headers, body: bytes = b"") -> SipRequest:
    return SipRequest(headers=headers, body=body, method=method, uri=uri)


def make_response(
    request: SipRequest, status: int, reason: str | None = None, *, to_tag: str | None = None
) -> SipResponse:
    """Build a response per RFC 3261 §8.2.6.2: copy Via, From, Call-ID, CSeq, To (+tag).

    A 101-299 response to INVITE also gets the request's Record-Route fields, values and order
    untouched (§12.1.1): the caller builds its route set from them, so its ACK and BYE come
    back through every proxy that record-routed (a proxy answers a request that skips it 404).
    Copying them into a re-INVITE's answer too is harmless (§12.2.1.2: it changes no route set).
    """
    headers = Headers()
    for value in request.headers.fields("Via"):
        headers.add("Via", value)
    if request.method == "INVITE" and 100 < status < 300:
        for value in request.headers.fields("Record-Route"):
            headers.add("Record-Route", value)
    for name in ("From", "To", "Call-ID", "CSeq"):
        field_value = request.headers.get(name)
        if field_value is not None:
            headers.add(name, field_value)
    if to_tag is not None and status != 100:
        to = request.to
        if to.tag is None:
            headers.set("To", str(to.with_params((*to.params, ("tag", to_tag)))))
    return SipResponse(headers=headers, status=status, reason=reason or reason_phrase(status))

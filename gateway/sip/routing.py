"""Where responses go (RFC 3261 §18.2.1, §18.2.2 with RFC 3581 rport) and answering the
unparseable.

On receipt the top Via gets `received` (and the `rport` value when the client asked for it), so
every response built from the request carries them and `response_peer` can route it: on a
stream transport back on the connection, on UDP to received:rport (or the sent-by port).

`salvage_bad_request` answers a malformed request with 400 when enough of it is readable to
address a response (a Via, From, To, Call-ID and CSeq); otherwise the message is dropped.
"""

from __future__ import annotations

import re

from gateway.sip.address import Peer, Transport
from gateway.sip.errors import ParseError
from gateway.sip.headers import Headers, Via, canonical_name, parse_via, split_quoted
from gateway.sip.message import SipRequest, SipResponse, reason_phrase

_STRIP = re.compile(r"[\x00-\x1f\x7f]")


def stamp_received(request: SipRequest, source: Peer) -> None:
    """§18.2.1 + RFC 3581 §4: record the source address in the top Via."""
    fields = request.headers.fields("Via")
    if not fields:
        return
    parts = split_quoted(fields[0], ",")
    top = parse_via(parts[0])
    params = tuple(p for p in top.params if p[0].lower() not in ("received", "rport"))
    wants_rport = top.param("rport") is not None
    new_top = str(Via(top.transport, top.host, top.port, params))
    if top.host.strip("[]") != source.host or wants_rport:
        new_top += f";received={source.host}"
    if wants_rport:
        new_top += f";rport={source.port}"
    rebuilt = ", ".join([new_top, *(p.strip() for p in parts[1:])])
    values = request.headers.fields("Via")
    headers = Headers()
    replaced = False
    for name, value in request.headers:
        if name == "Via" and not replaced and value == values[0]:
            headers.add(name, rebuilt)
            replaced = True
        else:
            headers.add(name, value)
    request.headers = headers


def response_peer(via: Via, source: Peer) -> Peer:
    """§18.2.2: where responses go for a request whose (stamped) top Via is `via`."""
    if source.transport.reliable:
        # Back on the connection; if it is gone the driver connects to received:sent-by-port
        # (default 5061 for TLS, RFC 3261 §18.2.2 / §26.2.2).
        default = 5061 if source.transport is Transport.TLS else 5060
        return Peer(source.host, via.port or default, source.transport, source.conn_id)
    received = via.param("received")
    maddr = via.param("maddr")
    if maddr:
        return Peer(maddr, via.port or 5060, source.transport)
    host = received or via.host.strip("[]")
    rport = via.param("rport")
    if rport and rport.isdigit():
        return Peer(host, int(rport), source.transport)
    return Peer(host, via.port or 5060, source.transport)


def clean_reason(text: str) -> str:
    """A ParseError reason made safe for a reason phrase or a quoted Warning text."""
    return _STRIP.sub("", text).replace('"', "'")[:100]


def salvage_bad_request(data: bytes, error: ParseError) -> SipResponse | None:
    """Build a 4xx/5xx for a request the parser rejected, or None when it cannot be addressed."""
    try:
        text = data.decode("utf-8", errors="replace")
    except Exception:  # pragma: no cover - decode with errors="replace" does not raise
        return None
    head = re.split(r"\r?\n\r?\n", text.lstrip("\r\n"), maxsplit=1)[0]
    lines = re.split(r"\r?\n", head)
    if not lines or lines[0].startswith("SIP/") or lines[0].upper().startswith("ACK "):
        return None  # never answer a response or an ACK
    wanted: dict[str, list[str]] = {"Via": [], "From": [], "To": [], "Call-ID": [], "CSeq": []}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            continue
        cname = canonical_name(name.strip())
        if cname in wanted:
            wanted[cname].append(value.strip())
    if any(not values for values in wanted.values()):
        return None
    try:
        parse_via(split_quoted(wanted["Via"][0], ",")[0])
    except ParseError:
        return None  # no way to know where the response goes
    status = error.status if 400 <= error.status < 600 else 400
    headers = Headers()
    for value in wanted["Via"]:
        headers.add("Via", value)
    for name in ("From", "To", "Call-ID", "CSeq"):
        headers.add(name, wanted[name][0])
    reason = clean_reason(error.reason)
    headers.add("Warning", f'399 - "{reason}"')
    phrase = reason_phrase(status) if status != 400 else f"Bad Request ({reason})"
    return SipResponse(headers=headers, status=status, reason=phrase)

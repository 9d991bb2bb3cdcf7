"""Dialogs (RFC 3261 §12) and the two dialog-level timers the UA core owns. Whether a dialog is
early or confirmed is the call's state (`callstate.py`), not the dialog's.

* `Dialog`: identifiers (Call-ID, local and remote tag), local/remote URI, remote target, route
  set and CSeq counters, built from an INVITE as UAS (§12.1.1) or from a response as UAC
  (§12.1.2); `create_request` builds in-dialog requests with loose or strict routing (§12.2.1.1)
  and `check_remote_cseq` applies §12.2.2.
* `TwoXXRetransmitter`: §13.3.1.4, the UAS core retransmits its 2xx from T1 doubling to T2 until
  the ACK arrives, and gives up after 64·T1 (the caller then sends BYE).
* `SessionTimer`: RFC 4028, who refreshes, when we must refresh and when the peer's refresh is
  overdue (§10: the non-refresher sends BYE at expiry minus min(32, SE/3)).
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field

from gateway.sip.address import Peer, Transport
from gateway.sip.errors import ParseError
from gateway.sip.headers import Headers, NameAddr, parse_header_params, parse_name_addr
from gateway.sip.message import SipRequest, SipResponse
from gateway.sip.timers import TimerSettings, next_fire
from gateway.sip.uri import SipUri, Uri

DEFAULT_SIP_PORT = 5060


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(10)}@{host}"


@dataclass(slots=True)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str | None
    local_uri: NameAddr  # without tag
    remote_uri: NameAddr  # without tag
    remote_target: Uri
    route_set: list[str]
    local_cseq: int
    remote_cseq: int | None
    peer: Peer  # transport and, for TCP, the connection the dialog was set up on
    local_contact: str = ""
    peer_allows: frozenset[str] = field(default_factory=frozenset)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag or "")

    @classmethod
    def from_invite_as_uas(
        cls, invite: SipRequest, local_tag: str, peer: Peer, local_contact: str
    ) -> Dialog:
        """§12.1.1: route set = Record-Route in order; remote target = the INVITE's Contact."""
        contacts = invite.contacts
        target: Uri = contacts[0].uri if contacts else _from_uri(invite)
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=invite.from_.tag,
            local_uri=_strip_tag(invite.to),
            remote_uri=_strip_tag(invite.from_),
            remote_target=target,
            route_set=invite.headers.get_all("Record-Route"),
            local_cseq=secrets.randbelow(10_000) + 1,
            remote_cseq=invite.cseq.number,
            peer=peer,
            local_contact=local_contact,
            peer_allows=_allow_set(invite),
        )

    @classmethod
    def from_response_as_uac(
        cls, invite: SipRequest, response: SipResponse, peer: Peer, local_contact: str
    ) -> Dialog:
        """§12.1.2: route set = Record-Route reversed; remote target = the response's Contact."""
        contacts = response.contacts
        target: Uri = contacts[0].uri if contacts else invite.uri or _from_uri(invite)
        return cls(
            call_id=invite.call_id,
            local_tag=invite.from_.tag or "",
            remote_tag=response.to.tag,
            local_uri=_strip_tag(invite.from_),
            remote_uri=_strip_tag(invite.to),
            remote_target=target,
            route_set=list(reversed(response.headers.get_all("Record-Route"))),
            local_cseq=invite.cseq.number,
            remote_cseq=None,
            peer=peer,
            local_contact=local_contact,
            peer_allows=_allow_set(response),
        )

    def update_target(self, message: SipRequest | SipResponse) -> None:
        """A target refresh (re-INVITE, UPDATE or their 2xx) may change the remote target."""
        contacts = message.contacts
        if contacts and not contacts[0].wildcard:
            self.remote_target = contacts[0].uri
        if "Allow" in message.headers:
            self.peer_allows = _allow_set(message)

    def check_remote_cseq(self, request: SipRequest) -> bool:
        """§12.2.2: a CSeq lower than the last one is out of order (answer 500)."""
        number = request.cseq.number
        if request.method in ("ACK", "CANCEL"):
            return True
        if self.remote_cseq is not None and number < self.remote_cseq:
            return False
        self.remote_cseq = number
        return True

    def next_cseq(self) -> int:
        self.local_cseq += 1
        return self.local_cseq

    def create_request(
        self, method: str, via: str, *, cseq: int | None = None, body: bytes = b"",
        content_type: str | None = None, extra: list[tuple[str, str]] | None = None,
    ) -> SipRequest:
        """§12.2.1.1: build an in-dialog request; ACK and CANCEL pass their own CSeq."""
        number = cseq if cseq is not None else self.next_cseq()
        uri, routes = self._request_uri_and_routes()
        headers = Headers()
        headers.add("Via", via)
        for route in routes:
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        headers.add("From", str(self.local_uri.with_params((("tag", self.local_tag),))))
        remote_params = (("tag", self.remote_tag),) if self.remote_tag else ()
        headers.add("To", str(self.remote_uri.with_params(remote_params)))
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{number} {method}")
        if self.local_contact and method not in ("ACK", "CANCEL", "BYE"):
            headers.add("Contact", self.local_contact)
        for name, value in extra or ():
            headers.add(name, value)
        if body and content_type:
            headers.add("Content-Type", content_type)
        return SipRequest(headers=headers, body=body, method=method, uri=uri)

    def _request_uri_and_routes(self) -> tuple[Uri, list[str]]:
        if not self.route_set:
            return self.remote_target, []
        first = parse_name_addr(self.route_set[0])
        if isinstance(first.uri, SipUri) and first.uri.has_param("lr"):
            return self.remote_target, list(self.route_set)
        # Strict router (RFC 2543): it gets the Request-URI; the remote target goes last.
        return first.uri, [*self.route_set[1:], f"<{self.remote_target}>"]

    def next_hop(self) -> Peer:
        """Where in-dialog requests go: the first route, else the remote target (§8.1.2)."""
        uri = parse_name_addr(self.route_set[0]).uri if self.route_set else self.remote_target
        return hop_for_uri(uri, self.peer)


def hop_for_uri(uri: Uri, fallback: Peer) -> Peer:
    """The host, port and transport a request to `uri` goes to (no DNS: hosts are used as is)."""
    if not isinstance(uri, SipUri):
        return fallback
    host = uri.param("maddr") or uri.host
    if host.startswith("["):
        host = host[1:-1]
    transport = Transport.from_name(uri.param("transport"), fallback.transport)
    if uri.scheme == "sips":
        transport = Transport.TLS  # §26.2.2: a SIPS URI is reached over TLS, whatever else
    port = uri.port or (5061 if transport is Transport.TLS else DEFAULT_SIP_PORT)
    conn_id = fallback.conn_id if transport is fallback.transport else None
    return Peer(host, port, transport, conn_id)


def _strip_tag(addr: NameAddr) -> NameAddr:
    return addr.with_params(tuple(p for p in addr.params if p[0].lower() != "tag"))


def _from_uri(request: SipRequest) -> Uri:
    return request.from_.uri


def _allow_set(message: SipRequest | SipResponse) -> frozenset[str]:
    return frozenset(v.strip().upper() for v in message.headers.get_all("Allow"))


class TwoXXRetransmitter:
    """§13.3.1.4: resend the 2xx at T1, 2·T1, ... capped at T2, until ACK or 64·T1."""

    def __init__(self, response: SipResponse, timers: TimerSettings, now: float) -> None:
        self.response = response
        self._timers = timers
        self._interval = timers.T1
        self.next_at: float | None = now + timers.T1
        self.give_up_at = now + timers.timeout

    def next_deadline(self) -> float | None:
        return None if self.next_at is None else min(self.next_at, self.give_up_at)

    def due(self, now: float) -> bool:
        return self.next_at is not None and now >= self.next_at

    def expired(self, now: float) -> bool:
        return self.next_at is not None and now >= self.give_up_at

    def advance(self, now: float) -> None:
        self._interval = self._timers.next_interval(self._interval)
        self.next_at = next_fire(self.next_at, self._interval, now)

    def stop(self) -> None:
        self.next_at = None


class Refresher(enum.Enum):
    UAC = "uac"
    UAS = "uas"


@dataclass(frozen=True, slots=True)
class SessionExpires:
    """The Session-Expires header (RFC 4028 §4): interval and optional refresher."""

    interval: int
    refresher: Refresher | None


def parse_session_expires(message: SipRequest | SipResponse) -> SessionExpires | None:
    value = message.headers.get("Session-Expires")
    if value is None:
        return None
    delta, _, param_text = value.partition(";")
    delta = delta.strip()
    if not delta.isdigit() or len(delta) > 9:
        raise ParseError(f"bad Session-Expires {value[:40]!r}")
    params = parse_header_params(param_text) if param_text else ()
    refresher = None
    for key, val in params:
        if key.lower() == "refresher" and val is not None and val.lower() in ("uac", "uas"):
            refresher = Refresher(val.lower())
    return SessionExpires(int(delta), refresher)


def parse_min_se(message: SipRequest | SipResponse) -> int | None:
    value = message.headers.get("Min-SE")
    if value is None:
        return None
    delta = value.split(";")[0].strip()
    if not delta.isdigit() or len(delta) > 9:
        raise ParseError(f"bad Min-SE {value[:40]!r}")
    return int(delta)


class SessionTimer:
    """RFC 4028 state of one dialog. `we_refresh` decides which deadline applies."""

    def __init__(self, interval: int, we_refresh: bool, now: float) -> None:
        self.interval = interval
        self.we_refresh = we_refresh
        self.deadline = 0.0
        self.restart(now)

    def restart(self, now: float, interval: int | None = None) -> None:
        """A refresh succeeded (we sent or received its 2xx)."""
        if interval is not None:
            self.interval = interval
        if self.we_refresh:
            self.deadline = now + self.interval / 2  # §10: refresh at half the interval
        else:
            # §10: BYE "at the expiration minus the lesser of 32 seconds and one third".
            self.deadline = now + self.interval - min(32.0, self.interval / 3)

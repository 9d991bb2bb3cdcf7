"""Shared state of the SIP endpoint: configuration, the outbox, the event queue, transaction and
call tables, and the helpers the UAS (`uas.py`) and UAC (`uac.py`) halves both use.

Nothing here decides protocol behaviour beyond RFC 3261 §8.2.6 (building responses with a To tag,
Server, and the capability headers of §11) and RFC 4028 negotiation of a session interval.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from gateway.sip.address import Addr, Outgoing, Peer, Transport
from gateway.sip.dialog import (
    Dialog,
    Refresher,
    SessionExpires,
    SessionTimer,
    TwoXXRetransmitter,
    new_branch,
    new_tag,
    parse_min_se,
    parse_session_expires,
)
from gateway.sip.events import CallHandle, DialogEnded, Event, RequestHandle, SipEndReason
from gateway.sip.message import Message, SipRequest, SipResponse, make_response
from gateway.sip.parser import DEFAULT_LIMITS, Limits
from gateway.sip.timers import DEFAULT_TIMERS, TimerSettings
from gateway.sip.transaction import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ClientTransaction,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    ServerTransaction,
    TransactionKey,
)


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """What the endpoint says about itself and the limits it applies."""

    user_agent: str = "orga-sip-gateway"
    contact_user: str = "gateway"
    timers: TimerSettings = DEFAULT_TIMERS
    limits: Limits = DEFAULT_LIMITS
    allow: tuple[str, ...] = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO", "UPDATE")
    accept: tuple[str, ...] = ("application/sdp", "application/dtmf-relay", "application/dtmf")
    supported: tuple[str, ...] = ("timer",)
    min_se: int = 90  # RFC 4028 §5: Min-SE we insist on (and the smallest legal value)
    session_expires: int | None = 1800  # what our own INVITEs ask for; None: no timer
    # RFC 4028 §9: a session interval we impose on incoming calls that did not ask for one (so a
    # lost BYE cannot leave a call up forever); None: only honour what the caller asks.
    uas_session_expires: int | None = None


class SipAction(enum.Enum):
    ALLOW = "allow"
    DROP = "drop"
    RESPOND = "respond"


@dataclass(frozen=True, slots=True)
class SipVerdict:
    """A pre-dispatch decision: pass the request on, drop it silently, or answer it.

    `stateless` answers without a server transaction (RFC 3261 §8.2.7): nothing is kept and
    nothing retransmitted, so refusing a flood costs one datagram per request, not a
    transaction living 64·T1 with Timer G retransmissions each.
    """

    action: SipAction
    status: int = 0
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    stateless: bool = False

    @classmethod
    def respond(
        cls, status: int, reason: str | None = None, headers: Iterable[tuple[str, str]] = (),
        *, stateless: bool = False,
    ) -> SipVerdict:
        return cls(SipAction.RESPOND, status, reason, tuple(headers), stateless)


ALLOW = SipVerdict(SipAction.ALLOW)
DROP = SipVerdict(SipAction.DROP)


class PreDispatch(Protocol):
    """Security seam: screens every new request (not retransmissions) before any event exists."""

    def screen(self, source: Peer, request: SipRequest, now: float) -> SipVerdict: ...


class DatagramGate(Protocol):
    """Security seam before parsing: may a datagram from `host` be parsed at all?

    Parsing is the costly part of refusing a request (about a millisecond in CPython), so a
    source that is to be dropped anyway (not allowed, or flooding) is dropped here, unparsed.
    """

    def admit(self, host: str, now: float) -> bool: ...


class Role(enum.Enum):
    UAS = "uas"
    UAC = "uac"


@dataclass(slots=True, eq=False)
class CallState:
    """Everything the endpoint keeps for one call (one INVITE dialog)."""

    handle: CallHandle
    role: Role
    invite: SipRequest
    peer: Peer  # UAS: where the INVITE came from; UAC: the first hop
    dialog: Dialog | None = None
    invite_server: ServerInviteTransaction | None = None
    invite_client_key: TransactionKey | None = None
    app_ended: bool = False  # DialogEnded was emitted
    answered: bool = False  # UAS: 2xx sent; UAC: 2xx received
    acked: bool = False  # UAS: the ACK for the initial 2xx arrived
    retransmitter: TwoXXRetransmitter | None = None
    retransmit_cseq: int = 0  # the INVITE CSeq whose 2xx is being retransmitted
    retransmit_peer: Peer | None = None  # where that INVITE's responses go (§18.2.2)
    bye_pending: bool = False  # hang_up() before the ACK: BYE once it arrives (§15)
    cancel_pending: bool = False  # UAC hang_up() before any provisional (§9.1)
    provisional_seen: bool = False
    pending_offer: ServerTransaction | None = None  # re-INVITE/UPDATE waiting for the app
    ack: SipRequest | None = None  # UAC: our ACK for the 2xx, resent on 2xx retransmissions
    session: SessionTimer | None = None
    local_sdp: bytes = b""
    our_offer_pending: bool = False  # our re-INVITE/UPDATE is in progress (for 491)
    extra: dict[str, str] = field(default_factory=dict)


class RequestKind(enum.Enum):
    INVITE = "invite"  # the initial INVITE of a UAC call
    CANCEL = "cancel"
    BYE = "bye"
    REFRESH = "refresh"  # our RFC 4028 refresh
    APP = "app"  # send_request()/send_options(): the app gets RequestCompleted


@dataclass(slots=True)
class ClientContext:
    kind: RequestKind
    call: CallHandle | None
    handle: RequestHandle | None = None


class Core:
    """The tables and output queues; one per endpoint."""

    def __init__(self, config: EndpointConfig, pre_dispatch: PreDispatch | None) -> None:
        self.config = config
        self.timers = config.timers
        self.pre_dispatch = pre_dispatch
        self.outbox: list[Outgoing] = []
        self.events: deque[Event] = deque()
        self.server_txns: dict[TransactionKey, ServerTransaction] = {}
        self.client_txns: dict[TransactionKey, ClientTransaction] = {}
        self.client_ctx: dict[TransactionKey, ClientContext] = {}
        self.calls: dict[CallHandle, CallState] = {}
        self.dialogs: dict[tuple[str, str, str], CallHandle] = {}
        self.invite_calls: dict[TransactionKey, CallHandle] = {}  # server INVITE key -> call
        self.merged: dict[tuple[str, str, int], CallHandle] = {}  # (Call-ID, From tag, CSeq)
        self.local: dict[Transport, Addr] = {}
        self._next_handle = 0

    # --- identity -----------------------------------------------------------------------
    def new_handle(self) -> int:
        self._next_handle += 1
        return self._next_handle

    @property
    def issued_handles(self) -> int:
        return self._next_handle

    def local_addr(self, transport: Transport) -> Addr:
        return self.local.get(transport) or self.local.get(Transport.UDP) or ("127.0.0.1", 5060)

    def via(self, transport: Transport, branch: str | None = None) -> str:
        host, port = self.local_addr(transport)
        branch = branch or new_branch()
        return f"SIP/2.0/{transport.value} {_bracket(host)}:{port};branch={branch};rport"

    def contact(self, transport: Transport) -> str:
        host, port = self.local_addr(transport)
        suffix = "" if transport is Transport.UDP else f";transport={transport.value.lower()}"
        return f"<sip:{self.config.contact_user}@{_bracket(host)}:{port}{suffix}>"

    # --- output -------------------------------------------------------------------------
    def send(self, message: Message, peer: Peer) -> None:
        self.outbox.append(Outgoing(message.to_bytes(), peer.addr, peer.transport, peer.conn_id))

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def response(
        self, request: SipRequest, status: int, reason: str | None = None, *,
        to_tag: str | None = None, headers: Iterable[tuple[str, str]] = (),
    ) -> SipResponse:
        """§8.2.6: a response with a To tag (ours, or a fresh one) and a Server header."""
        tag = to_tag
        if tag is None and status != 100 and request.to.tag is None:
            tag = new_tag()
        response = make_response(request, status, reason, to_tag=tag)
        if status == 100 and "Timestamp" in request.headers:
            response.headers.add("Timestamp", request.headers.get("Timestamp") or "")  # §8.2.6.1
        response.headers.add("Server", self.config.user_agent)
        for name, value in headers:
            response.headers.add(name, value)
        return response

    def capability_headers(self) -> list[tuple[str, str]]:
        """§11.2: what an OPTIONS answer (and our 2xx to INVITE) advertises."""
        return [
            ("Allow", ", ".join(self.config.allow)),
            ("Accept", ", ".join(self.config.accept)),
            ("Supported", ", ".join(self.config.supported)),
        ]

    def new_server_txn(self, request: SipRequest, peer: Peer) -> ServerTransaction:
        txn: ServerTransaction
        if request.method == "INVITE":
            txn = ServerInviteTransaction(request, peer, self.timers, self.send)
        else:
            txn = ServerNonInviteTransaction(request, peer, self.timers, self.send)
        self.server_txns[txn.key] = txn
        return txn

    def respond_new(
        self, request: SipRequest, peer: Peer, status: int, now: float, reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (), to_tag: str | None = None,
    ) -> None:
        """Answer a request that has no transaction yet, creating one to absorb retransmits."""
        if request.method == "ACK":
            return
        txn = self.new_server_txn(request, peer)
        response = self.response(request, status, reason, headers=headers, to_tag=to_tag)
        txn.send_response(response, now)

    # --- calls --------------------------------------------------------------------------
    def end_call(self, call: CallState, reason: SipEndReason, status: int | None = None) -> None:
        """Emit DialogEnded once; internal work (BYE after ACK, ...) may continue."""
        if not call.app_ended:
            call.app_ended = True
            self.emit(DialogEnded(call.handle, reason, status))
        self.maybe_forget(call)

    def maybe_forget(self, call: CallState) -> None:
        """Drop a call from the tables once the app is done and nothing is left to do."""
        if not call.app_ended or call.bye_pending or call.cancel_pending:
            return
        if call.retransmitter is not None and call.retransmitter.next_at is not None:
            return
        pending_invite = call.invite_client_key in self.client_txns
        if call.role is Role.UAC and pending_invite and not call.answered:
            return  # still waiting for the final response to our (cancelled) INVITE
        self.calls.pop(call.handle, None)
        if call.dialog is not None:
            self.dialogs.pop(call.dialog.key, None)
        if call.invite_server is not None:
            self.invite_calls.pop(call.invite_server.key, None)
            invite = call.invite
            self.merged.pop((invite.call_id, invite.from_.tag or "", invite.cseq.number), None)
        call.session = None

    def register_dialog(self, call: CallState, dialog: Dialog) -> None:
        call.dialog = dialog
        self.dialogs[dialog.key] = call.handle

    # --- RFC 4028 -----------------------------------------------------------------------
    def session_answer(
        self, request: SipRequest, now: float
    ) -> tuple[list[tuple[str, str]], SessionTimer | None]:
        """Headers for our 2xx to a (re-)INVITE/UPDATE and the timer they set up (§9)."""
        offered: SessionExpires | None = parse_session_expires(request)
        if offered is None and self.config.uas_session_expires is not None:
            floor = parse_min_se(request) or 0
            offered = SessionExpires(max(self.config.uas_session_expires, floor), None)
        if offered is None:
            return [], None
        peer_supports = "timer" in {
            v.strip().lower() for v in request.headers.get_all("Supported")
        }
        refresher = offered.refresher or (Refresher.UAC if peer_supports else Refresher.UAS)
        if refresher is Refresher.UAC and not peer_supports:
            refresher = Refresher.UAS  # a UAC that does not know timers cannot refresh
        headers = [("Session-Expires", f"{offered.interval};refresher={refresher.value}")]
        if peer_supports:
            headers.append(("Require", "timer"))
        # In a response the refresher is named from the request's point of view; we are the UAS.
        timer = SessionTimer(offered.interval, refresher is Refresher.UAS, now)
        return headers, timer

    def send_via_client(
        self, call: CallState, request: SipRequest, kind: RequestKind, now: float,
        handle: RequestHandle | None = None,
    ) -> None:
        """Send an in-dialog request over a new client transaction."""
        assert call.dialog is not None
        peer = call.dialog.next_hop()
        txn: ClientTransaction
        if request.method == "INVITE":
            txn = ClientInviteTransaction(request, peer, self.timers, self.send, now)
        else:
            txn = ClientNonInviteTransaction(request, peer, self.timers, self.send, now)
        self.client_txns[txn.key] = txn
        self.client_ctx[txn.key] = ClientContext(kind, call.handle, handle)

    def send_bye(self, call: CallState, now: float) -> None:
        dialog = call.dialog
        if dialog is None:
            return
        call.bye_pending = False
        bye = dialog.create_request("BYE", self.via(dialog.next_hop().transport))
        bye.headers.add("User-Agent", self.config.user_agent)
        self.send_via_client(call, bye, RequestKind.BYE, now)
        self.dialogs.pop(dialog.key, None)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


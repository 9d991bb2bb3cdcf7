"""Shared state of the SIP endpoint: configuration, the outbox, the event queue, transaction and
call tables, and the named operations the UAS (`uas.py`) and UAC (`uac.py`) halves both use.
A call's own state machine (what may happen next) is `callstate.py`.

Nothing here decides protocol behaviour beyond RFC 3261 §8.2.6 (building responses with a To tag,
Server, and the capability headers of §11) and RFC 4028 negotiation of a session interval.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from gateway.sip.address import Addr, Outgoing, Peer, Transport
from gateway.sip.callstate import CallInput, InviteState, OfferInput, OfferState, SipCall
from gateway.sip.dialog import (
    Dialog,
    Refresher,
    SessionExpires,
    SessionTimer,
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
    transaction living 64·T1 with Timer G retransmissions each. An ALLOW may name the trunk
    the screen identified the source as; a new call's `InviteReceived` carries it, so the
    application never identifies the source a second time.
    """

    action: SipAction
    status: int = 0
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    stateless: bool = False
    trunk: str | None = None

    @classmethod
    def allow(cls, trunk: str | None = None) -> SipVerdict:
        return cls(SipAction.ALLOW, trunk=trunk)

    @classmethod
    def respond(
        cls, status: int, reason: str | None = None, headers: Iterable[tuple[str, str]] = (),
        *, stateless: bool = False,
    ) -> SipVerdict:
        return cls(SipAction.RESPOND, status, reason, tuple(headers), stateless)


ALLOW = SipVerdict(SipAction.ALLOW)
DROP = SipVerdict(SipAction.DROP)


class PreDispatch(Protocol):
    """Security seam: screens every new request (not retransmissions) before any event exists.

    `admitted` is what `DatagramGate.admit` returned for the datagram the request came in
    (None for stream transports, or without a gate): the gate's decision, passed in so the
    screen does not decide again."""

    def screen(self, source: Peer, request: SipRequest, now: float,
               admitted: object | None = None) -> SipVerdict: ...


class DatagramGate(Protocol):
    """Security seam before parsing: may a datagram from `host` be parsed at all?

    Parsing is the costly part of refusing a request (about a millisecond in CPython), so a
    source that is to be dropped anyway (not allowed, or flooding) is dropped here, unparsed:
    `admit` returns None. Anything else admits the datagram and is handed, opaque, to
    `PreDispatch.screen` with the request parsed from it.
    """

    def admit(self, host: str, now: float) -> object | None: ...


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
    """The endpoint's tables and output queues; one per endpoint.

    The tables are private: `Uas` and `Uac` change them through the named operations below
    (calls: `add_call`, `register_dialog`, `drop_dialog`, `end_call`, `settle`; transactions:
    `new_server_txn`, `respond_new`, `start_client`, `forget_client`; in-dialog sending:
    `send_in_dialog`, `send_bye`) and read them through the lookups (`call`, `call_by_dialog`,
    `call_by_invite`, `call_by_merge_key`, `server_txn`, `client`).
    """

    def __init__(self, config: EndpointConfig, pre_dispatch: PreDispatch | None) -> None:
        self.config = config
        self.timers = config.timers
        self.pre_dispatch = pre_dispatch
        self._outbox: list[Outgoing] = []
        self._events: deque[Event] = deque()
        self._server_txns: dict[TransactionKey, ServerTransaction] = {}
        self._client_txns: dict[TransactionKey, ClientTransaction] = {}
        self._client_ctx: dict[TransactionKey, ClientContext] = {}
        self._calls: dict[CallHandle, SipCall] = {}
        self._dialogs: dict[tuple[str, str, str], CallHandle] = {}
        self._invite_calls: dict[TransactionKey, CallHandle] = {}  # server INVITE key -> call
        self._merged: dict[tuple[str, str, int], CallHandle] = {}  # (Call-ID, From tag, CSeq)
        self._local: dict[Transport, Addr] = {}
        self._next_handle = 0

    # --- identity -----------------------------------------------------------------------
    def new_handle(self) -> int:
        self._next_handle += 1
        return self._next_handle

    @property
    def issued_handles(self) -> int:
        return self._next_handle

    def bind(self, transport: Transport, addr: Addr) -> None:
        self._local[transport] = addr

    def local_addr(self, transport: Transport) -> Addr:
        return self._local.get(transport) or self._local.get(Transport.UDP) or ("127.0.0.1", 5060)

    def via(self, transport: Transport, branch: str | None = None) -> str:
        host, port = self.local_addr(transport)
        branch = branch or new_branch()
        return f"SIP/2.0/{transport.value} {_bracket(host)}:{port};branch={branch};rport"

    def contact(self, transport: Transport, *, secure: bool = False) -> str:
        """Our Contact on `transport`; `secure`: a SIPS URI (RFC 3261 §12.1.1, §26.2.2), which
        implies TLS and so carries no transport parameter (RFC 5630 §3.1.1)."""
        host, port = self.local_addr(transport)
        if secure:
            return f"<sips:{self.config.contact_user}@{_bracket(host)}:{port}>"
        suffix = "" if transport is Transport.UDP else f";transport={transport.value.lower()}"
        return f"<sip:{self.config.contact_user}@{_bracket(host)}:{port}{suffix}>"

    # --- output -------------------------------------------------------------------------
    def send(self, message: Message, peer: Peer) -> None:
        self._outbox.append(Outgoing(message.to_bytes(), peer.addr, peer.transport, peer.conn_id))

    def emit(self, event: Event) -> None:
        self._events.append(event)

    def take_outgoing(self) -> list[Outgoing]:
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

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

    # --- server transactions ------------------------------------------------------------
    def server_txn(self, key: TransactionKey) -> ServerTransaction | None:
        return self._server_txns.get(key)

    def new_server_txn(self, request: SipRequest, peer: Peer) -> ServerTransaction:
        txn: ServerTransaction
        if request.method == "INVITE":
            txn = ServerInviteTransaction(request, peer, self.timers, self.send)
        else:
            txn = ServerNonInviteTransaction(request, peer, self.timers, self.send)
        self._server_txns[txn.key] = txn
        return txn

    def respond_new(
        self, request: SipRequest, peer: Peer, status: int, now: float,
        reason: str | None = None, headers: Iterable[tuple[str, str]] = (),
        to_tag: str | None = None,
    ) -> None:
        """Answer a request that has no transaction yet, creating one to absorb retransmits."""
        if request.method == "ACK":
            return
        txn = self.new_server_txn(request, peer)
        response = self.response(request, status, reason, headers=headers, to_tag=to_tag)
        txn.send_response(response, now)

    # --- client transactions ------------------------------------------------------------
    def start_client(
        self, request: SipRequest, peer: Peer, now: float, kind: RequestKind,
        call: CallHandle | None = None, handle: RequestHandle | None = None,
    ) -> ClientTransaction:
        """Send `request` over a new client transaction; its outcome is told by `kind`."""
        txn: ClientTransaction
        if request.method == "INVITE":
            txn = ClientInviteTransaction(request, peer, self.timers, self.send, now)
        else:
            txn = ClientNonInviteTransaction(request, peer, self.timers, self.send, now)
        self._client_txns[txn.key] = txn
        self._client_ctx[txn.key] = ClientContext(kind, call, handle)
        return txn

    def client(self, key: TransactionKey) -> tuple[ClientTransaction, ClientContext] | None:
        txn = self._client_txns.get(key)
        ctx = self._client_ctx.get(key)
        return None if txn is None or ctx is None else (txn, ctx)

    def forget_client(self, key: TransactionKey) -> ClientContext | None:
        self._client_txns.pop(key, None)
        return self._client_ctx.pop(key, None)

    def send_in_dialog(
        self, call: SipCall, request: SipRequest, kind: RequestKind, now: float,
        handle: RequestHandle | None = None,
    ) -> None:
        """Send an in-dialog request over a new client transaction."""
        assert call.dialog is not None
        self.start_client(request, call.dialog.next_hop(), now, kind, call.handle, handle)

    def send_bye(self, call: SipCall, now: float) -> None:
        """BYE on the call's dialog; from now on requests in that dialog are answered 481."""
        dialog = call.dialog
        if dialog is None:
            return
        bye = dialog.create_request("BYE", self.via(dialog.next_hop().transport))
        bye.headers.add("User-Agent", self.config.user_agent)
        self.send_in_dialog(call, bye, RequestKind.BYE, now)
        self.drop_dialog(call)

    # --- calls --------------------------------------------------------------------------
    def add_call(self, call: SipCall, merge_key: tuple[str, str, int] | None = None) -> None:
        """A new call; a UAS call is also found by its INVITE transaction and merge key."""
        self._calls[call.handle] = call
        if call.invite_server is not None:
            self._invite_calls[call.invite_server.key] = call.handle
        if merge_key is not None:
            self._merged[merge_key] = call.handle

    def call(self, handle: CallHandle | None) -> SipCall | None:
        return None if handle is None else self._calls.get(handle)

    def calls(self) -> list[SipCall]:
        return list(self._calls.values())

    def call_by_dialog(self, key: tuple[str, str, str]) -> SipCall | None:
        """The call whose dialog is (Call-ID, local tag, remote tag)."""
        return self.call(self._dialogs.get(key))

    def call_by_invite(self, key: TransactionKey) -> SipCall | None:
        """The UAS call created by the INVITE server transaction `key`."""
        return self.call(self._invite_calls.get(key))

    def call_by_merge_key(self, key: tuple[str, str, int]) -> SipCall | None:
        """§8.2.2.2: the call an INVITE with this (Call-ID, From tag, CSeq) already created."""
        return self.call(self._merged.get(key))

    def register_dialog(self, call: SipCall, dialog: Dialog) -> None:
        call.dialog = dialog
        self._dialogs[dialog.key] = call.handle

    def drop_dialog(self, call: SipCall) -> None:
        """The dialog is over on the wire (our BYE, or a fork replaced it)."""
        if call.dialog is not None:
            self._dialogs.pop(call.dialog.key, None)

    def dialog_registered(self, call: SipCall) -> bool:
        return call.dialog is not None and call.dialog.key in self._dialogs

    def end_call(
        self, call: SipCall, event: CallInput, reason: SipEndReason, status: int | None = None,
        *, now: float, notice: Event | None = None,
    ) -> None:
        """Step the call by `event`; when that ends it for the application, answer an offer of
        theirs it can no longer answer (487), emit `notice` (if any) and then DialogEnded,
        exactly once per call. Then forget the call if nothing is left."""
        was_live = not call.ended
        call.step(event)
        if was_live and call.ended:
            self.withdraw_their_offer(call, now)
            if notice is not None:
                self.emit(notice)
            self.emit(DialogEnded(call.handle, reason, status))
        self.settle(call)

    def withdraw_their_offer(self, call: SipCall, now: float) -> None:
        """487 for their re-INVITE/UPDATE the app has not answered: the dialog is ending, and
        its pending requests still get a response (RFC 3261 §15)."""
        if call.offer is not OfferState.THEIRS or call.dialog is None:
            return
        txn = call.close_their_offer(OfferInput.OFFER_WITHDRAWN)
        txn.send_response(self.response(txn.request, 487, to_tag=call.dialog.local_tag), now)

    def settle(self, call: SipCall) -> None:
        """Drop an ENDED call from the tables once no 2xx of ours waits for its ACK."""
        if call.state is not InviteState.ENDED or call.awaiting_ack:
            return
        self._calls.pop(call.handle, None)
        self.drop_dialog(call)
        if call.invite_server is not None:
            self._invite_calls.pop(call.invite_server.key, None)
            invite = call.invite
            self._merged.pop((invite.call_id, invite.from_.tag or "", invite.cseq.number), None)
        call.session = None

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

    # --- timers -------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """The earliest deadline of any transaction, 2xx retransmission or session timer."""
        deadlines: list[float] = []
        for stxn in self._server_txns.values():
            d = stxn.next_deadline()
            if d is not None:
                deadlines.append(d)
        for ctxn in self._client_txns.values():
            d = ctxn.next_deadline()
            if d is not None:
                deadlines.append(d)
        for call in self._calls.values():
            if call.retransmitter is not None:
                d = call.retransmitter.next_deadline()
                if d is not None:
                    deadlines.append(d)
            if call.session is not None and not call.ended:
                deadlines.append(call.session.deadline)
        return min(deadlines) if deadlines else None

    def run_server_timers(self, now: float) -> None:
        """Fire due server transaction timers; drop the transactions that ended."""
        for key, stxn in list(self._server_txns.items()):
            d = stxn.next_deadline()
            if d is not None and d <= now:
                stxn.handle_timer(now)
            if stxn.terminated:
                del self._server_txns[key]

    def run_client_timers(self, now: float) -> list[tuple[TransactionKey, bool, bool]]:
        """Fire due client transaction timers: (key, timed out, terminated) for each one that
        timed out (Timer B/F: the caller reports a 408) or ended."""
        fired: list[tuple[TransactionKey, bool, bool]] = []
        for key, ctxn in list(self._client_txns.items()):
            d = ctxn.next_deadline()
            timed_out = d is not None and d <= now and ctxn.handle_timer(now)
            if timed_out or ctxn.terminated:
                fired.append((key, timed_out, ctxn.terminated))
        return fired

    # --- introspection ------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        """Nothing of ours is in flight: no call (live or finishing), no request of ours waiting
        for its final response, no final response of ours to an INVITE waiting for its ACK."""
        if self._calls:
            return False
        if any(txn.awaiting_final for txn in self._client_txns.values()):
            return False
        return not any(
            isinstance(txn, ServerInviteTransaction) and txn.awaiting_ack
            for txn in self._server_txns.values()
        )

    def sizes(self) -> dict[str, int]:
        return {
            "server_transactions": len(self._server_txns),
            "client_transactions": len(self._client_txns),
            "calls": len(self._calls),
            "dialogs": len(self._dialogs),
            "invites": len(self._invite_calls),
            "merge_keys": len(self._merged),
        }

    @property
    def transaction_count(self) -> int:
        return len(self._server_txns) + len(self._client_txns)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host

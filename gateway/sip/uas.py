"""The UAS half of the endpoint: every request we receive (RFC 3261 §8.2, §9.2, §12.2.2, §13.3,
§14.2, §15.1.2; RFC 3311 UPDATE; RFC 6086 INFO; RFC 4028 session timers) and the commands that
answer incoming calls and offers.

Order of checks for a new request (§8.2): the transaction layer (retransmissions, the ACK for
our non-2xx), pre-dispatch policy, method (405), Require (420), then CANCEL matching (§9.2),
dialog matching (481 / §12.2.2 CSeq order), and the method's handler. What a request may do to
a call is decided by the call's state (`callstate.py`), not here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from gateway.sip.address import Peer, Transport
from gateway.sip.callstate import CallInput, InviteState, OfferInput, OfferState, Role, SipCall
from gateway.sip.core import Core, SipAction
from gateway.sip.dialog import (
    Dialog,
    TwoXXRetransmitter,
    new_tag,
    parse_session_expires,
)
from gateway.sip.errors import ParseError, UsageError
from gateway.sip.events import (
    AckReceived,
    ByeReceived,
    CallCancelled,
    CallHandle,
    InfoReceived,
    InviteReceived,
    ReinviteReceived,
    SipEndReason,
)
from gateway.sip.headers import parse_name_addr, parse_option_tags
from gateway.sip.message import SipRequest, SipResponse
from gateway.sip.routing import response_peer, stamp_received
from gateway.sip.transaction import (
    ServerInviteState,
    ServerInviteTransaction,
    ServerTransaction,
    server_key,
)

_InDialogHandler = Callable[["Uas", SipCall, SipRequest, Peer, float], None]


class Uas:
    def __init__(self, core: Core) -> None:
        self.core = core

    # --- incoming requests -------------------------------------------------------------
    def receive_request(self, request: SipRequest, source: Peer, now: float,
                        admitted: object | None = None) -> None:
        stamp_received(request, source)
        reply = response_peer(request.top_via, source)
        if self._absorbed(request, now):
            return
        screened_in, trunk = self._screen(request, source, reply, now, admitted)
        if not screened_in:
            return
        refusal = self._refusal(request)
        if refusal is not None:
            status, headers = refusal
            self.core.respond_new(request, reply, status, now, headers=headers)
        elif request.method == "CANCEL":
            self._on_cancel(request, reply, now)
        elif request.to.tag is not None:
            self._in_dialog(request, reply, now)
        elif request.method == "INVITE":
            self._on_invite(request, source, reply, now, trunk)
        elif request.method == "OPTIONS":
            self.core.respond_new(request, reply, 200, now, headers=self.core.capability_headers())
        else:
            self.core.respond_new(request, reply, 481, now)  # BYE/INFO/UPDATE outside a dialog

    def _absorbed(self, request: SipRequest, now: float) -> bool:
        """A retransmission (never reaches the app), or the ACK for our non-2xx final."""
        txn = self.core.server_txn(server_key(request))
        if txn is None:
            return False
        absorbed = txn.receive_request(request, now)
        return request.method != "ACK" or absorbed

    def _screen(self, request: SipRequest, source: Peer, reply: Peer, now: float,
                admitted: object | None) -> tuple[bool, str | None]:
        """The pre-dispatch seam: (False, None) when it dropped or answered the request, else
        (True, the trunk it matched)."""
        core = self.core
        if core.pre_dispatch is None:
            return True, None
        verdict = core.pre_dispatch.screen(source, request, now, admitted)
        if verdict.action is SipAction.ALLOW:
            return True, verdict.trunk
        if verdict.action is SipAction.RESPOND:
            if not verdict.stateless:
                core.respond_new(request, reply, verdict.status, now, verdict.reason,
                                 verdict.headers)
            elif request.method != "ACK":
                core.send(core.response(request, verdict.status, verdict.reason,
                                        headers=verdict.headers), reply)
        return False, None

    def _refusal(self, request: SipRequest) -> tuple[int, list[tuple[str, str]]] | None:
        """405 for a method we do not allow, 420 for a Require we do not support (§8.2.2)."""
        config = self.core.config
        if request.method not in config.allow:
            return 405, [("Allow", _allow(self.core))]
        if request.method in ("ACK", "CANCEL"):
            return None
        required = parse_option_tags(request.headers.get_all("Require"))
        unknown = [t for t in required if t.lower() not in config.supported]
        return (420, [("Unsupported", ", ".join(unknown))]) if unknown else None

    def _on_invite(self, request: SipRequest, source: Peer, reply: Peer, now: float,
                   trunk: str | None) -> None:
        core = self.core
        merge_key = (request.call_id, request.from_.tag or "", request.cseq.number)
        earlier = core.call_by_merge_key(merge_key)
        if earlier is not None and earlier.invite_server is not None:
            # §8.2.2.2: the same INVITE reached us again by another path (a forking proxy).
            core.respond_new(request, reply, 482, now)
            return
        txn = core.new_server_txn(request, reply)
        assert isinstance(txn, ServerInviteTransaction)
        too_small = self._session_too_small(request)
        if too_small is not None:
            txn.send_response(core.response(request, 422, headers=too_small), now)
            return
        txn.send_response(core.response(request, 100), now)  # at once: stops Timer A
        call = SipCall(CallHandle(core.new_handle()), Role.UAS, request, source,
                       InviteState.INCOMING, invite_server=txn)
        core.add_call(call, merge_key)
        core.register_dialog(call, Dialog.from_invite_as_uas(
            request, new_tag(), source,
            core.contact(source.transport, secure=_sips_dialog(request, source))
        ))
        core.emit(InviteReceived(call.handle, request, source, _sdp(request), trunk))

    def _session_too_small(self, request: SipRequest) -> list[tuple[str, str]] | None:
        """RFC 4028 §8.1: an interval below our Min-SE is refused with 422 and our Min-SE."""
        offered = parse_session_expires(request)
        if offered is not None and offered.interval < self.core.config.min_se:
            return [("Min-SE", str(self.core.config.min_se))]
        return None

    def _on_cancel(self, request: SipRequest, reply: Peer, now: float) -> None:
        """§9.2: 200 for the CANCEL, then 487 for the INVITE if it is still pending."""
        core = self.core
        invite_txn = core.server_txn(server_key(request, method="INVITE"))
        if not isinstance(invite_txn, ServerInviteTransaction):
            core.respond_new(request, reply, 481, now)
            return
        call = core.call_by_invite(invite_txn.key)
        tag = call.dialog.local_tag if call is not None and call.dialog is not None else None
        core.respond_new(request, reply, 200, now, to_tag=tag)  # same To tag as the INVITE's
        if invite_txn.state is not ServerInviteState.PROCEEDING:
            return  # already answered: the CANCEL has no effect
        invite_txn.send_response(core.response(invite_txn.request, 487, to_tag=tag), now)
        if call is not None:
            core.end_call(call, CallInput.CANCEL_RECEIVED, SipEndReason.CANCELLED, 487,
                          now=now, notice=CallCancelled(call.handle))
            return
        # A cancelled re-INVITE: its offer is withdrawn, the session stays as it was.
        call = core.call_by_dialog(
            (request.call_id, request.to.tag or "", request.from_.tag or "")
        )
        if call is not None and call.their_offer is invite_txn:
            call.close_their_offer(OfferInput.OFFER_WITHDRAWN)

    def _in_dialog(self, request: SipRequest, reply: Peer, now: float) -> None:
        """A request with a To tag: find its dialog, check CSeq order, hand it to its method."""
        core = self.core
        call = core.call_by_dialog(
            (request.call_id, request.to.tag or "", request.from_.tag or "")
        )
        if call is None or call.dialog is None:
            if request.method != "ACK":
                core.respond_new(request, reply, 481, now)
            return
        if request.method == "ACK":
            self._on_ack(call, request, now)
        elif not call.dialog.check_remote_cseq(request):
            core.respond_new(request, reply, 500, now, "CSeq Out of Order")
        else:
            _IN_DIALOG.get(request.method, Uas._on_unexpected)(self, call, request, reply, now)

    def _on_bye(self, call: SipCall, request: SipRequest, reply: Peer, now: float) -> None:
        core = self.core
        core.respond_new(request, reply, 200, now)
        invite = call.invite_server
        if invite is not None and not invite.final_sent:
            # BYE on an early dialog ends the INVITE too (§15.1.2).
            invite.send_response(self._to_dialog(call, invite.request, 487), now)
        core.withdraw_their_offer(call, now)  # 487 for an offer the app had not answered
        if call.retransmitter is not None:
            call.retransmitter.stop()
        core.end_call(call, CallInput.BYE_RECEIVED, SipEndReason.REMOTE_BYE,
                      now=now, notice=ByeReceived(call.handle, request))

    def _on_offer(self, call: SipCall, request: SipRequest, reply: Peer, now: float) -> None:
        """re-INVITE or UPDATE (§14.2, RFC 3311 §5.2): an offer the app answers, or a refresh."""
        core = self.core
        assert call.dialog is not None
        if call.offer is OfferState.THEIRS:
            core.respond_new(request, reply, 500, now, headers=[("Retry-After", "1")])
            return
        if call.offer is OfferState.OURS or (
            request.method == "INVITE" and call.state is not InviteState.CONFIRMED
        ):
            # Our own offer is in flight, the dialog is early, or our last 2xx to an INVITE is
            # not ACKed yet: the peer retries after a random delay (§14.1).
            core.respond_new(request, reply, 491, now)
            return
        too_small = self._session_too_small(request)
        if too_small is not None:
            core.respond_new(request, reply, 422, now, headers=too_small)
            return
        txn = core.new_server_txn(request, reply)
        if request.method == "INVITE":
            txn.send_response(core.response(request, 100), now)
        call.dialog.update_target(request)
        if request.method == "UPDATE" and not request.body:
            self._answer(call, txn, None, now)  # a pure session refresh
        elif call.ended:
            txn.send_response(self._to_dialog(call, request, 481), now)
        else:
            call.open_their_offer(txn)
            core.emit(ReinviteReceived(call.handle, request.method, _sdp(request), request))

    def _on_info(self, call: SipCall, request: SipRequest, reply: Peer, now: float) -> None:
        self.core.respond_new(request, reply, 200, now)
        if not call.ended:
            self.core.emit(
                InfoReceived(call.handle, request.content_type, request.body, request)
            )

    def _on_options(self, call: SipCall, request: SipRequest, reply: Peer, now: float) -> None:
        self.core.respond_new(request, reply, 200, now, headers=self.core.capability_headers())

    def _on_unexpected(self, call: SipCall, request: SipRequest, reply: Peer, now: float) -> None:
        self.core.respond_new(request, reply, 405, now, headers=[("Allow", _allow(self.core))])

    def _on_ack(self, call: SipCall, request: SipRequest, now: float) -> None:
        """The ACK for our 2xx ends its retransmissions (§13.3.1.4); others are duplicates."""
        if not call.awaiting_ack or request.cseq.number != call.retransmit_cseq:
            return  # a duplicate ACK, or one for some other INVITE
        assert call.retransmitter is not None
        call.retransmitter.stop()
        before = call.state
        call.step(CallInput.ACK)
        if before is InviteState.BYE_AFTER_ACK:
            self.core.send_bye(call, now)  # we hung up while waiting for this ACK (§15)
        elif not call.ended:
            self.core.emit(AckReceived(call.handle, _sdp(request)))
        self.core.settle(call)

    # --- commands -------------------------------------------------------------------------
    def ring(self, call: SipCall, now: float, sdp: bytes | None) -> None:
        call.step(CallInput.RING)
        txn = self._invite(call)
        assert call.dialog is not None
        response = self._to_dialog(
            call, txn.request, 183 if sdp else 180,
            headers=[("Contact", call.dialog.local_contact)],
        )
        if sdp:
            response.headers.add("Content-Type", "application/sdp")
            response.body = sdp
        txn.send_response(response, now)

    def answer(
        self, call: SipCall, sdp: bytes, now: float, headers: Iterable[tuple[str, str]]
    ) -> None:
        call.step(CallInput.ANSWER)
        self._answer(call, self._invite(call), sdp, now, headers)

    def _answer(
        self, call: SipCall, txn: ServerTransaction, sdp: bytes | None, now: float,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Send a 2xx to an INVITE or UPDATE; an INVITE's 2xx is retransmitted until ACK."""
        core = self.core
        request = txn.request
        dialog = call.dialog
        assert dialog is not None
        session_headers, session = core.session_answer(request, now)
        response = self._to_dialog(
            call, request, 200,
            headers=[("Contact", dialog.local_contact), *core.capability_headers(),
                     *session_headers, *headers],
        )
        if sdp is not None:
            response.headers.add("Content-Type", "application/sdp")
            response.body = sdp
            call.local_sdp = sdp
        txn.send_response(response, now)
        if session is not None:
            call.session = session
        elif call.session is not None and request.method in ("INVITE", "UPDATE"):
            call.session.restart(now)
        if request.method == "INVITE":
            call.retransmitter = TwoXXRetransmitter(response, core.timers, now)
            call.retransmit_cseq = request.cseq.number
            call.retransmit_peer = txn.peer

    def reject(
        self, call: SipCall, status: int, now: float, reason: str | None,
        headers: Iterable[tuple[str, str]],
    ) -> None:
        if not 300 <= status <= 699:
            raise UsageError(f"reject needs a 3xx-6xx status, not {status}")
        call.require(CallInput.REJECT)
        txn = self._invite(call)
        txn.send_response(self._to_dialog(call, txn.request, status, reason, headers), now)
        self.core.end_call(call, CallInput.REJECT, SipEndReason.REJECTED, status, now=now)

    def answer_offer(
        self, call: SipCall, sdp: bytes | None, now: float, headers: Iterable[tuple[str, str]]
    ) -> None:
        txn = call.close_their_offer(OfferInput.ANSWER_OFFER)
        if txn.request.method == "INVITE":
            call.step(CallInput.REINVITE_ANSWERED)
        self._answer(call, txn, sdp, now, headers)

    def reject_offer(
        self, call: SipCall, status: int, now: float, reason: str | None,
        headers: Iterable[tuple[str, str]],
    ) -> None:
        if not 300 <= status <= 699:
            raise UsageError(f"reject_offer needs a 3xx-6xx status, not {status}")
        txn = call.close_their_offer(OfferInput.REJECT_OFFER)
        txn.send_response(self._to_dialog(call, txn.request, status, reason, headers), now)

    def hang_up(self, call: SipCall, now: float) -> None:
        """End a UAS call the way its state requires (§15)."""
        if call.state is InviteState.INCOMING:
            self.reject(call, 480, now, None, ())
            return
        self.core.withdraw_their_offer(call, now)  # 487 before our BYE
        if call.state is not InviteState.ANSWERED:
            self.core.send_bye(call, now)
        # In ANSWERED the table moves to BYE_AFTER_ACK: no BYE before the ACK (§15).
        self.core.end_call(call, CallInput.HANG_UP, SipEndReason.LOCAL_BYE, now=now)

    # --- timers ---------------------------------------------------------------------------
    def retransmit_2xx(self, call: SipCall, now: float) -> None:
        """§13.3.1.4: resend the 2xx; after 64·T1 without ACK, end the dialog with BYE."""
        retransmitter = call.retransmitter
        if retransmitter is None:
            return
        if retransmitter.expired(now):
            # §13.3.1.4 (and §14.2 for re-INVITEs): no ACK in 64·T1, so end the session.
            retransmitter.stop()
            if self.core.dialog_registered(call):  # no BYE was sent or received yet
                self.core.send_bye(call, now)
            self.core.end_call(call, CallInput.ACK_TIMEOUT, SipEndReason.ACK_TIMEOUT, now=now)
            return
        if retransmitter.due(now):
            self.core.send(retransmitter.response, call.retransmit_peer or call.peer)
            retransmitter.advance(now)

    # --- helpers --------------------------------------------------------------------------
    def _invite(self, call: SipCall) -> ServerInviteTransaction:
        txn = call.invite_server
        if call.role is not Role.UAS or txn is None:
            raise UsageError("not an incoming call")
        return txn

    def _to_dialog(
        self, call: SipCall, request: SipRequest, status: int, reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> SipResponse:
        """A response carrying our tag of the call's dialog."""
        assert call.dialog is not None
        return self.core.response(request, status, reason, to_tag=call.dialog.local_tag,
                                  headers=headers)


_IN_DIALOG: dict[str, _InDialogHandler] = {
    "BYE": Uas._on_bye,
    "INVITE": Uas._on_offer,
    "UPDATE": Uas._on_offer,
    "INFO": Uas._on_info,
    "OPTIONS": Uas._on_options,
}


def _sdp(request: SipRequest) -> bytes | None:
    if request.body and (request.content_type in (None, "application/sdp")):
        return request.body
    return None


def _sips_dialog(request: SipRequest, source: Peer) -> bool:
    """§12.1.1: a dialog set up with a SIPS Request-URI, or a SIPS top Record-Route (else
    Contact), gets a SIPS Contact from us — when it really arrived over TLS."""
    if source.transport is not Transport.TLS:
        return False
    if request.uri is not None and request.uri.scheme == "sips":
        return True
    routes = request.headers.get_all("Record-Route")
    first = routes[0] if routes else request.headers.get("Contact")
    if not first:
        return False
    try:
        return parse_name_addr(first).uri.scheme == "sips"
    except ParseError:
        return False


def _allow(core: Core) -> str:
    return ", ".join(core.config.allow)

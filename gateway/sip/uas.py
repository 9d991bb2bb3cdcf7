"""The UAS half of the endpoint: every request we receive (RFC 3261 §8.2, §9.2, §12.2.2, §13.3,
§14.2, §15.1.2; RFC 3311 UPDATE; RFC 6086 INFO; RFC 4028 session timers) and the commands that
answer incoming calls and offers.

Order of checks for a new request (§8.2): pre-dispatch policy, method (405), Require (420),
then CANCEL matching (§9.2), dialog matching (481 / §12.2.2 CSeq order), and method handling.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.sip.address import Peer
from gateway.sip.core import CallState, Core, Role, SipAction
from gateway.sip.dialog import (
    Dialog,
    DialogState,
    TwoXXRetransmitter,
    new_tag,
    parse_session_expires,
)
from gateway.sip.errors import UsageError
from gateway.sip.events import (
    AckReceived,
    ByeReceived,
    CallCancelled,
    CallHandle,
    InfoReceived,
    InviteReceived,
    NotifyReceived,
    ReinviteReceived,
    SipEndReason,
)
from gateway.sip.headers import parse_option_tags
from gateway.sip.message import SipRequest
from gateway.sip.routing import response_peer, stamp_received
from gateway.sip.transaction import (
    ServerInviteState,
    ServerInviteTransaction,
    ServerTransaction,
    server_key,
)


class Uas:
    def __init__(self, core: Core) -> None:
        self.core = core

    # --- incoming requests -------------------------------------------------------------
    def receive_request(self, request: SipRequest, source: Peer, now: float) -> None:
        core = self.core
        stamp_received(request, source)
        reply = response_peer(request.top_via, source)
        key = server_key(request)
        txn = core.server_txns.get(key)
        if txn is not None:
            if request.method != "ACK":
                txn.receive_request(request, now)  # a retransmission: never reaches the app
                return
            if txn.receive_request(request, now):
                return  # the ACK for our non-2xx final response
        if core.pre_dispatch is not None:
            verdict = core.pre_dispatch.screen(source, request, now)
            if verdict.action is SipAction.DROP:
                return
            if verdict.action is SipAction.RESPOND:
                if verdict.stateless:
                    if request.method != "ACK":
                        core.send(core.response(request, verdict.status, verdict.reason,
                                                headers=verdict.headers), reply)
                else:
                    core.respond_new(
                        request, reply, verdict.status, now, verdict.reason, verdict.headers
                    )
                return
        if request.method not in core.config.allow:
            core.respond_new(request, reply, 405, now, headers=[("Allow", _allow(core))])
            return
        if request.method not in ("ACK", "CANCEL"):
            required = parse_option_tags(request.headers.get_all("Require"))
            unknown = [t for t in required if t.lower() not in core.config.supported]
            if unknown:
                core.respond_new(
                    request, reply, 420, now, headers=[("Unsupported", ", ".join(unknown))]
                )
                return
        if request.method == "CANCEL":
            self._on_cancel(request, reply, now)
        elif request.to.tag is not None:
            self._in_dialog(request, source, reply, now)
        elif request.method == "INVITE":
            self._on_invite(request, source, reply, now)
        elif request.method == "OPTIONS":
            core.respond_new(request, reply, 200, now, headers=core.capability_headers())
        elif request.method != "ACK":
            core.respond_new(request, reply, 481, now)  # BYE/INFO/UPDATE outside a dialog

    def _on_invite(self, request: SipRequest, source: Peer, reply: Peer, now: float) -> None:
        core = self.core
        merge_key = (request.call_id, request.from_.tag or "", request.cseq.number)
        earlier = core.calls.get(core.merged.get(merge_key, CallHandle(0)))
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
        handle = CallHandle(core.new_handle())
        dialog = Dialog.from_invite_as_uas(
            request, new_tag(), source, core.contact(source.transport)
        )
        call = CallState(handle, Role.UAS, request, source, invite_server=txn)
        core.calls[handle] = call
        core.register_dialog(call, dialog)
        core.invite_calls[txn.key] = handle
        core.merged[merge_key] = handle
        core.emit(InviteReceived(handle, request, source, _sdp(request)))

    def _session_too_small(self, request: SipRequest) -> list[tuple[str, str]] | None:
        """RFC 4028 §8.1: an interval below our Min-SE is refused with 422 and our Min-SE."""
        offered = parse_session_expires(request)
        if offered is not None and offered.interval < self.core.config.min_se:
            return [("Min-SE", str(self.core.config.min_se))]
        return None

    def _on_cancel(self, request: SipRequest, reply: Peer, now: float) -> None:
        """§9.2: 200 for the CANCEL, then 487 for the INVITE if it is still pending."""
        core = self.core
        invite_txn = core.server_txns.get(server_key(request, method="INVITE"))
        if not isinstance(invite_txn, ServerInviteTransaction):
            core.respond_new(request, reply, 481, now)
            return
        handle = core.invite_calls.get(invite_txn.key)
        call = core.calls.get(handle) if handle is not None else None
        tag = call.dialog.local_tag if call is not None and call.dialog is not None else None
        core.respond_new(request, reply, 200, now, to_tag=tag)  # same To tag as the INVITE's
        if invite_txn.state is not ServerInviteState.PROCEEDING:
            return  # already answered: the CANCEL has no effect
        invite_txn.send_response(core.response(invite_txn.request, 487, to_tag=tag), now)
        if call is None:
            return
        if call.invite_server is invite_txn:
            if not call.app_ended:
                core.emit(CallCancelled(call.handle))
            core.end_call(call, SipEndReason.CANCELLED, 487)
        elif call.pending_offer is invite_txn:
            call.pending_offer = None  # a cancelled re-INVITE: the session stays as it was

    def _in_dialog(self, request: SipRequest, source: Peer, reply: Peer, now: float) -> None:
        core = self.core
        key = (request.call_id, request.to.tag or "", request.from_.tag or "")
        handle = core.dialogs.get(key)
        call = core.calls.get(handle) if handle is not None else None
        if call is None or call.dialog is None:
            if request.method != "ACK":
                core.respond_new(request, reply, 481, now)
            return
        dialog = call.dialog
        if request.method == "ACK":
            self._on_ack(call, request, now)
            return
        if not dialog.check_remote_cseq(request):
            core.respond_new(request, reply, 500, now, "CSeq Out of Order")
            return
        if request.method == "BYE":
            core.respond_new(request, reply, 200, now)
            if call.invite_server is not None and not call.invite_server.final_sent:
                # BYE on an early dialog ends the INVITE too (§15.1.2).
                call.invite_server.send_response(
                    core.response(call.invite_server.request, 487, to_tag=dialog.local_tag), now
                )
            if call.pending_offer is not None:  # a re-INVITE/UPDATE the app had not answered
                call.pending_offer.send_response(
                    core.response(call.pending_offer.request, 487, to_tag=dialog.local_tag), now
                )
                call.pending_offer = None
            if call.retransmitter is not None:
                call.retransmitter.stop()
            call.bye_pending = False
            if not call.app_ended:
                core.emit(ByeReceived(call.handle, request))
            core.end_call(call, SipEndReason.REMOTE_BYE)
        elif request.method in ("INVITE", "UPDATE"):
            self._on_offer(call, request, reply, now)
        elif request.method == "INFO":
            core.respond_new(request, reply, 200, now)
            if not call.app_ended:
                core.emit(InfoReceived(call.handle, request.content_type, request.body, request))
        elif request.method == "NOTIFY":  # RFC 3515 §2.4.4: our REFER's implicit subscription
            core.respond_new(request, reply, 200, now)
            if not call.app_ended:
                core.emit(NotifyReceived(call.handle, request.headers.get("Event"),
                                         request.content_type, request.body, request))
        elif request.method == "OPTIONS":
            core.respond_new(request, reply, 200, now, headers=core.capability_headers())
        else:
            core.respond_new(request, reply, 405, now, headers=[("Allow", _allow(core))])

    def _on_offer(self, call: CallState, request: SipRequest, reply: Peer, now: float) -> None:
        """re-INVITE or UPDATE (§14.2, RFC 3311 §5.2): an offer the app answers, or a refresh."""
        core = self.core
        assert call.dialog is not None
        if call.pending_offer is not None:
            core.respond_new(request, reply, 500, now, headers=[("Retry-After", "1")])
            return
        awaiting_ack = call.retransmitter is not None and call.retransmitter.next_at is not None
        if call.our_offer_pending or (
            request.method == "INVITE"
            and (call.dialog.state is not DialogState.CONFIRMED or awaiting_ack)
        ):
            # Our own offer is in flight, or our last 2xx to an INVITE is not ACKed yet: the
            # peer retries after a random delay (§14.1), and our 2xx bookkeeping stays simple.
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
            self._answer(call, txn.request, txn, None, now)  # a pure session refresh
            return
        call.pending_offer = txn
        if call.app_ended:
            txn.send_response(core.response(request, 481, to_tag=call.dialog.local_tag), now)
            call.pending_offer = None
            return
        core.emit(ReinviteReceived(call.handle, request.method, _sdp(request), request))

    def _on_ack(self, call: CallState, request: SipRequest, now: float) -> None:
        retransmitter = call.retransmitter
        if retransmitter is None or retransmitter.next_at is None:
            return  # a duplicate ACK
        if request.cseq.number != call.retransmit_cseq:
            return  # an ACK for some other INVITE
        retransmitter.stop()
        first = not call.acked
        call.acked = True
        if call.bye_pending:
            self.core.send_bye(call, now)
            self.core.maybe_forget(call)
            return
        if not call.app_ended:
            self.core.emit(AckReceived(call.handle, _sdp(request)))
        elif first:
            self.core.maybe_forget(call)

    # --- commands -------------------------------------------------------------------------
    def ring(self, call: CallState, now: float, sdp: bytes | None) -> None:
        txn = self._pending_invite(call)
        assert call.dialog is not None
        status = 183 if sdp else 180
        response = self.core.response(
            txn.request, status, to_tag=call.dialog.local_tag,
            headers=[("Contact", call.dialog.local_contact)],
        )
        if sdp:
            response.headers.add("Content-Type", "application/sdp")
            response.body = sdp
        txn.send_response(response, now)

    def answer(
        self, call: CallState, sdp: bytes, now: float, headers: Iterable[tuple[str, str]]
    ) -> None:
        txn = self._pending_invite(call)
        self._answer(call, txn.request, txn, sdp, now, headers)
        call.answered = True
        assert call.dialog is not None
        call.dialog.state = DialogState.CONFIRMED

    def _answer(
        self, call: CallState, request: SipRequest, txn: ServerTransaction, sdp: bytes | None,
        now: float,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Send a 2xx to an INVITE or UPDATE; an INVITE's 2xx is retransmitted until ACK."""
        core = self.core
        dialog = call.dialog
        assert dialog is not None
        session_headers, session = core.session_answer(request, now)
        response = core.response(
            request, 200, to_tag=dialog.local_tag,
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
        self, call: CallState, status: int, now: float, reason: str | None,
        headers: Iterable[tuple[str, str]],
    ) -> None:
        if not 300 <= status <= 699:
            raise UsageError(f"reject needs a 3xx-6xx status, not {status}")
        txn = self._pending_invite(call)
        assert call.dialog is not None
        txn.send_response(
            self.core.response(txn.request, status, reason, to_tag=call.dialog.local_tag,
                               headers=headers), now,
        )
        self.core.end_call(call, SipEndReason.REJECTED, status)

    def answer_offer(
        self, call: CallState, sdp: bytes | None, now: float, headers: Iterable[tuple[str, str]]
    ) -> None:
        txn = call.pending_offer
        if txn is None:
            raise UsageError("no re-INVITE or UPDATE is waiting for an answer")
        call.pending_offer = None
        self._answer(call, txn.request, txn, sdp, now, headers)

    def reject_offer(
        self, call: CallState, status: int, now: float, reason: str | None,
        headers: Iterable[tuple[str, str]],
    ) -> None:
        txn = call.pending_offer
        if txn is None:
            raise UsageError("no re-INVITE or UPDATE is waiting for an answer")
        if not 300 <= status <= 699:
            raise UsageError(f"reject_offer needs a 3xx-6xx status, not {status}")
        call.pending_offer = None
        assert call.dialog is not None
        txn.send_response(
            self.core.response(txn.request, status, reason, to_tag=call.dialog.local_tag,
                               headers=headers), now,
        )

    def hang_up(self, call: CallState, now: float) -> None:
        """End a UAS call the way its state requires (§15)."""
        core = self.core
        if not call.answered:
            self.reject(call, 480, now, None, ())
            return
        if call.pending_offer is not None:
            self.reject_offer(call, 487, now, None, ())
        if not call.acked and call.retransmitter is not None and call.retransmitter.next_at:
            call.bye_pending = True  # §15: no BYE before the ACK (or its timeout)
        else:
            core.send_bye(call, now)
        core.end_call(call, SipEndReason.LOCAL_BYE)

    # --- timers ---------------------------------------------------------------------------
    def retransmit_2xx(self, call: CallState, now: float) -> None:
        """§13.3.1.4: resend the 2xx; after 64·T1 without ACK, end the dialog with BYE."""
        retransmitter = call.retransmitter
        if retransmitter is None:
            return
        if retransmitter.expired(now):
            # §13.3.1.4 (and §14.2 for re-INVITEs): no ACK in 64·T1, so end the session.
            retransmitter.stop()
            call.bye_pending = False
            if call.dialog is not None and call.dialog.key in self.core.dialogs:
                self.core.send_bye(call, now)
            self.core.end_call(call, SipEndReason.ACK_TIMEOUT)
            return
        if retransmitter.due(now):
            self.core.send(retransmitter.response, call.retransmit_peer or call.peer)
            retransmitter.advance(now)

    def _pending_invite(self, call: CallState) -> ServerInviteTransaction:
        txn = call.invite_server
        if call.role is not Role.UAS or txn is None:
            raise UsageError("not an incoming call")
        if txn.final_sent or call.app_ended:
            raise UsageError("the INVITE was already answered or the call has ended")
        return txn


def _sdp(request: SipRequest) -> bytes | None:
    if request.body and (request.content_type in (None, "application/sdp")):
        return request.body
    return None


def _allow(core: Core) -> str:
    return ", ".join(core.config.allow)


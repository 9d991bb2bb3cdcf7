"""The UAC half of the endpoint: requests we originate and the responses to them (RFC 3261 §8.1,
§9.1 CANCEL, §12.1.2 dialog from a response, §13.2.2 ACK for 2xx, §12.2.1.2 ending a dialog on
481/408; RFC 4028 refreshes when we are the refresher).
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.sip.address import Peer, Transport
from gateway.sip.auth import answer_challenge
from gateway.sip.callstate import (
    DIALOG_UP_STATES,
    CallInput,
    InviteState,
    OfferInput,
    OfferState,
    Role,
    SipCall,
)
from gateway.sip.core import ClientContext, Core, RequestKind
from gateway.sip.dialog import (
    Dialog,
    Refresher,
    SessionTimer,
    hop_for_uri,
    new_call_id,
    new_tag,
    parse_min_se,
    parse_session_expires,
)
from gateway.sip.errors import UsageError
from gateway.sip.events import (
    ByeCompleted,
    CallAnswered,
    CallFailed,
    CallHandle,
    ProvisionalReceived,
    RequestCompleted,
    RequestHandle,
    SipEndReason,
)
from gateway.sip.headers import Headers, parse_name_addr
from gateway.sip.message import SipRequest, SipResponse
from gateway.sip.transaction import (
    ClientInviteTransaction,
    ClientTransaction,
    client_key,
)
from gateway.sip.uri import Uri, parse_uri


class Uac:
    def __init__(self, core: Core) -> None:
        self.core = core

    # --- commands ------------------------------------------------------------------------
    def invite(
        self, target: str | Uri, now: float, *, sdp: bytes | None, from_uri: str,
        to_uri: str | None, peer: Peer | None, headers: Iterable[tuple[str, str]],
        credentials: tuple[str, str] | None = None,
    ) -> CallHandle:
        core = self.core
        uri = parse_uri(target) if isinstance(target, str) else target
        hop = peer or hop_for_uri(uri, Peer("127.0.0.1", 5060, Transport.UDP))
        local_host = core.local_addr(hop.transport)[0]
        request = self._new_request(
            "INVITE", uri, hop, from_uri, to_uri, new_call_id(local_host), 1, headers
        )
        request.headers.add("Contact", core.contact(hop.transport))
        for name, value in core.capability_headers():
            request.headers.add(name, value)
        if core.config.session_expires is not None:
            request.headers.add("Session-Expires", str(core.config.session_expires))
            request.headers.add("Min-SE", str(core.config.min_se))
        if sdp is not None:
            request.headers.add("Content-Type", "application/sdp")
            request.body = sdp
        handle = CallHandle(core.new_handle())
        txn = core.start_client(request, hop, now, RequestKind.INVITE, handle)
        core.add_call(SipCall(handle, Role.UAC, request, hop, InviteState.CALLING,
                              invite_client_key=txn.key, local_sdp=sdp or b"",
                              credentials=credentials))
        return handle

    def send_options(
        self, target: str | Uri, now: float, *, from_uri: str, peer: Peer | None,
    ) -> RequestHandle:
        core = self.core
        uri = parse_uri(target) if isinstance(target, str) else target
        hop = peer or hop_for_uri(uri, Peer("127.0.0.1", 5060, Transport.UDP))
        call_id = new_call_id(core.local_addr(hop.transport)[0])
        request = self._new_request("OPTIONS", uri, hop, from_uri, None, call_id, 1, ())
        request.headers.add("Accept", "application/sdp")
        handle = RequestHandle(core.new_handle())
        core.start_client(request, hop, now, RequestKind.APP, None, handle)
        return handle

    def _new_request(
        self, method: str, uri: Uri, hop: Peer, from_uri: str, to_uri: str | None,
        call_id: str, cseq: int, headers: Iterable[tuple[str, str]],
    ) -> SipRequest:
        """§8.1.1: the headers every out-of-dialog request carries."""
        core = self.core
        from_addr = parse_name_addr(from_uri)
        to_addr = parse_name_addr(to_uri) if to_uri else parse_name_addr(f"<{uri}>")
        h = Headers()
        h.add("Via", core.via(hop.transport))
        h.add("Max-Forwards", "70")
        h.add("From", str(from_addr.with_params((*from_addr.params, ("tag", new_tag())))))
        h.add("To", str(to_addr))
        h.add("Call-ID", call_id)
        h.add("CSeq", f"{cseq} {method}")
        h.add("User-Agent", core.config.user_agent)
        for name, value in headers:
            h.add(name, value)
        return SipRequest(headers=h, method=method, uri=uri)

    def send_request(
        self, call: SipCall, method: str, now: float, *, body: bytes,
        content_type: str | None, headers: Iterable[tuple[str, str]],
        kind: RequestKind = RequestKind.APP,
    ) -> RequestHandle:
        """An in-dialog request (INFO, UPDATE, re-INVITE, OPTIONS, ...)."""
        core = self.core
        dialog = call.dialog
        if dialog is None or call.state not in DIALOG_UP_STATES:
            raise UsageError("the call has no confirmed dialog")
        if method in ("ACK", "CANCEL", "BYE"):
            raise UsageError(f"{method} is sent by the endpoint itself")
        if method in ("INVITE", "UPDATE"):
            call.offer_step(OfferInput.OUR_OFFER)  # StateError while another offer is open
        extra = list(headers)
        if method in ("INVITE", "UPDATE") and call.session is not None:
            # We keep refreshing when we already do; otherwise the peer stays the refresher.
            who = Refresher.UAC if call.session.we_refresh else Refresher.UAS
            extra.append(("Session-Expires", f"{call.session.interval};refresher={who.value}"))
            extra.append(("Supported", "timer"))
        request = dialog.create_request(
            method, core.via(dialog.next_hop().transport), body=body,
            content_type=content_type, extra=extra,
        )
        handle = RequestHandle(core.new_handle())
        core.send_in_dialog(call, request, kind, now, handle)
        if body and method in ("INVITE", "UPDATE"):
            call.local_sdp = body
        return handle

    def hang_up(self, call: SipCall, now: float) -> None:
        core = self.core
        if call.state in (InviteState.CALLING, InviteState.EARLY):
            # CANCEL only once a provisional arrived (§9.1); from CALLING the table moves to
            # CANCEL_PENDING and the CANCEL goes with the first provisional.
            if call.state is InviteState.EARLY:
                self._send_cancel(call, now)
            core.end_call(call, CallInput.HANG_UP, SipEndReason.CANCELLED, 487, now=now)
        else:
            core.send_bye(call, now)
            core.end_call(call, CallInput.HANG_UP, SipEndReason.LOCAL_BYE, now=now)

    def _send_cancel(self, call: SipCall, now: float) -> None:
        core = self.core
        invite = call.invite
        h = Headers()
        h.add("Via", invite.headers.fields("Via")[0])
        for route in invite.headers.fields("Route"):
            h.add("Route", route)
        h.add("Max-Forwards", "70")
        for name in ("From", "To", "Call-ID"):
            h.add(name, invite.headers.get(name) or "")
        h.add("CSeq", f"{invite.cseq.number} CANCEL")
        cancel = SipRequest(headers=h, method="CANCEL", uri=invite.uri)
        core.start_client(cancel, call.peer, now, RequestKind.CANCEL, call.handle)
        found = core.client(call.invite_client_key or ())
        if found is not None and isinstance(found[0], ClientInviteTransaction):
            found[0].cancel_sent(now)

    # --- responses -------------------------------------------------------------------------
    def receive_response(self, response: SipResponse, now: float) -> None:
        core = self.core
        key = client_key(response)
        found = core.client(key)
        if found is None:
            return  # §18.1.2: a response matching no transaction is dropped
        txn, ctx = found
        passed = txn.receive_response(response, now)
        if passed is not None:
            call = core.call(ctx.call)
            if ctx.kind is RequestKind.INVITE and call is not None:
                self._invite_response(call, passed, now)
            elif ctx.kind in (RequestKind.APP, RequestKind.REFRESH):
                self._request_response(ctx, call, txn, passed, now)
            elif ctx.kind is RequestKind.BYE and ctx.call is not None and passed.status >= 200:
                core.emit(ByeCompleted(ctx.call, passed.status, passed))
        if txn.terminated:
            self.forget_txn(key)

    def _invite_response(self, call: SipCall, response: SipResponse, now: float) -> None:
        status = response.status
        if status == 100:
            if call.state is InviteState.CANCEL_PENDING:
                # A 100 is a provisional response too (§9.1): the CANCEL may go now. Waiting
                # for a 180 would wait forever on a callee that never rings (Timer B stopped).
                call.step(CallInput.PROVISIONAL)
                self._send_cancel(call, now)
            return
        if status < 200:
            self._provisional(call, response, now)
        elif status >= 300:
            self._invite_failed(call, response, now)
        elif call.ack is not None:
            self._another_2xx(call, response, now)
        else:
            self._invite_answered(call, response, now)

    def _provisional(self, call: SipCall, response: SipResponse, now: float) -> None:
        core = self.core
        if call.dialog is None and response.to.tag:
            core.register_dialog(call, Dialog.from_response_as_uac(
                call.invite, response, call.peer, core.contact(call.peer.transport)
            ))
        before = call.state
        call.step(CallInput.PROVISIONAL)
        if before is InviteState.CANCEL_PENDING:
            self._send_cancel(call, now)  # hung up before: now the CANCEL may go (§9.1)
        elif not call.ended:
            core.emit(ProvisionalReceived(call.handle, response.status, response.reason,
                                          response.body or None))

    def _invite_failed(self, call: SipCall, response: SipResponse, now: float) -> None:
        status = response.status
        if status == 422 and not call.ended and self._retry_with_min_se(call, response, now):
            return
        if status in (401, 407) and not call.ended and self._retry_with_credentials(
                call, response, now):
            return
        self.core.end_call(call, CallInput.FAILED, SipEndReason.FAILED, status,
                           now=now, notice=CallFailed(call.handle, status, response.reason))

    def _invite_answered(self, call: SipCall, response: SipResponse, now: float) -> None:
        """The first 2xx confirms the dialog (§13.2.2.4) and gets our ACK."""
        core = self.core
        dialog = call.dialog
        if dialog is None or dialog.remote_tag != response.to.tag:
            core.drop_dialog(call)
            dialog = Dialog.from_response_as_uac(
                call.invite, response, call.peer, core.contact(call.peer.transport)
            )
            core.register_dialog(call, dialog)
        dialog.update_target(response)
        call.step(CallInput.ANSWERED)
        call.ack = dialog.create_request(
            "ACK", core.via(dialog.next_hop().transport), cseq=call.invite.cseq.number
        )
        core.send(call.ack, dialog.next_hop())
        self._session_from_response(call, response, now)
        if call.ended:
            core.send_bye(call, now)  # we hung up, but the answer crossed our CANCEL
            core.settle(call)
            return
        core.emit(CallAnswered(call.handle, response, response.body or None))

    def _another_2xx(self, call: SipCall, response: SipResponse, now: float) -> None:
        """§13.2.2.4: a retransmitted 2xx gets our ACK again; one from another fork gets its
        own ACK and then a BYE (one call only)."""
        core = self.core
        dialog = call.dialog
        if dialog is not None and response.to.tag == dialog.remote_tag:
            if call.ack is not None:
                core.send(call.ack, dialog.next_hop())
            return
        fork = Dialog.from_response_as_uac(
            call.invite, response, call.peer, core.contact(call.peer.transport)
        )
        ack = fork.create_request(
            "ACK", core.via(fork.next_hop().transport), cseq=call.invite.cseq.number
        )
        core.send(ack, fork.next_hop())
        bye = fork.create_request("BYE", core.via(fork.next_hop().transport))
        core.start_client(bye, fork.next_hop(), now, RequestKind.BYE)

    def _retry_with_min_se(self, call: SipCall, response: SipResponse, now: float) -> bool:
        """RFC 4028 §7.4: after 422, send the INVITE again with the peer's Min-SE (once)."""
        core = self.core
        min_se = parse_min_se(response)
        old = call.invite
        asked = parse_session_expires(old)
        if min_se is None or (asked is not None and asked.interval >= min_se):
            return False
        headers = old.headers.copy()
        headers.set("Via", core.via(call.peer.transport))
        headers.set("CSeq", f"{old.cseq.number + 1} INVITE")
        headers.set("Session-Expires", str(min_se))
        headers.set("Min-SE", str(min_se))
        request = SipRequest(headers=headers, body=old.body, method="INVITE", uri=old.uri)
        txn = core.start_client(request, call.peer, now, RequestKind.INVITE, call.handle)
        call.invite = request
        call.invite_client_key = txn.key
        return True

    def _retry_with_credentials(self, call: SipCall, response: SipResponse, now: float
                                ) -> bool:
        """§22.2: answer a 401/407 to our INVITE once, with the call's credentials: the same
        INVITE (Call-ID, From tag), CSeq + 1, and (Proxy-)Authorization for the first challenge
        we can answer."""
        if call.credentials is None or call.auth_tried:
            return False
        proxy = response.status == 407
        challenges = response.headers.get_all("Proxy-Authenticate" if proxy
                                              else "WWW-Authenticate")
        old = call.invite
        username, password = call.credentials
        answer = next((a for c in challenges if (a := answer_challenge(
            c, method="INVITE", uri=str(old.uri), username=username, password=password,
            cnonce=new_tag())) is not None), None)
        if answer is None:
            return False
        headers = old.headers.copy()
        headers.set("Via", self.core.via(call.peer.transport))
        headers.set("CSeq", f"{old.cseq.number + 1} INVITE")
        headers.set("Proxy-Authorization" if proxy else "Authorization", answer)
        request = SipRequest(headers=headers, body=old.body, method="INVITE", uri=old.uri)
        txn = self.core.start_client(request, call.peer, now, RequestKind.INVITE, call.handle)
        call.invite = request
        call.invite_client_key = txn.key
        call.auth_tried = True
        return True

    def _session_from_response(self, call: SipCall, response: SipResponse, now: float) -> None:
        """RFC 4028 §7.2: the 2xx names the refresher from our (the UAC's) point of view."""
        offered = parse_session_expires(response)
        if offered is None:
            return
        we_refresh = offered.refresher is not Refresher.UAS
        if call.session is None:
            call.session = SessionTimer(offered.interval, we_refresh, now)
        else:
            call.session.we_refresh = we_refresh
            call.session.restart(now, offered.interval)

    def _request_response(
        self, ctx: ClientContext, call: SipCall | None, txn: ClientTransaction,
        response: SipResponse, now: float,
    ) -> None:
        """The final response to send_request()/send_options() or to our RFC 4028 refresh."""
        status = response.status
        if status < 200:
            return
        if call is not None:
            self._in_dialog_final(call, txn.request, response, now)
        if ctx.kind is RequestKind.REFRESH:
            if status >= 300 and status != 491 and call is not None and not call.ended:
                self._end_dialog(call, CallInput.SESSION_EXPIRED, SipEndReason.SESSION_EXPIRED,
                                 status, now, bye=True)
            return
        if ctx.handle is not None:
            self.core.emit(
                RequestCompleted(ctx.handle, ctx.call, txn.request.method, status, response)
            )
        if call is not None and status in (408, 481) and call.dialog is not None and not call.ended:
            # §12.2.1.2: the dialog is gone; after a 481 there is nobody to send a BYE to.
            self._end_dialog(call, CallInput.DIALOG_ERROR, SipEndReason.REMOTE_ERROR, status,
                             now, bye=status == 408)

    def _in_dialog_final(
        self, call: SipCall, request: SipRequest, response: SipResponse, now: float
    ) -> None:
        """ACK a 2xx to our re-INVITE (§13.2.2.4); close our offer, taking its answer's target
        and session interval when it succeeded."""
        core = self.core
        dialog = call.dialog
        ok = 200 <= response.status < 300
        if dialog is not None and request.method == "INVITE" and ok:
            ack = dialog.create_request(
                "ACK", core.via(dialog.next_hop().transport), cseq=request.cseq.number
            )
            core.send(ack, dialog.next_hop())
        if request.method in ("INVITE", "UPDATE") and call.offer is OfferState.OURS:
            call.offer_step(OfferInput.OFFER_DONE)
            if ok:
                if dialog is not None:
                    dialog.update_target(response)
                self._session_from_response(call, response, now)

    def _end_dialog(
        self, call: SipCall, event: CallInput, reason: SipEndReason, status: int | None,
        now: float, *, bye: bool,
    ) -> None:
        if bye:
            self.core.send_bye(call, now)
        self.core.end_call(call, event, reason, status, now=now)

    def on_timeout(self, key: tuple[str, ...], now: float) -> None:
        """Timer B or F fired: the same as a 408 from the peer (§8.1.3.1)."""
        core = self.core
        found = core.client(key)
        if found is None:
            return
        txn, ctx = found
        call = core.call(ctx.call)
        method = txn.request.method
        if call is not None and ctx.kind is not RequestKind.INVITE and (
            method in ("INVITE", "UPDATE") and call.offer is OfferState.OURS
        ):
            call.offer_step(OfferInput.OFFER_DONE)  # our re-INVITE/UPDATE is over: it timed out
        if ctx.kind is RequestKind.INVITE and call is not None:
            core.end_call(call, CallInput.FAILED, SipEndReason.TIMEOUT, 408,
                          now=now, notice=CallFailed(call.handle, 408, "Request Timeout"))
        elif ctx.kind is RequestKind.REFRESH and call is not None and not call.ended:
            self._end_dialog(call, CallInput.SESSION_EXPIRED, SipEndReason.SESSION_EXPIRED, 408,
                             now, bye=True)
        elif ctx.kind is RequestKind.APP and ctx.handle is not None:
            core.emit(RequestCompleted(ctx.handle, ctx.call, method, 408, None))
            if call is not None and call.dialog is not None and not call.ended:
                # §12.2.1.2: a timed-out dialog is ended.
                self._end_dialog(call, CallInput.DIALOG_ERROR, SipEndReason.REMOTE_ERROR, 408,
                                 now, bye=True)
        elif ctx.kind is RequestKind.BYE and ctx.call is not None:
            core.emit(ByeCompleted(ctx.call, 408, None))

    def forget_txn(self, key: tuple[str, ...]) -> None:
        """A client transaction ended. An abandoned call whose INVITE ended without a final
        response (our CANCEL was ignored for 64·T1) is over."""
        ctx = self.core.forget_client(key)
        call = self.core.call(ctx.call) if ctx is not None else None
        if call is None or call.state is not InviteState.ABANDONED:
            return
        if key == call.invite_client_key:
            call.step(CallInput.FAILED)
            self.core.settle(call)

    # --- RFC 4028 ---------------------------------------------------------------------------
    def session_due(self, call: SipCall, now: float) -> None:
        """The session deadline passed: refresh if we are the refresher, else end with BYE."""
        core = self.core
        session = call.session
        if session is None or call.dialog is None or call.ended:
            return
        if not session.we_refresh:
            call.session = None
            self._end_dialog(call, CallInput.SESSION_EXPIRED, SipEndReason.SESSION_EXPIRED, None,
                             now, bye=True)
            return
        if call.offer is not OfferState.IDLE:
            session.deadline = now + core.timers.T1 * 4  # an offer is in flight: try shortly
            return
        # Push the deadline out so the timer does not fire again while the refresh is pending.
        session.deadline = now + session.interval / 2
        if "UPDATE" in call.dialog.peer_allows:
            self.send_request(call, "UPDATE", now, body=b"", content_type=None, headers=(),
                              kind=RequestKind.REFRESH)
        else:
            self.send_request(call, "INVITE", now, body=call.local_sdp,
                              content_type="application/sdp" if call.local_sdp else None,
                              headers=(), kind=RequestKind.REFRESH)

"""The SIP side of one answered-or-ringing call: what the caller's dialog tells it.

`dispatch(call, event)` is `Call.sip_event`: the events the registry routes to a call. A BYE,
CANCEL or the dialog ending (no ACK, session expiry, a transport error) ends the call with its
`Outcome`; a re-INVITE or UPDATE with an offer re-negotiates the media on the call's RTP session
(hold, resume, new address or keys) or is refused with the right status; an INFO with
`application/dtmf-relay` is a digit for `call_control.py`, as are the NOTIFYs and the answer to
our REFER. Nothing here owns state: the call does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.media.dtmf import DtmfRelayError, parse_dtmf_relay
from gateway.outcomes import OfferRefusal, Outcome, response_headers
from gateway.sdp import SdpNegotiationError, parse_offer
from gateway.sip.events import (
    AckReceived,
    ByeReceived,
    CallCancelled,
    DialogEnded,
    InfoReceived,
    NotifyReceived,
    ReinviteReceived,
    RequestCompleted,
    SipEndReason,
)

if TYPE_CHECKING:
    from gateway.call import Call

_SIP_END_OUTCOMES = {
    SipEndReason.REMOTE_BYE: Outcome.CALLER_BYE,
    SipEndReason.ACK_TIMEOUT: Outcome.NO_ACK,
    SipEndReason.SESSION_EXPIRED: Outcome.SESSION_EXPIRED,
    SipEndReason.REMOTE_ERROR: Outcome.SIP_ERROR,
}


def dispatch(call: Call, event: object) -> None:
    """Events of this call's dialog, dispatched by the registry."""
    if isinstance(event, CallCancelled | ByeReceived):
        call._sip_done = True
        call._end(Outcome.CALLER_BYE)
    elif isinstance(event, DialogEnded):
        call._sip_done = True
        call._end(_SIP_END_OUTCOMES.get(event.reason, Outcome.SIP_ERROR))
    elif isinstance(event, ReinviteReceived):
        _reinvite(call, event)
    elif isinstance(event, InfoReceived):
        _info(call, event)
    elif isinstance(event, NotifyReceived):
        if (event.event or "").split(";")[0].strip().lower() == "refer":
            call.control.on_notify(event.body)
    elif isinstance(event, RequestCompleted):
        call.control.on_request_completed(event.handle, event.status)
    elif isinstance(event, AckReceived):
        call.log.debug("ACK received")


def _refuse_offer(call: Call, refusal: OfferRefusal,
                  warning: tuple[int, str] | None = None) -> None:
    d = refusal.disposition
    assert d.status is not None, refusal
    call.ctx.signalling.reject_offer(call.handle, d.status, headers=response_headers(
        d, agent=call.ctx.advertised_address, warning=warning))


def _reinvite(call: Call, event: ReinviteReceived) -> None:
    rtp = call._rtp
    if rtp is None or call._port is None:
        _refuse_offer(call, OfferRefusal.PENDING)
        return
    if event.sdp is None:
        _refuse_offer(call, OfferRefusal.REQUIRED)
        return
    try:
        params, answer = call._negotiate(parse_offer(event.sdp.decode("utf-8", "replace")),
                                         rtp.params)
    except SdpNegotiationError as exc:
        _refuse_offer(call, OfferRefusal.NOT_ACCEPTABLE, exc.sip_warning)
        return
    rtp.update(params)
    call.log.info("media updated by %s: %s:%d %s%s", event.method, params.remote_address,
                  params.remote_port, params.codec, " (on hold)" if params.on_hold else "")
    call.ctx.signalling.answer_offer(call.handle, answer.encode())


def _info(call: Call, event: InfoReceived) -> None:
    if (event.content_type or "").lower() != "application/dtmf-relay":
        return
    try:
        call.control.on_dtmf(parse_dtmf_relay(event.body.decode("utf-8", "replace")))
    except DtmfRelayError as exc:
        call.log.info("ignored malformed dtmf-relay INFO: %s", exc)

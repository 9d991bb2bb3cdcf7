"""Events the SIP endpoint hands to the application (`SipEndpoint.next_event()`).

Every call the endpoint knows (an incoming `InviteReceived` or an outgoing `invite()`) ends with
exactly one `DialogEnded`, whatever ended it, so the application has one teardown path. After it
only `ByeCompleted` may still name the call: how our BYE fared (for a driver that keeps its
sockets open until the BYE is answered). The
`call` field is an opaque `CallHandle` the application passes back to commands.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NewType

from gateway.sip.address import Peer
from gateway.sip.message import SipRequest, SipResponse

CallHandle = NewType("CallHandle", int)
RequestHandle = NewType("RequestHandle", int)


class SipEndReason(enum.Enum):
    REMOTE_BYE = "remote-bye"  # the peer sent BYE
    LOCAL_BYE = "local-bye"  # hang_up() on an established call
    CANCELLED = "cancelled"  # the caller sent CANCEL before the answer (we sent 487)
    REJECTED = "rejected"  # we sent a non-2xx final response (reject() or hang_up() early)
    FAILED = "failed"  # our INVITE got a non-2xx final response
    TIMEOUT = "timeout"  # our INVITE got no final response (Timer B)
    ACK_TIMEOUT = "ack-timeout"  # our 2xx was never ACKed within 64·T1; we sent BYE
    SESSION_EXPIRED = "session-expired"  # RFC 4028 refresh never came (or ours failed)
    REMOTE_ERROR = "remote-error"  # the peer answered an in-dialog request with 408/481


@dataclass(frozen=True, slots=True)
class InviteReceived:
    """A new incoming call. Answer with ring()/answer()/reject(); hang_up() also works."""

    call: CallHandle
    request: SipRequest
    source: Peer
    sdp: bytes | None
    trunk: str | None = None  # as the pre-dispatch screen identified the source (SipVerdict.trunk)


@dataclass(frozen=True, slots=True)
class AckReceived:
    """The ACK for our 2xx: the call is fully established. `sdp` is set if it carried an answer."""

    call: CallHandle
    sdp: bytes | None


@dataclass(frozen=True, slots=True)
class CallCancelled:
    """The caller cancelled before our final response; 487 was sent. DialogEnded follows."""

    call: CallHandle


@dataclass(frozen=True, slots=True)
class ByeReceived:
    """The peer hung up; 200 was sent. DialogEnded follows."""

    call: CallHandle
    request: SipRequest


@dataclass(frozen=True, slots=True)
class ReinviteReceived:
    """An in-dialog INVITE or UPDATE (hold/resume, codec change, session refresh).

    Answer with `answer_offer()` (200, with our SDP) or `reject_offer()` (e.g. 488).
    `sdp` is None for an offerless re-INVITE: then our 200 carries the offer.
    """

    call: CallHandle
    method: str
    sdp: bytes | None
    request: SipRequest


@dataclass(frozen=True, slots=True)
class InfoReceived:
    """An in-dialog INFO (e.g. DTMF relay); it was answered 200 already."""

    call: CallHandle
    content_type: str | None
    body: bytes
    request: SipRequest


@dataclass(frozen=True, slots=True)
class DialogEnded:
    """The call is over; no further events for this handle."""

    call: CallHandle
    reason: SipEndReason
    status: int | None = None  # the final SIP status where one applies (487, 408, 603, ...)


@dataclass(frozen=True, slots=True)
class ByeCompleted:
    """Our BYE for `call` got its final response (`status`), or 408 with no response when it
    timed out (Timer F). Comes after the call's DialogEnded; informational only."""

    call: CallHandle
    status: int
    response: SipResponse | None


@dataclass(frozen=True, slots=True)
class ProvisionalReceived:
    """UAC: a 1xx (other than 100) to our INVITE."""

    call: CallHandle
    status: int
    reason: str
    sdp: bytes | None


@dataclass(frozen=True, slots=True)
class CallAnswered:
    """UAC: the 2xx to our INVITE (the core has sent the ACK)."""

    call: CallHandle
    response: SipResponse
    sdp: bytes | None


@dataclass(frozen=True, slots=True)
class CallFailed:
    """UAC: our INVITE failed (non-2xx, or status 408 on timeout). DialogEnded follows."""

    call: CallHandle
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class RequestCompleted:
    """The final outcome of `send_request`/`send_options`: status 408 on timeout."""

    handle: RequestHandle
    call: CallHandle | None
    method: str
    status: int
    response: SipResponse | None


Event = (
    InviteReceived | AckReceived | CallCancelled | ByeReceived | ReinviteReceived | InfoReceived
    | DialogEnded | ProvisionalReceived | CallAnswered | CallFailed | RequestCompleted
    | ByeCompleted
)

"""Where one call (one INVITE dialog) stands: two explicit state machines and their tables.

A call has two independent lines of state, in the manner of h11's client and server states:

* `InviteState`, the INVITE line: from the first INVITE to the moment the endpoint forgets the
  call. UAS and UAC have their own early states and share the rest.
* `OfferState`, the offer line: a re-INVITE or UPDATE offer/answer exchange inside the dialog
  (RFC 3264, RFC 3311), theirs or ours; at most one at a time.

`SipCall.step(CallInput.X)` moves the INVITE line by `INVITE_TRANSITIONS`, `SipCall.offer_step`
the offer line by `OFFER_TRANSITIONS`. A pair missing from a table raises `StateError`, a
`UsageError` (a local error, h11's `LocalProtocolError`): application commands reach `step`
directly, so answering twice or sending an offer over a pending one is refused by the table
itself. Peer input never raises: the UAS/UAC handlers look at the state before they step (a
duplicate ACK is dropped, a re-INVITE outside CONFIRMED is answered 491, a BYE for a dialog we
no longer know 481), so a StateError out of peer input is a bug of ours, logged by the endpoint.

The INVITE line (UAS states, then UAC states, then the shared ones; "ended" states are those
in which the application has had its `DialogEnded`):

    state           input               next            what goes on the wire
    INCOMING        RING                INCOMING        180/183
                    ANSWER              ANSWERED        200, retransmitted until ACK
                    REJECT              ENDED           3xx-6xx (hang_up() early: 480)
                    CANCEL_RECEIVED     ENDED           200 to CANCEL, 487 to INVITE
                    BYE_RECEIVED        ENDED           200 to BYE, 487 to INVITE
    ANSWERED        ACK                 CONFIRMED       -
                    HANG_UP             BYE_AFTER_ACK   nothing yet (RFC 3261 §15)
                    ACK_TIMEOUT         ENDED           BYE (§13.3.1.4)
                    BYE_RECEIVED        ENDED           200 to BYE
                    DIALOG_ERROR        ENDED           BYE after 408; nothing after 481
                    SESSION_EXPIRED     ENDED           BYE
    BYE_AFTER_ACK*  ACK                 ENDED           BYE
                    ACK_TIMEOUT         ENDED           BYE
                    BYE_RECEIVED        ENDED           200 to BYE
    CALLING         PROVISIONAL         EARLY           -
                    ANSWERED            CONFIRMED       ACK
                    FAILED              ENDED           (ACK for non-2xx: the transaction's)
                    HANG_UP             CANCEL_PENDING  nothing yet (§9.1: no CANCEL before 1xx)
    EARLY           PROVISIONAL         EARLY           -
                    ANSWERED            CONFIRMED       ACK
                    FAILED              ENDED           -
                    HANG_UP             ABANDONED       CANCEL
                    BYE_RECEIVED        ABANDONED       200 to BYE (the early dialog ended)
    CANCEL_PENDING* PROVISIONAL         ABANDONED       CANCEL
                    ANSWERED            ENDED           ACK, BYE
                    FAILED              ENDED           -
    ABANDONED*      PROVISIONAL         ABANDONED       -
                    ANSWERED            ENDED           ACK, BYE (the 2xx crossed our CANCEL)
                    FAILED              ENDED           - (487, or the INVITE gave up: 64·T1)
                    BYE_RECEIVED        ABANDONED       200 to BYE
    CONFIRMED       REINVITE_ANSWERED   REANSWERED      200 to re-INVITE, retransmitted
                    HANG_UP             ENDED           BYE
                    BYE_RECEIVED        ENDED           200 to BYE
                    DIALOG_ERROR        ENDED           BYE after 408; nothing after 481
                    SESSION_EXPIRED     ENDED           BYE
    REANSWERED      ACK                 CONFIRMED       -
                    HANG_UP             ENDED           BYE (the first ACK came: §15 is met)
                    ACK_TIMEOUT         ENDED           BYE
                    BYE_RECEIVED        ENDED           200 to BYE
                    DIALOG_ERROR        ENDED           BYE after 408
                    SESSION_EXPIRED     ENDED           BYE
    ENDED*          ACK                 ENDED           - (the last 2xx stops)
                    ACK_TIMEOUT         ENDED           BYE unless one was sent or received
                    BYE_RECEIVED        ENDED           200 to BYE

`*` marks the ended states. A call is forgotten (every table entry dropped) once it is ENDED
and no 2xx of ours still waits for its ACK; the three ENDED rows only exist for that wait (a
call that ended while its 2xx to a re-INVITE was unacknowledged keeps retransmitting it).

The offer line:

    state   input            next   meaning
    IDLE    THEIR_OFFER      THEIRS their re-INVITE/UPDATE goes to the app (ReinviteReceived)
            OUR_OFFER        OURS   send_request("INVITE" | "UPDATE")
    THEIRS  ANSWER_OFFER     IDLE   answer_offer(): 200 (a re-INVITE's also moves the INVITE
                                    line to REANSWERED)
            REJECT_OFFER     IDLE   reject_offer(): 3xx-6xx, the session stays as it was
            OFFER_WITHDRAWN  IDLE   their CANCEL, or the call ended first: 487 for it
    OURS    OFFER_DONE       IDLE   the final response (or Timer B/F) to our offer

While the offer line is THEIRS a new offer from the peer is answered 500 with Retry-After
(RFC 3311 §5.2); while it is OURS, 491 (§14.2). A re-INVITE is accepted only in CONFIRMED
(otherwise 491: the peer retries after a random delay, §14.1); an UPDATE in any state with a
dialog. An offerless UPDATE is a session refresh (RFC 4028) answered at once: the offer line
does not move.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from gateway.sip.address import Peer
from gateway.sip.dialog import Dialog, SessionTimer, TwoXXRetransmitter
from gateway.sip.errors import UsageError
from gateway.sip.events import CallHandle
from gateway.sip.message import SipRequest
from gateway.sip.transaction import ServerInviteTransaction, ServerTransaction, TransactionKey


class StateError(UsageError):
    """A transition the tables do not have: the application (or a bug of ours) asked for it."""


class Role(enum.Enum):
    UAS = "uas"
    UAC = "uac"


class InviteState(enum.Enum):
    # UAS
    INCOMING = "incoming"  # their INVITE is here; no final response yet
    ANSWERED = "answered"  # our 2xx is out, retransmitted until the ACK (§13.3.1.4)
    BYE_AFTER_ACK = "bye-after-ack"  # hung up in ANSWERED: BYE once the ACK (or 64·T1) comes
    # UAC
    CALLING = "calling"  # our INVITE is out; nothing but 100 back
    EARLY = "early"  # a 101-199 arrived: CANCEL is allowed from now on (§9.1)
    CANCEL_PENDING = "cancel-pending"  # hung up in CALLING: CANCEL once a 1xx arrives
    ABANDONED = "abandoned"  # done with an unanswered call; the INVITE's final is awaited
    # both
    CONFIRMED = "confirmed"  # the call is up (UAS: ACK arrived; UAC: 2xx arrived, ACKed)
    REANSWERED = "reanswered"  # our 2xx to their re-INVITE waits for its ACK
    ENDED = "ended"  # nothing left but, perhaps, a 2xx waiting for its ACK


ENDED_STATES = frozenset({InviteState.BYE_AFTER_ACK, InviteState.CANCEL_PENDING,
                          InviteState.ABANDONED, InviteState.ENDED})
# Where our 2xx to an INVITE waits for its ACK: a re-INVITE gets 491 here (§14.1).
ACK_WAIT_STATES = frozenset({InviteState.ANSWERED, InviteState.REANSWERED,
                             InviteState.BYE_AFTER_ACK})
# Where the dialog is confirmed and the app may send in-dialog requests.
DIALOG_UP_STATES = frozenset({InviteState.ANSWERED, InviteState.CONFIRMED,
                              InviteState.REANSWERED})


class CallInput(enum.Enum):
    # commands of the application
    RING = "ring"
    ANSWER = "answer"
    REJECT = "reject"
    HANG_UP = "hang-up"
    # from the peer, about the call's INVITE
    PROVISIONAL = "provisional"  # 101-199 to our INVITE
    ANSWERED = "answered"  # the first 2xx to our INVITE
    FAILED = "failed"  # a non-2xx final to our INVITE, or Timer B
    CANCEL_RECEIVED = "cancel-received"
    ACK = "ack"  # the ACK for our 2xx
    REINVITE_ANSWERED = "reinvite-answered"  # we sent 2xx to their re-INVITE
    # the dialog as a whole
    BYE_RECEIVED = "bye-received"
    ACK_TIMEOUT = "ack-timeout"  # 64·T1 without the ACK for our 2xx
    DIALOG_ERROR = "dialog-error"  # 408/481 to one of our in-dialog requests (§12.2.1.2)
    SESSION_EXPIRED = "session-expired"  # RFC 4028: no refresh, or ours failed


S = InviteState
C = CallInput
INVITE_TRANSITIONS: dict[InviteState, dict[CallInput, InviteState]] = {
    S.INCOMING: {C.RING: S.INCOMING, C.ANSWER: S.ANSWERED, C.REJECT: S.ENDED,
                 C.CANCEL_RECEIVED: S.ENDED, C.BYE_RECEIVED: S.ENDED},
    S.ANSWERED: {C.ACK: S.CONFIRMED, C.HANG_UP: S.BYE_AFTER_ACK, C.ACK_TIMEOUT: S.ENDED,
                 C.BYE_RECEIVED: S.ENDED, C.DIALOG_ERROR: S.ENDED, C.SESSION_EXPIRED: S.ENDED},
    S.BYE_AFTER_ACK: {C.ACK: S.ENDED, C.ACK_TIMEOUT: S.ENDED, C.BYE_RECEIVED: S.ENDED},
    S.CALLING: {C.PROVISIONAL: S.EARLY, C.ANSWERED: S.CONFIRMED, C.FAILED: S.ENDED,
                C.HANG_UP: S.CANCEL_PENDING},
    S.EARLY: {C.PROVISIONAL: S.EARLY, C.ANSWERED: S.CONFIRMED, C.FAILED: S.ENDED,
              C.HANG_UP: S.ABANDONED, C.BYE_RECEIVED: S.ABANDONED},
    S.CANCEL_PENDING: {C.PROVISIONAL: S.ABANDONED, C.ANSWERED: S.ENDED, C.FAILED: S.ENDED},
    S.ABANDONED: {C.PROVISIONAL: S.ABANDONED, C.ANSWERED: S.ENDED, C.FAILED: S.ENDED,
                  C.BYE_RECEIVED: S.ABANDONED},
    S.CONFIRMED: {C.REINVITE_ANSWERED: S.REANSWERED, C.HANG_UP: S.ENDED,
                  C.BYE_RECEIVED: S.ENDED, C.DIALOG_ERROR: S.ENDED,
                  C.SESSION_EXPIRED: S.ENDED},
    S.REANSWERED: {C.ACK: S.CONFIRMED, C.HANG_UP: S.ENDED, C.ACK_TIMEOUT: S.ENDED,
                   C.BYE_RECEIVED: S.ENDED, C.DIALOG_ERROR: S.ENDED,
                   C.SESSION_EXPIRED: S.ENDED},
    S.ENDED: {C.ACK: S.ENDED, C.ACK_TIMEOUT: S.ENDED, C.BYE_RECEIVED: S.ENDED},
}
del S, C


class OfferState(enum.Enum):
    IDLE = "idle"
    THEIRS = "theirs"  # their re-INVITE/UPDATE waits for answer_offer()/reject_offer()
    OURS = "ours"  # our re-INVITE/UPDATE waits for its final response


class OfferInput(enum.Enum):
    THEIR_OFFER = "their-offer"
    OUR_OFFER = "our-offer"
    ANSWER_OFFER = "answer-offer"
    REJECT_OFFER = "reject-offer"
    OFFER_WITHDRAWN = "offer-withdrawn"  # CANCEL, or the call ended before the app answered
    OFFER_DONE = "offer-done"  # the final response or timeout of our offer


OFFER_TRANSITIONS: dict[OfferState, dict[OfferInput, OfferState]] = {
    OfferState.IDLE: {OfferInput.THEIR_OFFER: OfferState.THEIRS,
                      OfferInput.OUR_OFFER: OfferState.OURS},
    OfferState.THEIRS: {OfferInput.ANSWER_OFFER: OfferState.IDLE,
                        OfferInput.REJECT_OFFER: OfferState.IDLE,
                        OfferInput.OFFER_WITHDRAWN: OfferState.IDLE},
    OfferState.OURS: {OfferInput.OFFER_DONE: OfferState.IDLE},
}


@dataclass(slots=True, eq=False)
class SipCall:
    """Everything the endpoint keeps for one call (one INVITE dialog)."""

    handle: CallHandle
    role: Role
    invite: SipRequest
    peer: Peer  # UAS: where the INVITE came from; UAC: the first hop
    state: InviteState
    offer: OfferState = OfferState.IDLE
    dialog: Dialog | None = None
    invite_server: ServerInviteTransaction | None = None
    invite_client_key: TransactionKey | None = None
    retransmitter: TwoXXRetransmitter | None = None  # our last 2xx to an INVITE, until ACK
    retransmit_cseq: int = 0  # the INVITE CSeq whose 2xx is being retransmitted
    retransmit_peer: Peer | None = None  # where that INVITE's responses go (§18.2.2)
    their_offer: ServerTransaction | None = None  # set while the offer line is THEIRS
    ack: SipRequest | None = None  # UAC: our ACK for the 2xx, resent on 2xx retransmissions
    session: SessionTimer | None = None
    local_sdp: bytes = b""
    extra: dict[str, str] = field(default_factory=dict)

    # --- the INVITE line ------------------------------------------------------------------
    def require(self, event: CallInput) -> None:
        """StateError unless the table has a row for `event` (checked before sending)."""
        if event not in INVITE_TRANSITIONS[self.state]:
            raise StateError(
                f"call {self.handle}: {event.value} is not allowed in state {self.state.value}"
            )

    def step(self, event: CallInput) -> InviteState:
        """Move by the table; StateError when it has no such row."""
        self.require(event)
        self.state = INVITE_TRANSITIONS[self.state][event]
        return self.state

    @property
    def ended(self) -> bool:
        """The application has had its DialogEnded (no commands, no events but ByeCompleted)."""
        return self.state in ENDED_STATES

    @property
    def awaiting_ack(self) -> bool:
        """A 2xx of ours to an INVITE (first or re-) is being retransmitted until its ACK."""
        return self.retransmitter is not None and self.retransmitter.next_at is not None

    # --- the offer line -------------------------------------------------------------------
    def open_their_offer(self, txn: ServerTransaction) -> None:
        """Their re-INVITE/UPDATE now waits for the application (IDLE -> THEIRS)."""
        self.offer_step(OfferInput.THEIR_OFFER)
        self.their_offer = txn

    def close_their_offer(self, event: OfferInput) -> ServerTransaction:
        """THEIRS -> IDLE by `event` (answer, reject, withdrawal): the transaction to answer."""
        txn = self.their_offer
        if self.offer is not OfferState.THEIRS or txn is None:
            raise StateError("no re-INVITE or UPDATE is waiting for an answer")
        self.offer_step(event)
        self.their_offer = None
        return txn

    def offer_step(self, event: OfferInput) -> OfferState:
        try:
            self.offer = OFFER_TRANSITIONS[self.offer][event]
        except KeyError:
            if event is OfferInput.OUR_OFFER:
                raise StateError("an offer is already in progress on this dialog") from None
            raise StateError(
                f"call {self.handle}: {event.value} is not allowed with offer {self.offer.value}"
            ) from None
        return self.offer

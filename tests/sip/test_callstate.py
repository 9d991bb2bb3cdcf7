"""The call state tables (callstate.py): their shape, refusals of illegal steps, and the two
things a driver learns about our own requests: ByeCompleted and SipEndpoint.idle."""

from __future__ import annotations

import pytest

from gateway.sip.callstate import (
    ENDED_STATES,
    INVITE_TRANSITIONS,
    OFFER_TRANSITIONS,
    CallInput,
    InviteState,
    OfferState,
    StateError,
)
from gateway.sip.errors import UsageError
from gateway.sip.events import (
    ByeCompleted,
    CallAnswered,
    DialogEnded,
    InviteReceived,
    ProvisionalReceived,
    ReinviteReceived,
    SipEndReason,
)
from tests.sip.helpers import HOLD, SDP, UAS_ADDR, Link

TARGET = f"sip:agent@{UAS_ADDR[0]}:{UAS_ADDR[1]}"
FROM = "<sip:+4930111@127.0.0.1>"


def _reachable(start: InviteState) -> set[InviteState]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in INVITE_TRANSITIONS[todo.pop()].values():
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_every_state_has_a_row_and_every_path_ends() -> None:
    assert set(INVITE_TRANSITIONS) == set(InviteState)
    assert set(OFFER_TRANSITIONS) == set(OfferState)
    uas = _reachable(InviteState.INCOMING)
    uac = _reachable(InviteState.CALLING)
    assert uas | uac == set(InviteState)  # no state is dead code
    for state in InviteState:
        assert InviteState.ENDED in _reachable(state), state
    # Once ended for the application, a call never comes back to life.
    for state in ENDED_STATES:
        assert _reachable(state) <= ENDED_STATES, state


def test_only_the_table_decides_what_the_application_may_do() -> None:
    link = Link()
    link.uac.invite(TARGET, link.now, sdp=SDP, from_uri=FROM)
    link.pump()
    (invite,) = link.take("uas")
    assert isinstance(invite, InviteReceived)
    link.uas.answer(invite.call, SDP, link.now)
    with pytest.raises(StateError, match="answer is not allowed in state answered"):
        link.uas.answer(invite.call, SDP, link.now)
    with pytest.raises(StateError):
        link.uas.ring(invite.call, link.now)
    assert issubclass(StateError, UsageError)  # a local error, as h11's LocalProtocolError
    link.pump()
    assert link.sent("uas", "SIP/2.0 200") == [0.0]  # the refused commands sent nothing


def test_an_offer_over_an_open_offer_is_refused() -> None:
    link = Link()
    uac_call = link.uac.invite(TARGET, link.now, sdp=SDP, from_uri=FROM)
    link.pump()
    (invite,) = link.take("uas")
    assert isinstance(invite, InviteReceived)
    link.uas.answer(invite.call, SDP, link.now)
    link.pump()
    link.uac.send_request(uac_call, "INVITE", link.now, body=HOLD,
                          content_type="application/sdp")
    link.pump()
    (reinvite,) = [e for e in link.take("uas") if isinstance(e, ReinviteReceived)]
    # Their offer waits for our answer: we may not start one of our own (§14.1).
    with pytest.raises(StateError, match="an offer is already in progress"):
        link.uas.send_request(invite.call, "UPDATE", link.now, body=SDP,
                              content_type="application/sdp")
    assert link.uas.answer_offer(invite.call, HOLD, link.now)
    link.pump()
    assert link.uas.send_request(invite.call, "UPDATE", link.now, body=SDP,
                                 content_type="application/sdp")
    assert reinvite.call == invite.call


def test_bye_completed_and_idle_follow_our_bye() -> None:
    link = Link()
    uac_call = link.uac.invite(TARGET, link.now, sdp=SDP, from_uri=FROM)
    assert not link.uac.idle  # our INVITE waits for its final response
    link.pump()
    (invite,) = link.take("uas")
    assert isinstance(invite, InviteReceived)
    link.uas.answer(invite.call, SDP, link.now)
    link.pump()
    assert [type(e) for e in link.take("uac")] == [CallAnswered]
    link.drop = lambda sender, data: data.startswith(b"BYE")  # the first BYE is lost
    link.uac.hang_up(uac_call, link.now)
    link.pump()
    assert link.take("uac") == [DialogEnded(uac_call, SipEndReason.LOCAL_BYE)]
    assert not link.uac.idle  # the call is over for the app, but our BYE is unanswered
    link.drop = lambda sender, data: False
    link.run_until(0.5)  # Timer E: the BYE again after T1, and now it gets its 200
    assert link.sent("uac", "BYE") == [0.0, 0.5]
    (done,) = link.take("uac")
    assert isinstance(done, ByeCompleted) and (done.call, done.status) == (uac_call, 200)
    assert done.response is not None and done.response.cseq.method == "BYE"
    assert link.uac.idle and link.uac.table_sizes()["calls"] == 0


def test_a_bye_that_is_never_answered_completes_with_408() -> None:
    link = Link()
    uac_call = link.uac.invite(TARGET, link.now, sdp=SDP, from_uri=FROM)
    link.pump()
    (invite,) = link.take("uas")
    assert isinstance(invite, InviteReceived)
    link.uas.ring(invite.call, link.now)
    link.uas.answer(invite.call, SDP, link.now)
    link.pump()
    assert [type(e) for e in link.take("uac")] == [ProvisionalReceived, CallAnswered]
    link.drop = lambda sender, data: data.startswith(b"BYE")
    link.uac.hang_up(uac_call, link.now)
    link.run_until(31.9)
    assert link.take("uac") == [DialogEnded(uac_call, SipEndReason.LOCAL_BYE)]
    assert not link.uac.idle
    link.run_until(32.0)  # Timer F = 64·T1
    assert link.take("uac") == [ByeCompleted(uac_call, 408, None)]
    assert link.uac.idle


def test_hang_up_before_a_provisional_is_a_state_not_a_flag() -> None:
    """CALLING + HANG_UP waits in CANCEL_PENDING; the first 180 sends the CANCEL (§9.1)."""
    link = Link()
    link.drop = lambda sender, data: sender == "uas"  # nothing comes back yet
    uac_call = link.uac.invite(TARGET, link.now, sdp=SDP, from_uri=FROM)
    link.pump()
    (invite,) = link.take("uas")
    assert isinstance(invite, InviteReceived)
    link.uac.hang_up(uac_call, link.now)
    link.pump()
    assert link.take("uac") == [DialogEnded(uac_call, SipEndReason.CANCELLED, 487)]
    assert not link.uac.idle and link.sent("uac", "CANCEL") == []
    link.drop = lambda sender, data: False
    link.uas.ring(invite.call, link.now)
    link.pump()
    assert link.sent("uac", "CANCEL") == [0.0]
    assert link.take("uac") == []  # the app heard the end once, at hang_up()
    link.run_until(100.0)
    assert link.uac.idle and link.uas.idle
    assert CallInput.HANG_UP in INVITE_TRANSITIONS[InviteState.CALLING]

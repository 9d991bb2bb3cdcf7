"""The call state tables (callstate.py): their shape, refusals of illegal steps, and the two
things a driver learns about our own requests: ByeCompleted and SipEndpoint.idle."""

from __future__ import annotations

from pathlib import Path

import pytest

import gateway.sip.callstate as callstate
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
    RequestCompleted,
    SipEndReason,
)
from gateway.sip.message import SipRequest
from gateway.sip.parser import parse_message
from tests.sip.helpers import (
    FROM,
    HOLD,
    SDP,
    TARGET,
    UAC_ADDR,
    Link,
    assert_empty,
    establish,
)


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
    uac_call, uas_call = establish(link, ring=False)
    link.uac.send_request(uac_call, "INVITE", link.now, body=HOLD,
                          content_type="application/sdp")
    link.pump()
    (reinvite,) = [e for e in link.take("uas") if isinstance(e, ReinviteReceived)]
    # Their offer waits for our answer: we may not start one of our own (§14.1).
    with pytest.raises(StateError, match="an offer is already in progress"):
        link.uas.send_request(uas_call, "UPDATE", link.now, body=SDP,
                              content_type="application/sdp")
    assert link.uas.answer_offer(uas_call, HOLD, link.now)
    link.pump()
    assert link.uas.send_request(uas_call, "UPDATE", link.now, body=SDP,
                                 content_type="application/sdp")
    assert reinvite.call == uas_call


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



def _documented_rows(title: str) -> tuple[set[tuple[str, str, str]], set[str]]:
    """(state, input, next) rows of the table under `title` in callstate.py's docstring, and
    the states it marks with `*` (ended)."""
    block = (callstate.__doc__ or "").split(title, 1)[1].split("\n\n", 2)[1]
    rows: set[tuple[str, str, str]] = set()
    starred: set[str] = set()
    state = ""
    for line in block.splitlines()[1:]:  # the first line is the column heading
        words = line.split()
        if line[4] != " ":  # a new state in the first column
            state = words[0].rstrip("*")
            if words[0].endswith("*"):
                starred.add(state)
            words = words[1:]
        if len(words) >= 2 and words[0].isupper() and words[1].isupper():
            rows.add((state, words[0], words[1]))
    return rows, starred


def test_the_docstring_tables_are_the_code_tables() -> None:
    """The prose in callstate.py shows exactly the rows of INVITE_/OFFER_TRANSITIONS."""
    invite = {(s.name, i.name, n.name) for s, row in INVITE_TRANSITIONS.items()
              for i, n in row.items()}
    offer = {(s.name, i.name, n.name) for s, row in OFFER_TRANSITIONS.items()
             for i, n in row.items()}
    documented, starred = _documented_rows("The INVITE line")
    assert documented == invite and len(invite) == 44
    assert starred == {s.name for s in ENDED_STATES}
    assert _documented_rows("The offer line")[0] == offer


def test_a_cancelled_reinvite_closes_the_offer_and_the_call_stays_up() -> None:
    """§9.2 on a re-INVITE: 487 for it, the session stays as it was. The app's late answer is a
    no-op (no 2xx nobody asked for, no retransmissions of it, no BYE 64·T1 later)."""
    link = Link()
    uac_call, uas_call = establish(link, ring=False)
    link.uac.send_request(uac_call, "INVITE", link.now, body=HOLD,
                          content_type="application/sdp")
    sent = link.uac.datagrams_to_send()
    (reinvite_bytes,) = [o.data for o in sent]
    reinvite = parse_message(reinvite_bytes)
    assert isinstance(reinvite, SipRequest)
    link.uas.receive_datagram(reinvite_bytes, UAC_ADDR, link.now)
    assert [type(e) for e in link.uas_events()] == [ReinviteReceived]
    assert [o.data[:18] for o in link.uas.datagrams_to_send()] == [b"SIP/2.0 100 Trying"]
    cancel = "\r\n".join([
        f"CANCEL {reinvite.uri} SIP/2.0",
        f"Via: {reinvite.headers.fields('Via')[0]}",
        f"From: {reinvite.headers.get('From')}",
        f"To: {reinvite.headers.get('To')}",
        f"Call-ID: {reinvite.call_id}",
        f"CSeq: {reinvite.cseq.number} CANCEL",
        "Max-Forwards: 70",
        "Content-Length: 0",
        "", "",
    ]).encode()
    link.uas.receive_datagram(cancel, UAC_ADDR, link.now)
    answers = [o.data.split(b"\r\n", 1)[0] for o in link.uas.datagrams_to_send()]
    assert answers == [b"SIP/2.0 200 OK", b"SIP/2.0 487 Request Terminated"]
    assert not link.uas.answer_offer(uas_call, HOLD, link.now)  # the offer is gone
    link.run_until(100.0)
    assert link.sent("uas", "SIP/2.0 200") == [0.0]  # only the first call's 2xx, ever
    assert link.sent("uas", "BYE") == [] and link.sent("uac", "BYE") == []
    assert link.uas.live_calls() == [uas_call]
    assert link.uas.send_request(uas_call, "UPDATE", link.now, body=SDP,
                                 content_type="application/sdp")


def test_an_offer_left_open_when_the_call_ends_is_answered_487() -> None:
    """RFC 3261 §15: pending requests of a dialog still get a response (487). Before, a
    re-INVITE/UPDATE the app had not answered when the call ended some other way than its own
    hang_up() as UAS was never answered: the peer waited for Timer F and our server
    transaction stayed in the table for good."""
    link = Link()
    uac_call, uas_call = establish(link, ring=False)
    update = link.uas.send_request(uas_call, "UPDATE", link.now, body=HOLD,
                                   content_type="application/sdp")
    link.pump()
    assert [type(e) for e in link.take("uac")] == [ReinviteReceived]
    link.uac.hang_up(uac_call, link.now)  # the caller hangs up with the callee's offer open
    link.pump()
    assert link.sent("uac", "SIP/2.0 487") == [0.0] and link.sent("uac", "BYE") == [0.0]
    done = [e for e in link.take("uas") if isinstance(e, RequestCompleted)]
    assert [(e.handle, e.status) for e in done] == [(update, 487)]
    link.run_until(100.0)
    assert_empty(link)


def _markdown_rows(text: str, heading: str) -> tuple[set[tuple[str, str, str]], set[str]]:
    """(state, input, next) rows of the first table under `heading` in a markdown file; an
    input cell may name several inputs ("A / B"); `**UAS**`-style rows only group states."""
    lines = text.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|---"))
    rows: set[tuple[str, str, str]] = set()
    starred: set[str] = set()
    state = ""
    for line in lines[start + 1:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0].startswith("**"):
            continue
        if cells[0]:
            state = cells[0].rstrip("*")
            if cells[0].endswith("*"):
                starred.add(state)
        for event in cells[1].split(" / "):
            rows.add((state, event.strip(), cells[2]))
    return rows, starred


def test_the_architecture_guide_shows_the_code_tables() -> None:
    """docs/architecture.md §3 is kept true: the same rows as INVITE_/OFFER_TRANSITIONS."""
    doc = (Path(__file__).parents[2] / "docs" / "architecture.md").read_text()
    invite = {(s.name, i.name, n.name) for s, row in INVITE_TRANSITIONS.items()
              for i, n in row.items()}
    offer = {(s.name, i.name, n.name) for s, row in OFFER_TRANSITIONS.items()
             for i, n in row.items()}
    rows, starred = _markdown_rows(doc, "### The INVITE line")
    assert rows == invite
    assert starred == {s.name for s in ENDED_STATES}
    assert _markdown_rows(doc, "### The offer line")[0] == offer

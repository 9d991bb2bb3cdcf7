"""A UAC core and a UAS core over a fake link: call, CANCEL, re-INVITE, BYE each way, loss."""

from __future__ import annotations

from gateway.sip.address import Transport
from gateway.sip.core import EndpointConfig
from gateway.sip.endpoint import SipEndpoint
from gateway.sip.events import (
    AckReceived,
    ByeCompleted,
    ByeReceived,
    CallAnswered,
    CallCancelled,
    CallFailed,
    DialogEnded,
    InfoReceived,
    InviteReceived,
    ReinviteReceived,
    RequestCompleted,
    SipEndReason,
)
from gateway.sip.message import SipRequest
from gateway.sip.parser import parse_message
from gateway.sip.timers import TimerSettings
from tests.sip.helpers import (
    FROM,
    HOLD,
    RESUME,
    SDP,
    TARGET,
    UAC_ADDR,
    UAS_ADDR,
    Link,
    assert_empty,
    establish,
)


def bye_answered(event: object, call: int, status: int = 200) -> bool:
    """Our BYE for `call` got its final response `status` (ByeCompleted)."""
    return isinstance(event, ByeCompleted) and (event.call, event.status) == (call, status)


def test_call_and_bye_from_the_caller() -> None:
    link = Link()
    uac_call, uas_call = establish(link)
    assert link.sent("uas", "SIP/2.0 100") == [0.0]  # 100 Trying at once
    link.run_until(60.0)  # nothing is retransmitted once ACKed, no timers fire the call down
    assert link.sent("uas", "SIP/2.0 200") == [0.0]
    link.uac.hang_up(uac_call, link.now)
    link.pump()
    events = link.take("uas")
    assert isinstance(events[0], ByeReceived)
    assert events[1] == DialogEnded(uas_call, SipEndReason.REMOTE_BYE)
    ended, bye_done = link.take("uac")
    assert ended == DialogEnded(uac_call, SipEndReason.LOCAL_BYE)
    assert bye_answered(bye_done, uac_call)
    link.run_until(200.0)
    assert_empty(link)


def test_call_and_bye_from_the_callee() -> None:
    link = Link()
    _uac_call, uas_call = establish(link)
    link.uas.hang_up(uas_call, link.now)
    link.pump()
    assert link.sent("uas", "BYE") == [0.0] and link.sent("uac", "SIP/2.0 200") == [0.0]
    assert [type(e) for e in link.take("uac")] == [ByeReceived, DialogEnded]
    ended, bye_done = link.take("uas")
    assert ended == DialogEnded(uas_call, SipEndReason.LOCAL_BYE)
    assert bye_answered(bye_done, uas_call)
    link.uas.hang_up(uas_call, link.now)  # idempotent
    link.run_until(100.0)
    assert_empty(link)


def test_cancel_before_answer() -> None:
    link = Link()
    uac_call = link.uac.invite(TARGET, link.now, sdp=SDP, from_uri=FROM)
    link.pump()
    (invite,) = link.take("uas")
    assert isinstance(invite, InviteReceived)
    link.uas.ring(invite.call, link.now)
    link.pump()
    link.take("uac")
    link.uac.hang_up(uac_call, link.now)
    link.pump()
    assert link.take("uas") == [
        CallCancelled(invite.call), DialogEnded(invite.call, SipEndReason.CANCELLED, 487)
    ]
    assert link.take("uac") == [DialogEnded(uac_call, SipEndReason.CANCELLED, 487)]
    assert link.sent("uas", "SIP/2.0 487") == [0.0] and link.sent("uac", "ACK") == [0.0]
    link.run_until(100.0)
    assert link.sent("uas", "SIP/2.0 487") == [0.0]  # the ACK stopped Timer G
    assert_empty(link)


def test_cancel_before_any_provisional_waits_for_one() -> None:
    link = Link()
    uac_call = link.uac.invite(TARGET, link.now, sdp=SDP, from_uri=FROM)
    link.uac.hang_up(uac_call, link.now)  # nothing came back yet: §9.1 says wait
    assert link.sent("uac", "CANCEL") == []
    link.pump()  # the UAS sends 100 Trying: a provisional response, so the CANCEL goes
    assert link.sent("uac", "CANCEL") == [0.0]
    events = link.take("uas")
    (invite,) = [e for e in events if isinstance(e, InviteReceived)]
    assert events[-1] == DialogEnded(invite.call, SipEndReason.CANCELLED, 487)


def test_reinvite_hold_and_resume_from_either_side() -> None:
    link = Link()
    uac_call, uas_call = establish(link)
    for sender, receiver, call_s, call_r, sdp in (
        ("uac", "uas", uac_call, uas_call, HOLD),
        ("uac", "uas", uac_call, uas_call, RESUME),
        ("uas", "uac", uas_call, uac_call, HOLD),
        ("uas", "uac", uas_call, uac_call, RESUME),
    ):
        ep_s = getattr(link, sender)
        ep_r = getattr(link, receiver)
        handle = ep_s.send_request(call_s, "INVITE", link.now, body=sdp,
                                   content_type="application/sdp")
        link.pump()
        (offer,) = link.take(receiver)
        assert isinstance(offer, ReinviteReceived) and offer.sdp == sdp
        assert offer.method == "INVITE" and offer.call == call_r
        ep_r.answer_offer(call_r, sdp, link.now)
        link.pump()
        (done,) = link.take(sender)
        assert isinstance(done, RequestCompleted) and done.status == 200
        assert done.handle == handle and done.response is not None
        assert done.response.body == sdp
        assert link.take(receiver) == [AckReceived(call_r, None)]
    link.run_until(40.0)
    assert link.take("uac") == [] and link.take("uas") == []  # every 2xx was ACKed


def test_update_and_info_and_rejected_offer() -> None:
    link = Link()
    uac_call, uas_call = establish(link)
    link.uac.send_request(uac_call, "UPDATE", link.now, body=HOLD, content_type="application/sdp")
    link.pump()
    (offer,) = link.take("uas")
    assert isinstance(offer, ReinviteReceived) and offer.method == "UPDATE"
    link.uas.reject_offer(uas_call, 488, link.now)
    link.pump()
    (done,) = link.take("uac")
    assert isinstance(done, RequestCompleted) and done.status == 488
    link.uac.send_request(uac_call, "INFO", link.now, body=b"Signal=5\r\nDuration=160\r\n",
                          content_type="application/dtmf-relay")
    link.pump()
    (info,) = link.take("uas")
    assert isinstance(info, InfoReceived) and info.body.startswith(b"Signal=5")
    assert info.content_type == "application/dtmf-relay"
    (done,) = link.take("uac")
    assert isinstance(done, RequestCompleted) and done.method == "INFO" and done.status == 200


def test_retransmitted_invite_yields_one_event_and_repeats_the_last_response() -> None:
    link = Link()
    # Lose every response from the UAS for a while: the UAC retransmits its INVITE (Timer A).
    link.drop = lambda sender, data: sender == "uas" and link.now < 2.0
    link.uac.invite(TARGET, link.now, sdp=SDP, from_uri=FROM)
    link.run_until(1.9)
    assert link.sent("uac", "INVITE") == [0.0, 0.5, 1.5]
    assert link.sent("uas", "SIP/2.0 100") == [0.0, 0.5, 1.5]
    events = link.take("uas")
    assert len(events) == 1 and isinstance(events[0], InviteReceived)
    link.run_until(3.6)
    assert link.sent("uac", "INVITE") == [0.0, 0.5, 1.5, 3.5]  # the 100 at 3.5 stops Timer A
    link.run_until(10.0)
    assert link.sent("uac", "INVITE") == [0.0, 0.5, 1.5, 3.5]
    assert link.take("uas") == []


def test_lost_ack_means_2xx_retransmission_then_bye_after_64_t1() -> None:
    link = Link()
    link.drop = lambda sender, data: sender == "uac" and data.startswith(b"ACK")
    uac_call = link.uac.invite(TARGET, link.now, sdp=SDP, from_uri=FROM)
    link.pump()
    (invite,) = link.take("uas")
    assert isinstance(invite, InviteReceived)
    link.uas.answer(invite.call, SDP, link.now)
    link.run_until(31.99)
    # T1 doubling to T2: 0.5, 1.5, 3.5, 7.5, 11.5, ... 31.5 after the first send at 0.
    expected = [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert link.sent("uas", "SIP/2.0 200") == expected
    assert link.sent("uac", "ACK") == expected  # the UAC core ACKs every 2xx copy
    assert link.sent("uas", "BYE") == []
    link.run_until(32.0)
    assert link.sent("uas", "BYE") == [32.0]
    ended, bye_done = link.take("uas")
    assert ended == DialogEnded(invite.call, SipEndReason.ACK_TIMEOUT)
    assert bye_answered(bye_done, invite.call)
    assert [type(e) for e in link.take("uac")] == [CallAnswered, ByeReceived, DialogEnded]
    link.run_until(100.0)
    assert link.sent("uas", "SIP/2.0 200") == expected
    assert uac_call
    assert_empty(link)


def test_hang_up_before_the_ack_waits_for_it() -> None:
    link = Link()
    link.drop = lambda sender, data: sender == "uac" and data.startswith(b"ACK") and link.now < 1
    link.uac.invite(TARGET, link.now, sdp=SDP, from_uri=FROM)
    link.pump()
    (invite,) = link.take("uas")
    assert isinstance(invite, InviteReceived)
    link.uas.answer(invite.call, SDP, link.now)
    link.pump()
    link.uas.hang_up(invite.call, link.now)
    link.pump()
    assert link.sent("uas", "BYE") == []  # §15: not before the ACK
    assert link.take("uas") == [DialogEnded(invite.call, SipEndReason.LOCAL_BYE)]
    link.run_until(1.5)  # the retransmitted 2xx at 1.5 gets an ACK through; BYE follows
    assert link.sent("uas", "BYE") == [1.5]
    (bye_done,) = link.take("uas")
    assert bye_answered(bye_done, invite.call)
    link.run_until(100.0)
    assert [type(e) for e in link.take("uac")][-2:] == [ByeReceived, DialogEnded]
    assert_empty(link)


def test_rejected_call_and_invite_timeout() -> None:
    link = Link()
    uac_call = link.uac.invite(TARGET, link.now, sdp=SDP, from_uri=FROM)
    link.pump()
    (invite,) = link.take("uas")
    assert isinstance(invite, InviteReceived)
    link.uas.reject(invite.call, 503, link.now, headers=[("Retry-After", "30")])
    link.pump()
    assert link.take("uac") == [
        CallFailed(uac_call, 503, "Service Unavailable"),
        DialogEnded(uac_call, SipEndReason.FAILED, 503),
    ]
    assert link.take("uas") == [DialogEnded(invite.call, SipEndReason.REJECTED, 503)]
    assert link.sent("uac", "ACK") == [0.0]

    link.drop = lambda sender, data: True  # nobody answers: Timer B
    lost = link.uac.invite(TARGET, link.now, sdp=SDP, from_uri=FROM)
    link.run_until(link.now + 32.0)
    assert link.take("uac") == [
        CallFailed(lost, 408, "Request Timeout"), DialogEnded(lost, SipEndReason.TIMEOUT, 408)
    ]
    link.run_until(link.now + 100.0)
    assert_empty(link)


def test_short_timers_scale_everything() -> None:
    link = Link(TimerSettings(T1=0.1, T2=0.4, T4=1.0))
    link.drop = lambda sender, data: sender == "uac" and data.startswith(b"ACK")
    link.uac.invite(TARGET, link.now, sdp=SDP, from_uri=FROM)
    link.pump()
    (invite,) = link.take("uas")
    assert isinstance(invite, InviteReceived)
    link.uas.answer(invite.call, SDP, link.now)
    link.run_until(10.0)
    assert link.sent("uas", "SIP/2.0 200") == [
        0.0, 0.1, 0.3, 0.7, 1.1, 1.5, 1.9, 2.3, 2.7, 3.1, 3.5, 3.9, 4.3, 4.7, 5.1, 5.5, 5.9, 6.3
    ]
    assert link.sent("uas", "BYE") == [6.4]


def test_session_timer_refreshes_keep_the_call_and_a_missing_refresh_ends_it() -> None:
    link = Link(session_expires=120)
    uac_call, uas_call = establish(link)
    # The UAS chose refresher=uac; the UAC refreshes with UPDATE (allowed) every 60 s.
    link.run_until(200.0)
    assert link.sent("uac", "UPDATE") == [60.0, 120.0, 180.0]
    assert link.sent("uas", "BYE") == []
    assert link.take("uas") == [] and link.take("uac") == []
    # The refreshes stop arriving: the UAS sends BYE 88 s (120 - min(32, 40)) after the last.
    link.drop = lambda sender, data: data.startswith(b"UPDATE")
    link.run_until(300.0)
    assert link.sent("uas", "BYE") == [180.0 + 88.0]
    ended, bye_done = link.take("uas")
    assert ended == DialogEnded(uas_call, SipEndReason.SESSION_EXPIRED)
    assert bye_answered(bye_done, uas_call)
    assert [type(e) for e in link.take("uac")] == [ByeReceived, DialogEnded]
    assert uac_call
    link.run_until(400.0)
    assert_empty(link)


def test_422_makes_the_uac_retry_with_the_peers_min_se() -> None:
    link = Link(session_expires=120)
    link.uas = SipEndpoint(EndpointConfig(min_se=300))  # a stricter callee
    link.uas.bind(Transport.UDP, *UAS_ADDR)
    uac_call = link.uac.invite(TARGET, link.now, sdp=SDP, from_uri=FROM)
    link.pump()
    assert link.sent("uas", "SIP/2.0 422") == [0.0] and len(link.sent("uac", "INVITE")) == 2
    (invite,) = link.take("uas")
    assert isinstance(invite, InviteReceived)
    assert invite.request.headers.get("Session-Expires") == "300"
    assert invite.request.cseq.number == 2
    link.uas.answer(invite.call, SDP, link.now)
    link.pump()
    assert [type(e) for e in link.take("uac")] == [CallAnswered]
    link.uac.hang_up(uac_call, link.now)
    link.run_until(100.0)
    assert_empty(link)


def test_options_ping_and_its_timeout() -> None:
    link = Link()
    handle = link.uac.send_options(TARGET, link.now, from_uri=FROM)
    link.pump()
    (done,) = link.take("uac")
    assert isinstance(done, RequestCompleted) and done.handle == handle and done.call is None
    assert done.status == 200 and done.response is not None
    assert "INVITE" in done.response.headers.get_all("Allow")
    assert link.take("uas") == []
    link.drop = lambda sender, data: True
    lost = link.uac.send_options(TARGET, link.now, from_uri=FROM)
    link.run_until(link.now + 31.9)
    assert link.take("uac") == []
    link.run_until(link.now + 0.1)  # Timer F = 64·T1
    assert link.take("uac") == [RequestCompleted(lost, None, "OPTIONS", 408, None)]
    link.run_until(link.now + 100)
    assert_empty(link)


def test_cancel_that_the_peer_ignores_is_given_up_after_64_t1() -> None:
    link = Link()
    uac_call = link.uac.invite(TARGET, link.now, sdp=SDP, from_uri=FROM)
    link.pump()
    (invite,) = link.take("uas")
    assert isinstance(invite, InviteReceived)
    link.uas.ring(invite.call, link.now)
    link.pump()
    link.drop = lambda sender, data: data.startswith(b"CANCEL")  # it never arrives
    link.uac.hang_up(uac_call, link.now)
    link.pump()
    assert link.take("uac")[-1] == DialogEnded(uac_call, SipEndReason.CANCELLED, 487)
    link.run_until(31.9)
    assert link.uac.table_sizes()["calls"] == 1
    link.run_until(32.0)
    assert link.uac.table_sizes()["calls"] == 0 and link.take("uac") == []


def test_a_second_forked_2xx_is_acked_and_hung_up() -> None:
    link = Link()
    uac_call = link.uac.invite(TARGET, link.now, sdp=SDP, from_uri=FROM)
    link.pump()
    (invite,) = link.take("uas")
    assert isinstance(invite, InviteReceived)
    link.uas.answer(invite.call, SDP, link.now)
    link.pump()
    assert [type(e) for e in link.take("uac")] == [CallAnswered]
    # A second UAS behind a forking proxy answers the same INVITE with its own tag.
    other = parse_message(link.uas.call_request(invite.call).to_bytes())
    assert isinstance(other, SipRequest)
    fork = SipEndpoint()
    fork.bind(Transport.UDP, *UAS_ADDR)
    fork.receive_datagram(other.to_bytes(), UAC_ADDR, link.now)
    forked = fork.next_event()
    assert isinstance(forked, InviteReceived)
    fork.answer(forked.call, SDP, link.now)
    for out in fork.datagrams_to_send():
        link.uac.receive_datagram(out.data, UAS_ADDR, link.now)
    sent = [o.data.split(b" ", 1)[0] for o in link.uac.datagrams_to_send()]
    assert sent == [b"ACK", b"BYE"]
    assert link.uac.next_event() is None  # the application still has exactly one call
    assert link.uac.live_calls() == [uac_call]


def test_in_dialog_request_answered_481_ends_the_call() -> None:
    link = Link()
    uac_call, uas_call = establish(link)
    link.uas = SipEndpoint()  # the callee restarted and forgot the dialog
    link.uas.bind(Transport.UDP, *UAS_ADDR)
    link.uac.send_request(uac_call, "INFO", link.now, body=b"x", content_type="text/plain")
    link.pump()
    (done, ended) = link.take("uac")
    assert isinstance(done, RequestCompleted) and done.status == 481
    assert ended == DialogEnded(uac_call, SipEndReason.REMOTE_ERROR, 481)
    assert link.sent("uac", "BYE") == [] and uas_call

"""The endpoint as a UAS fed raw datagrams: §8.2 checks, routing, malformed input, policy."""

from __future__ import annotations

import pytest

from gateway.sip.address import Outgoing, Peer, Transport
from gateway.sip.core import DROP, EndpointConfig, SipVerdict
from gateway.sip.endpoint import SipEndpoint
from gateway.sip.events import DialogEnded, InviteReceived, SipEndReason
from gateway.sip.message import SipRequest, SipResponse
from gateway.sip.parser import parse_message

SRC = ("127.0.0.1", 40000)


def raw(method: str = "INVITE", *, via: str | None = None, to_tag: str = "", cseq: int = 1,
        extra: str = "", call_id: str = "c1@127.0.0.1", branch: str = "z9hG4bK-1",
        body: str = "") -> bytes:
    via = via or f"SIP/2.0/UDP 127.0.0.1:5090;branch={branch};rport"
    tag = f";tag={to_tag}" if to_tag else ""
    return (
        f"{method} sip:agent@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: {via}\r\n"
        "From: \"Caller\" <sip:+4930111@127.0.0.1>;tag=f1\r\n"
        f"To: <sip:agent@127.0.0.1>{tag}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n"
        "Contact: <sip:caller@127.0.0.1:5090>\r\n"
        f"{extra}Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def responses(ep: SipEndpoint) -> list[tuple[SipResponse, Outgoing]]:
    out = []
    for item in ep.datagrams_to_send():
        message = parse_message(item.data)
        assert isinstance(message, SipResponse)
        out.append((message, item))
    return out


def only_response(ep: SipEndpoint) -> tuple[SipResponse, Outgoing]:
    (one,) = responses(ep)
    return one


def advance(ep: SipEndpoint, until: float) -> list[Outgoing]:
    """Fire every deadline up to `until` at its time; return what was sent."""
    sent: list[Outgoing] = []
    while (deadline := ep.get_timer()) is not None and deadline <= until:
        ep.handle_timer(deadline)
        sent += ep.datagrams_to_send()
    return sent


@pytest.fixture
def ep() -> SipEndpoint:
    endpoint = SipEndpoint()
    endpoint.bind(Transport.UDP, "127.0.0.1", 5060)
    return endpoint


def test_options_outside_a_dialog(ep: SipEndpoint) -> None:
    ep.receive_datagram(raw("OPTIONS"), SRC, 0.0)
    resp, out = only_response(ep)
    assert resp.status == 200 and resp.to.tag
    assert "OPTIONS" in resp.headers.get_all("Allow") and "INVITE" in resp.headers.get_all("Allow")
    assert "application/sdp" in resp.headers.get_all("Accept")
    assert "timer" in resp.headers.get_all("Supported")
    assert out.addr == SRC  # rport: back to the source port, not 5090
    assert resp.top_via.param("rport") == "40000" and resp.top_via.param("received") == SRC[0]
    assert ep.next_event() is None


def test_response_without_rport_goes_to_sent_by_port_with_received(ep: SipEndpoint) -> None:
    ep.receive_datagram(raw("OPTIONS", via="SIP/2.0/UDP 10.1.1.1:5090;branch=z9hG4bK-2"),
                        SRC, 0.0)
    resp, out = only_response(ep)
    assert out.addr == ("127.0.0.1", 5090)  # received host, sent-by port (§18.2.2)
    assert resp.top_via.param("received") == "127.0.0.1"


@pytest.mark.parametrize(
    ("data", "status", "header", "value"),
    [
        (raw("SUBSCRIBE"), 405, "Allow", "INVITE"),
        (raw("MESSAGE"), 405, "Allow", "BYE"),
        (raw("INVITE", extra="Require: 100rel, foo\r\n"), 420, "Unsupported", "100rel"),
        (raw("BYE", to_tag="nope"), 481, None, None),
        (raw("INFO", to_tag="nope"), 481, None, None),
        (raw("BYE"), 481, None, None),
        (raw("CANCEL"), 481, None, None),
        (raw("INVITE", extra="Session-Expires: 30\r\n"), 422, "Min-SE", "90"),
    ],
)
def test_requests_answered_with_an_error(
    ep: SipEndpoint, data: bytes, status: int, header: str | None, value: str | None
) -> None:
    ep.receive_datagram(data, SRC, 0.0)
    resp, _ = only_response(ep)
    assert resp.status == status
    if header is not None:
        assert value in resp.headers.get_all(header)
    assert ep.next_event() is None
    ep.receive_datagram(data, SRC, 0.1)  # a retransmission gets the same answer, no event
    again, _ = only_response(ep)
    assert again.status == status and again.to.tag == resp.to.tag


@pytest.mark.parametrize(
    ("data", "warning"),
    [
        (raw("INVITE").replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), "does not match"),
        (raw("INVITE").replace(b"Max-Forwards: 70", b"Max-Forwards: many"), "Max-Forwards"),
        (raw("INVITE").replace(b"Content-Length: 0", b"Content-Length: 99"), "Content-Length"),
        (raw("INVITE", extra="Require: a b\r\n"), "option tag"),
        (raw("INVITE", extra="Session-Expires: soon\r\n"), "Session-Expires"),
    ],
)
def test_malformed_but_addressable_requests_get_400_with_a_warning(
    ep: SipEndpoint, data: bytes, warning: str
) -> None:
    ep.receive_datagram(data, SRC, 0.0)
    resp, out = only_response(ep)
    assert resp.status == 400 and warning in (resp.headers.get("Warning") or "")
    assert resp.reason.startswith("Bad Request (")  # the wire's reason phrase, not a class name
    assert out.addr == SRC
    assert ep.next_event() is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n\r\n",
        b"\x00\xff garbage",
        b"INVITE sip:x SIP/2.0\r\n\r\n",  # nothing to address a response with
        raw("INVITE").replace(b"Via: SIP/2.0/UDP", b"Via: SIP/3.0/UDP"),
        b"SIP/2.0 200 OK\r\nVia: broken\r\n\r\n",
        raw("ACK").replace(b"CSeq: 1 ACK", b"CSeq: x ACK"),  # never answer an ACK
        b"SIP/2.0 200 OK\r\n" + raw("OPTIONS").split(b"\r\n", 1)[1],  # matches no transaction
    ],
)
def test_hopeless_input_is_dropped_without_raising(ep: SipEndpoint, data: bytes) -> None:
    ep.receive_datagram(data, SRC, 0.0)
    assert ep.datagrams_to_send() == [] and ep.next_event() is None


def test_bad_version_is_answered_505(ep: SipEndpoint) -> None:
    ep.receive_datagram(raw("OPTIONS").replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), SRC, 0.0)
    resp, _ = only_response(ep)
    assert resp.status == 505


class Policy:
    def __init__(self, verdict: SipVerdict) -> None:
        self.verdict = verdict
        self.seen: list[tuple[Peer, str]] = []
        self.admitted: list[object | None] = []

    def screen(self, source: Peer, request: SipRequest, now: float,
               admitted: object | None = None) -> SipVerdict:
        self.seen.append((source, request.method))
        self.admitted.append(admitted)
        return self.verdict

    def admit(self, host: str, now: float) -> object | None:
        return None if host == "192.0.2.99" else ("token", host)


def test_pre_dispatch_can_drop_or_answer_before_any_event() -> None:
    policy = Policy(DROP)
    ep = SipEndpoint(pre_dispatch=policy)
    ep.receive_datagram(raw(), SRC, 0.0)
    assert ep.datagrams_to_send() == [] and ep.next_event() is None
    assert policy.seen == [(Peer(*SRC), "INVITE")]
    policy.verdict = SipVerdict.respond(503, headers=[("Retry-After", "60")])
    ep.receive_datagram(raw(branch="z9hG4bK-2"), SRC, 0.0)
    resp, _ = only_response(ep)
    assert resp.status == 503 and resp.headers.get("Retry-After") == "60"
    ep.receive_datagram(raw(branch="z9hG4bK-2"), SRC, 0.1)  # retransmission: no second screen
    assert len(policy.seen) == 2 and only_response(ep)[0].status == 503
    assert ep.next_event() is None


def test_gate_decision_reaches_the_screen_and_the_trunk_reaches_the_event() -> None:
    policy = Policy(SipVerdict.allow("pbx"))
    ep = SipEndpoint(pre_dispatch=policy, gate=policy)
    ep.receive_datagram(raw(), ("192.0.2.99", 5060), 0.0)  # the gate drops it unparsed
    assert policy.seen == [] and ep.datagrams_to_send() == []
    ep.receive_datagram(raw(), SRC, 0.0)
    assert policy.admitted == [("token", SRC[0])]
    event = ep.next_event()
    assert isinstance(event, InviteReceived) and event.trunk == "pbx"


def test_invite_event_and_admission_reject_with_headers(ep: SipEndpoint) -> None:
    ep.receive_datagram(raw(body="v=0\r\n", extra="Content-Type: application/sdp\r\n"), SRC, 0.0)
    (trying, _) = only_response(ep)
    assert trying.status == 100 and trying.to.tag is None
    event = ep.next_event()
    assert isinstance(event, InviteReceived) and event.sdp == b"v=0\r\n"
    assert event.source == Peer(*SRC) and event.request.method == "INVITE"
    ep.reject(event.call, 503, 0.1, reason="Overloaded", headers=[("Retry-After", "5")])
    resp, _ = only_response(ep)
    assert (resp.status, resp.reason, resp.headers.get("Retry-After")) == (503, "Overloaded", "5")
    assert ep.next_event() == DialogEnded(event.call, SipEndReason.REJECTED, 503)
    assert resp.to.tag is not None
    ack = raw("ACK", to_tag=resp.to.tag)
    ep.receive_datagram(ack, SRC, 0.2)  # absorbed by the transaction
    ep.handle_timer(0.6)
    assert ep.datagrams_to_send() == []  # Timer G stopped by the ACK


def test_cseq_out_of_order_in_dialog_gets_500(ep: SipEndpoint) -> None:
    ep.receive_datagram(raw(cseq=5), SRC, 0.0)
    event = ep.next_event()
    assert isinstance(event, InviteReceived)
    ep.answer(event.call, b"v=0\r\n", 0.0)
    (_, _), (ok, _) = responses(ep)
    tag = ok.to.tag or ""
    assert ok.headers.get("Contact") == "<sip:gateway@127.0.0.1:5060>"
    ep.receive_datagram(raw("ACK", to_tag=tag, cseq=5, branch="z9hG4bK-a"), SRC, 0.1)
    ep.receive_datagram(raw("INFO", to_tag=tag, cseq=4, branch="z9hG4bK-i"), SRC, 0.2)
    resp, _ = only_response(ep)
    assert resp.status == 500


def test_tcp_responses_go_back_on_the_connection_and_broken_framing_closes_it() -> None:
    ep = SipEndpoint()
    ep.bind(Transport.TCP, "127.0.0.1", 5060)
    data = raw("OPTIONS", via="SIP/2.0/TCP 127.0.0.1:5090;branch=z9hG4bK-t")
    assert ep.receive_stream(data[:30], 9, SRC, 0.0) is True
    assert ep.datagrams_to_send() == []
    assert ep.receive_stream(data[30:] + data.replace(b"-t", b"-u"), 9, SRC, 0.0) is True
    outs = ep.datagrams_to_send()
    assert len(outs) == 2
    # On connection 9; should it be gone, the driver connects to received:sent-by-port.
    assert all(o.conn_id == 9 and o.transport is Transport.TCP for o in outs)
    assert all(o.addr == ("127.0.0.1", 5090) for o in outs)
    assert ep.receive_stream(b"INVITE nonsense\r\n\r\n", 9, SRC, 0.0) is False
    assert ep.receive_stream(data, 10, SRC, 0.0) is True  # other connections unaffected
    assert len(ep.datagrams_to_send()) == 1


def test_session_timer_answer_and_expiry_bye(ep: SipEndpoint) -> None:
    extra = "Supported: timer\r\nSession-Expires: 120;refresher=uac\r\n"
    ep.receive_datagram(raw(extra=extra), SRC, 0.0)
    event = ep.next_event()
    assert isinstance(event, InviteReceived)
    ep.answer(event.call, b"v=0\r\n", 0.0)
    ok = responses(ep)[-1][0]
    assert ok.headers.get("Session-Expires") == "120;refresher=uac"
    assert ok.headers.get("Require") == "timer"
    tag = ok.to.tag or ""
    ep.receive_datagram(raw("ACK", to_tag=tag, branch="z9hG4bK-a"), SRC, 0.1)
    ep.next_event()
    # The peer refreshes at 50 s with an offerless UPDATE: answered at once, timer restarts.
    ep.receive_datagram(raw("UPDATE", to_tag=tag, cseq=2, branch="z9hG4bK-u", extra=extra),
                        SRC, 50.0)
    refreshed, _ = only_response(ep)
    assert refreshed.status == 200 and refreshed.headers.get("Session-Expires")
    assert advance(ep, 50.0 + 87.9) == []  # BYE at expiry minus min(32, SE/3) = 88 s later
    assert ep.next_event() is None
    (bye,) = [parse_message(o.data) for o in advance(ep, 50.0 + 88.0)]
    assert isinstance(bye, SipRequest) and bye.uri is not None
    assert str(bye.uri) == "sip:caller@127.0.0.1:5090"  # the remote target (Contact)
    assert ep.next_event() == DialogEnded(event.call, SipEndReason.SESSION_EXPIRED)


def test_session_timer_when_we_must_refresh(ep: SipEndpoint) -> None:
    # The caller does not support timers (a proxy added Session-Expires): we refresh, by
    # re-INVITE because the caller does not allow UPDATE.
    ep.receive_datagram(raw(extra="Session-Expires: 100\r\n"), SRC, 0.0)
    event = ep.next_event()
    assert isinstance(event, InviteReceived)
    ep.answer(event.call, b"v=0\r\n", 0.0)
    ok = responses(ep)[-1][0]
    assert ok.headers.get("Session-Expires") == "100;refresher=uas"
    assert ok.headers.get("Require") is None
    ep.receive_datagram(raw("ACK", to_tag=ok.to.tag or "", branch="z9hG4bK-a"), SRC, 0.1)
    ep.next_event()
    assert advance(ep, 49.99) == []
    (reinvite,) = [parse_message(o.data) for o in advance(ep, 50.0)]
    assert isinstance(reinvite, SipRequest) and reinvite.method == "INVITE"
    assert reinvite.body == b"v=0\r\n" and reinvite.to.tag == "f1"
    assert reinvite.headers.get("Session-Expires") == "100;refresher=uac"


def test_endpoint_config_min_se_is_respected() -> None:
    ep = SipEndpoint(EndpointConfig(min_se=300))
    ep.receive_datagram(raw(extra="Session-Expires: 200\r\n"), SRC, 0.0)
    resp, _ = only_response(ep)
    assert resp.status == 422 and resp.headers.get("Min-SE") == "300"


def test_after_the_answer_cancel_and_retransmitted_invite_change_nothing(ep: SipEndpoint) -> None:
    ep.receive_datagram(raw(), SRC, 0.0)
    event = ep.next_event()
    assert isinstance(event, InviteReceived)
    ep.answer(event.call, b"v=0\r\n", 0.0)
    ok = responses(ep)[-1][0]
    tag = ok.to.tag or ""
    ep.receive_datagram(raw(), SRC, 0.1)  # INVITE retransmission: absorbed (RFC 6026)
    assert ep.datagrams_to_send() == [] and ep.next_event() is None
    ep.receive_datagram(raw("CANCEL"), SRC, 0.2)  # too late: 200 for the CANCEL only
    assert [r.status for r, _ in responses(ep)] == [200]
    assert ep.next_event() is None
    # A re-INVITE before our 2xx is ACKed: 491, the peer retries later.
    ep.receive_datagram(raw("INVITE", to_tag=tag, cseq=2, branch="z9hG4bK-r"), SRC, 0.3)
    assert [r.status for r, _ in responses(ep)] == [491]
    ep.receive_datagram(raw("ACK", to_tag=tag, branch="z9hG4bK-a"), SRC, 0.4)
    assert ep.next_event() is not None  # AckReceived
    ep.receive_datagram(raw("INVITE", to_tag=tag, cseq=3, branch="z9hG4bK-s",
                            extra="Content-Type: application/sdp\r\n", body="v=0\r\n"), SRC, 0.5)
    assert [r.status for r, _ in responses(ep)] == [100]
    offer = ep.next_event()
    assert offer is not None and type(offer).__name__ == "ReinviteReceived"


def test_ipv6_source_gets_bare_received_and_rport(ep: SipEndpoint) -> None:
    via = "SIP/2.0/UDP [2001:db8::5]:5090;branch=z9hG4bK-6;rport"
    ep.receive_datagram(raw("OPTIONS", via=via), ("2001:db8::9", 40000), 0.0)
    resp, out = only_response(ep)
    assert out.addr == ("2001:db8::9", 40000)
    assert resp.headers.get("Via") == (
        "SIP/2.0/UDP [2001:db8::5]:5090;branch=z9hG4bK-6;received=2001:db8::9;rport=40000"
    )


def test_commands_after_the_peer_ended_the_call_are_harmless_no_ops(ep: SipEndpoint) -> None:
    ep.receive_datagram(raw(), SRC, 0.0)
    event = ep.next_event()
    assert isinstance(event, InviteReceived)
    ep.receive_datagram(raw("CANCEL"), SRC, 0.1)
    got = responses(ep)
    assert [r.status for r, _ in got] == [100, 200, 487]
    assert got[1][0].to.tag == got[2][0].to.tag  # the CANCEL's 200 shares the INVITE's tag
    assert ep.answer(event.call, b"v=0\r\n", 0.2) is False  # the race with CANCEL
    assert ep.ring(event.call, 0.2) is False and ep.hang_up(event.call, 0.2) is False
    assert ep.answer_offer(event.call, b"v=0\r\n", 0.2) is False
    assert ep.datagrams_to_send() == []
    from gateway.sip.errors import UsageError

    with pytest.raises(UsageError):
        ep.answer(event.call + 100, b"v=0\r\n", 0.2)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("extra", "header", "require", "due", "method"),
    [
        # The caller refreshes; if it never does we send BYE at SE - min(32, SE/3).
        ("Supported: timer\r\n", "600;refresher=uac", "timer", 568.0, "BYE"),
        # The caller knows no timers: we refresh at SE/2 (re-INVITE: it did not allow UPDATE).
        ("", "600;refresher=uas", None, 300.0, "INVITE"),
        # Never below the caller's Min-SE.
        ("Supported: timer\r\nMin-SE: 900\r\n", "900;refresher=uac", "timer", 868.0, "BYE"),
    ],
)
def test_uas_can_impose_a_session_timer(
    extra: str, header: str, require: str | None, due: float, method: str
) -> None:
    ep = SipEndpoint(EndpointConfig(uas_session_expires=600))
    ep.receive_datagram(raw(extra=extra), SRC, 0.0)
    event = ep.next_event()
    assert isinstance(event, InviteReceived)
    ep.answer(event.call, b"v=0\r\n", 0.0)
    ok = responses(ep)[-1][0]
    assert ok.headers.get("Session-Expires") == header
    assert ok.headers.get("Require") == require
    ep.receive_datagram(raw("ACK", to_tag=ok.to.tag or "", branch="z9hG4bK-a"), SRC, 0.1)
    assert advance(ep, due - 0.001) == []
    (first,) = [parse_message(o.data) for o in advance(ep, due)]
    assert isinstance(first, SipRequest) and first.method == method


def test_same_invite_by_another_path_is_a_merged_request_482(ep: SipEndpoint) -> None:
    ep.receive_datagram(raw(), SRC, 0.0)
    assert isinstance(ep.next_event(), InviteReceived)
    ep.datagrams_to_send()
    ep.receive_datagram(raw(branch="z9hG4bK-other-path"), SRC, 0.1)
    resp, _ = only_response(ep)
    assert resp.status == 482 and ep.next_event() is None


def test_observer_sees_every_message_in_and_out() -> None:
    # Issue 13 item 9: sip_requests_total / sip_responses_total were in the README, never
    # recorded. The endpoint reports each parsed message and each one it hands out.
    seen: list[tuple[str, str, int | None]] = []
    endpoint = SipEndpoint(observe=lambda d, m, s: seen.append((d, m, s)))
    endpoint.bind(Transport.UDP, "127.0.0.1", 5060)
    endpoint.receive_datagram(raw("OPTIONS"), SRC, 0.0)
    endpoint.receive_datagram(raw("BYE", to_tag="x", call_id="nope"), SRC, 0.0)
    endpoint.receive_datagram(b"garbage\r\n\r\n", SRC, 0.0)  # unparseable: not counted
    endpoint.datagrams_to_send()
    assert seen == [("in", "OPTIONS", None), ("in", "BYE", None),
                    ("out", "OPTIONS", 200), ("out", "BYE", 481)]

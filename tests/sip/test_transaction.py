"""RFC 3261 §17 / RFC 6026 transaction timers, stepped by hand (T1=0.5, T2=4, T4=5)."""

from __future__ import annotations

import pytest

from gateway.sip.address import Peer, Transport
from gateway.sip.message import Message, SipRequest, make_response
from gateway.sip.parser import parse_message
from gateway.sip.timers import TimerSettings
from gateway.sip.transaction import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ClientState,
    ServerInviteState,
    ServerInviteTransaction,
    ServerNonInviteState,
    ServerNonInviteTransaction,
    client_key,
    server_key,
)

T = TimerSettings()
UDP = Peer("127.0.0.1", 5070, Transport.UDP)
TCP = Peer("127.0.0.1", 5070, Transport.TCP, conn_id=7)


def request(method: str = "INVITE", branch: str = "z9hG4bK-abc", to_tag: str = "") -> SipRequest:
    tag = f";tag={to_tag}" if to_tag else ""
    raw = (
        f"{method} sip:bob@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n"
        "From: <sip:alice@127.0.0.1>;tag=a1\r\n"
        f"To: <sip:bob@127.0.0.1>{tag}\r\n"
        "Call-ID: c1@127.0.0.1\r\n"
        f"CSeq: 1 {method}\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    message = parse_message(raw)
    assert isinstance(message, SipRequest)
    return message


class Wire:
    """Records what a transaction sends and when."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sent: list[tuple[float, Message]] = []

    def send(self, message: Message, peer: Peer) -> None:
        self.sent.append((self.now, message))

    def times(self, first_line: str) -> list[float]:
        return [
            round(t, 6) for t, m in self.sent if m.to_bytes().decode().startswith(first_line)
        ]


def run(txn: ServerInviteTransaction | ServerNonInviteTransaction | ClientInviteTransaction
        | ClientNonInviteTransaction, wire: Wire, until: float) -> None:
    """Fire every deadline up to `until`, exactly at its time."""
    while True:
        deadline = txn.next_deadline()
        if deadline is None or deadline > until:
            wire.now = until
            return
        wire.now = deadline
        txn.handle_timer(deadline)


def cumulative(intervals: list[float]) -> list[float]:
    out, total = [], 0.0
    for step in intervals:
        total += step
        out.append(round(total, 6))
    return out


# Timer G / E schedule: T1 doubling to T2; Timer A: doubling without a cap.
CAPPED = cumulative([0.5, 1, 2, 4, 4, 4, 4, 4, 4, 4])  # ... 31.5, then H/F at 32
UNCAPPED = cumulative([0.5, 1, 2, 4, 8, 16])  # ... 31.5, then B at 32


def test_server_invite_non_2xx_timer_g_until_ack_then_timer_i() -> None:
    wire = Wire()
    txn = ServerInviteTransaction(request(), UDP, T, wire.send)
    txn.send_response(make_response(txn.request, 100), 0.0)
    txn.send_response(make_response(txn.request, 486, to_tag="x"), 0.0)
    assert txn.state is ServerInviteState.COMPLETED
    run(txn, wire, 8.0)
    assert wire.times("SIP/2.0 486") == [0.0, *CAPPED[:4]]
    ack = request("ACK", to_tag="x")
    assert server_key(ack) == txn.key
    assert txn.receive_request(ack, 8.0) is True
    assert txn.state is ServerInviteState.CONFIRMED
    assert txn.receive_request(ack, 9.0) is True  # a duplicate ACK is absorbed too
    run(txn, wire, 12.999)
    assert len(wire.times("SIP/2.0 486")) == 5  # Timer G stopped at the ACK
    assert not txn.terminated
    run(txn, wire, 13.0)  # Timer I = T4 after the ACK
    assert txn.terminated


def test_server_invite_timer_h_without_ack() -> None:
    wire = Wire()
    txn = ServerInviteTransaction(request(), UDP, T, wire.send)
    txn.send_response(make_response(txn.request, 603, to_tag="x"), 0.0)
    run(txn, wire, 31.99)
    assert wire.times("SIP/2.0 603") == [0.0, *CAPPED]
    run(txn, wire, 32.0)
    assert txn.terminated and txn.ack_timed_out
    assert len(wire.sent) == 1 + len(CAPPED)


def test_server_invite_over_tcp_never_retransmits_and_timer_i_is_zero() -> None:
    wire = Wire()
    txn = ServerInviteTransaction(request(), TCP, T, wire.send)
    txn.send_response(make_response(txn.request, 486, to_tag="x"), 0.0)
    assert txn.next_deadline() == 32.0  # only Timer H
    txn.receive_request(request("ACK", to_tag="x"), 1.0)
    run(txn, wire, 1.0)
    assert txn.terminated and len(wire.sent) == 1


def test_server_invite_retransmission_repeats_last_provisional() -> None:
    wire = Wire()
    txn = ServerInviteTransaction(request(), UDP, T, wire.send)
    txn.send_response(make_response(txn.request, 100), 0.0)
    txn.send_response(make_response(txn.request, 180, to_tag="x"), 0.0)
    txn.receive_request(request(), 0.3)
    assert wire.times("SIP/2.0 180") == [0.0, 0.0]  # resent at the retransmission
    assert txn.next_deadline() is None  # no timers while Proceeding


def test_server_invite_accepted_absorbs_retransmissions_until_timer_l() -> None:
    wire = Wire()
    txn = ServerInviteTransaction(request(), UDP, T, wire.send)
    txn.send_response(make_response(txn.request, 200, to_tag="x"), 0.0)
    assert txn.state is ServerInviteState.ACCEPTED
    txn.receive_request(request(), 1.0)
    assert len(wire.sent) == 1  # RFC 6026: absorbed, the TU owns the 2xx retransmissions
    run(txn, wire, 31.99)
    assert not txn.terminated and len(wire.sent) == 1
    run(txn, wire, 32.0)
    assert txn.terminated


@pytest.mark.parametrize(("peer", "timer_j"), [(UDP, 32.0), (TCP, 0.0)])
def test_server_non_invite_timer_j(peer: Peer, timer_j: float) -> None:
    wire = Wire()
    txn = ServerNonInviteTransaction(request("BYE", to_tag="x"), peer, T, wire.send)
    txn.receive_request(txn.request, 0.1)
    assert wire.sent == []  # Trying: absorbed silently
    txn.send_response(make_response(txn.request, 200), 1.0)
    assert txn.state is ServerNonInviteState.COMPLETED
    txn.receive_request(txn.request, 2.0)
    assert len(wire.sent) == 2  # Completed: the final response again
    run(txn, wire, 1.0 + timer_j - 0.001)
    assert not txn.terminated or timer_j == 0.0
    run(txn, wire, 1.0 + timer_j)
    assert txn.terminated


def test_client_invite_timer_a_and_b() -> None:
    wire = Wire()
    txn = ClientInviteTransaction(request(), UDP, T, wire.send, 0.0)
    run(txn, wire, 31.99)
    assert wire.times("INVITE") == [0.0, *UNCAPPED]
    assert not txn.timed_out
    while txn.next_deadline() is not None:
        wire.now = txn.next_deadline() or 0.0
        if txn.handle_timer(wire.now):
            break
    assert wire.now == 32.0 and txn.timed_out and txn.terminated


def test_client_invite_provisional_stops_timers_a_and_b() -> None:
    wire = Wire()
    txn = ClientInviteTransaction(request(), UDP, T, wire.send, 0.0)
    run(txn, wire, 1.0)
    txn.receive_response(make_response(txn.request, 180, to_tag="x"), 1.0)
    assert txn.state is ClientState.PROCEEDING and txn.next_deadline() is None


def test_client_invite_acks_non_2xx_and_timer_d() -> None:
    wire = Wire()
    txn = ClientInviteTransaction(request(), UDP, T, wire.send, 0.0)
    final = make_response(txn.request, 486, to_tag="x")
    assert txn.receive_response(final, 0.2) is final
    ack = wire.sent[-1][1]
    assert isinstance(ack, SipRequest) and ack.method == "ACK"
    assert ack.top_via.branch == "z9hG4bK-abc" and ack.to.tag == "x"  # same transaction
    assert ack.cseq.number == 1 and ack.cseq.method == "ACK"
    assert txn.receive_response(final, 1.0) is None  # retransmission absorbed, ACK resent
    assert len(wire.times("ACK")) == 2
    run(txn, wire, 32.19)
    assert txn.state is ClientState.COMPLETED
    run(txn, wire, 32.2)  # Timer D = 32 s on UDP
    assert txn.terminated and not txn.timed_out


def test_client_invite_accepted_passes_2xx_retransmissions_up_until_timer_m() -> None:
    wire = Wire()
    txn = ClientInviteTransaction(request(), TCP, T, wire.send, 0.0)
    ok = make_response(txn.request, 200, to_tag="x")
    assert txn.receive_response(ok, 0.1) is ok and txn.state is ClientState.ACCEPTED
    assert txn.receive_response(ok, 0.6) is ok  # the TU ACKs each one (§13.2.2.4)
    assert wire.times("ACK") == []  # the transaction never ACKs a 2xx
    run(txn, wire, 32.1)
    assert txn.terminated and not txn.timed_out


def test_client_non_invite_timers_e_f() -> None:
    wire = Wire()
    txn = ClientNonInviteTransaction(request("BYE", to_tag="x"), UDP, T, wire.send, 0.0)
    run(txn, wire, 31.99)
    assert wire.times("BYE") == [0.0, *CAPPED]
    assert txn.handle_timer(32.0) is True and txn.timed_out


def test_client_non_invite_proceeding_retransmits_at_t2_then_timer_k() -> None:
    wire = Wire()
    txn = ClientNonInviteTransaction(request("BYE", to_tag="x"), UDP, T, wire.send, 0.0)
    txn.receive_response(make_response(txn.request, 100), 0.1)
    run(txn, wire, 9.0)
    assert wire.times("BYE") == [0.0, 0.5, 4.5, 8.5]  # after the 1xx: every T2
    final = make_response(txn.request, 200)
    assert txn.receive_response(final, 9.0) is final
    assert txn.receive_response(final, 9.1) is None  # Completed absorbs
    run(txn, wire, 13.99)
    assert not txn.terminated
    run(txn, wire, 14.0)  # Timer K = T4
    assert txn.terminated and len(wire.times("BYE")) == 4


def test_client_non_invite_over_tcp_has_no_timer_e_and_zero_k() -> None:
    wire = Wire()
    txn = ClientNonInviteTransaction(request("OPTIONS"), TCP, T, wire.send, 0.0)
    assert txn.next_deadline() == 32.0  # only Timer F
    txn.receive_response(make_response(txn.request, 200), 0.1)
    assert txn.terminated


def test_keys_follow_rfc3261_and_fall_back_for_rfc2543() -> None:
    invite = request()
    cancel = request("CANCEL")
    assert server_key(cancel) != server_key(invite)
    assert server_key(cancel, method="INVITE") == server_key(invite)
    assert client_key(make_response(invite, 180)) == ("z9hG4bK-abc", "INVITE")
    old = request(branch="1234")  # no magic cookie
    old_ack = request("ACK", branch="1234", to_tag="x")
    assert server_key(old)[0] == "2543" and server_key(old) == server_key(old_ack)
    assert server_key(request(branch="9999")) != server_key(old)

"""Property test: whatever bytes arrive, the endpoint neither raises nor hits its own last-resort
error handler (which would log at ERROR), in every state of a call."""

from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.sip.address import Transport
from gateway.sip.endpoint import SipEndpoint
from gateway.sip.events import InviteReceived
from gateway.sip.parser import parse_message
from tests.sip.test_endpoint_uas import SRC, raw

SEEDS = [
    raw(extra="Supported: timer\r\nSession-Expires: 1800\r\n"
        "Record-Route: <sip:p@127.0.0.1;lr>\r\n", body="v=0\r\n"),
    raw("CANCEL"),
    raw("BYE", to_tag="t1", cseq=2, branch="z9hG4bK-b"),
    raw("ACK", to_tag="t1", branch="z9hG4bK-a"),
    raw("INVITE", to_tag="t1", cseq=3, branch="z9hG4bK-r"),
    raw("UPDATE", to_tag="t1", cseq=4, branch="z9hG4bK-u"),
    raw("INFO", to_tag="t1", cseq=5, branch="z9hG4bK-i", body="Signal=1\r\n"),
    raw("OPTIONS"),
    b"SIP/2.0 200 OK\r\n" + raw("BYE", to_tag="t1").split(b"\r\n", 1)[1],
]


def mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    out = bytearray(data)
    for position, length, replacement in edits:
        at = position % (len(out) + 1)
        out[at : at + length % 8] = replacement
    return bytes(out)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.sampled_from(SEEDS),
    edits=st.lists(
        st.tuples(st.integers(0, 2000), st.integers(0, 8),
                  st.sampled_from([b"", b";", b",", b"<", b">", b'"', b"\\", b":", b" ", b"\r\n",
                                   b"\r\n ", b"\x00", b"\xff", b"0", b"99999999999", b"=",
                                   b"sip:", b"[::1]", b"z9hG4bK", b"tag=t1", b"Require: x\r\n",
                                   b"Session-Expires: 1\r\n", b"Via: SIP/2.0/UDP h\r\n"])),
        max_size=4,
    ),
    answered=st.booleans(),
)
def test_mutated_messages_never_break_the_endpoint(
    caplog: pytest.LogCaptureFixture, seed: bytes, edits: list[tuple[int, int, bytes]],
    answered: bool,
) -> None:
    ep = SipEndpoint()
    ep.bind(Transport.UDP, "127.0.0.1", 5060)
    with caplog.at_level(logging.ERROR, logger="gateway.sip"):
        caplog.clear()
        ep.receive_datagram(SEEDS[0], SRC, 0.0)
        event = ep.next_event()
        assert isinstance(event, InviteReceived)
        ep.ring(event.call, 0.0)
        if answered:
            ep.answer(event.call, b"v=0\r\n", 0.0)
        ringing = parse_message(ep.datagrams_to_send()[1].data)
        tag = (ringing.to.tag or "").encode()
        data = mutate(seed, edits).replace(b"tag=t1", b"tag=" + tag)  # hit the real dialog
        ep.receive_datagram(data, SRC, 0.1)
        ep.receive_stream(data, 1, SRC, 0.2)
        while (deadline := ep.get_timer()) is not None and deadline < 5000:
            ep.handle_timer(deadline)
        ep.datagrams_to_send()
        while ep.next_event() is not None:
            pass
        assert [r.getMessage() for r in caplog.records] == []

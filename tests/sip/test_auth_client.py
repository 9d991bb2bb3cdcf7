"""Digest answers to challenges of requests we send (RFC 3261 §22.2, RFC 7616 §3.4): checked by
our own verifier, and the RFC 2617 no-qop form by the textbook computation."""

from __future__ import annotations

import hashlib

import pytest

from gateway.sip.auth import DigestAuthenticator, answer_challenge, parse_challenge
from gateway.sip.events import CallFailed, InviteReceived
from gateway.sip.message import SipRequest
from tests.sip.helpers import SDP, UAS_ADDR, Link


@pytest.mark.parametrize("index", [0, 1])  # SHA-256, then MD5
def test_answer_passes_a_verifier(index: int) -> None:
    server = DigestAuthenticator(b"k" * 32)
    challenge = server.challenge("pbx.example", "127.0.0.1", 100.0)[index]
    value = answer_challenge(challenge, method="INVITE", uri="sip:+4930123@pbx.example",
                             username="gw", password="s3cret", cnonce="c0ffee")
    assert value is not None and value.startswith("Digest ")
    assert server.verify(value, method="INVITE", source_ip="127.0.0.1", now=101.0,
                         realm="pbx.example", username="gw", password="s3cret").value == "ok"
    assert server.verify(value, method="INVITE", source_ip="127.0.0.1", now=101.0,
                         realm="pbx.example", username="gw", password="wrong").value != "ok"


def test_without_qop_and_with_opaque() -> None:
    value = answer_challenge('Digest realm="r", nonce="n1", opaque="op"', method="INVITE",
                             uri="sip:a@b", username="u", password="p", cnonce="x")
    ha1 = hashlib.md5(b"u:r:p").hexdigest()
    ha2 = hashlib.md5(b"INVITE:sip:a@b").hexdigest()
    expected = hashlib.md5(f"{ha1}:n1:{ha2}".encode()).hexdigest()
    assert value is not None and f'response="{expected}"' in value and 'opaque="op"' in value
    assert "qop" not in value


@pytest.mark.parametrize("challenge", [
    'Basic realm="r"', 'Digest realm="r"', 'Digest realm="r", nonce="n", algorithm=SHA-512',
    'Digest realm="r", nonce="n", qop="auth-int"', "Digest realm=", "x" * 5000])
def test_unanswerable_challenges(challenge: str) -> None:
    assert answer_challenge(challenge, method="INVITE", uri="sip:a@b", username="u",
                            password="p", cnonce="x") is None


def test_parse_challenge_unescapes() -> None:
    assert parse_challenge('Digest realm="a\\"b", nonce=abc')["realm"] == 'a"b'  # type: ignore[index]


@pytest.mark.parametrize(("status", "challenge", "answer"), [
    (401, "WWW-Authenticate", "Authorization"),
    (407, "Proxy-Authenticate", "Proxy-Authorization")])
def test_uac_answers_one_challenge(status: int, challenge: str, answer: str) -> None:
    """The UAS side refuses by hand (the UAS core never challenges): our INVITE is sent again
    once, CSeq + 1, same Call-ID and From tag, with the answer; a second challenge ends it."""
    link = Link()
    target = f"sip:+4930123@{UAS_ADDR[0]}:{UAS_ADDR[1]}"
    call = link.uac.invite(target, link.now, sdp=SDP, from_uri="<sip:gw@127.0.0.1>",
                           credentials=("gw", "pw"))
    server = DigestAuthenticator(b"k" * 32)
    invites: list[SipRequest] = []
    for _ in range(2):
        link.pump()
        (received,) = [e for e in link.take("uas") if isinstance(e, InviteReceived)]
        invites.append(received.request)
        headers = [(challenge, c) for c in server.challenge("carrier", "127.0.0.1", link.now)]
        link.uas.reject(received.call, status, link.now, headers=headers)
    link.pump()
    first, second = invites
    assert second.call_id == first.call_id and second.from_.tag == first.from_.tag
    assert (first.cseq.number, second.cseq.number) == (1, 2)
    assert first.headers.get(answer) is None
    assert server.verify(second.headers.get(answer), method="INVITE", source_ip="127.0.0.1",
                         now=link.now, realm="carrier", username="gw",
                         password="pw").value == "ok"
    events = link.take("uac")
    assert [e for e in events if isinstance(e, CallFailed)] == [CallFailed(call, status, ANY)]


class _Any:
    def __eq__(self, other: object) -> bool:
        return True


ANY: str = _Any()  # type: ignore[assignment]

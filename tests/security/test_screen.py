"""`SecurityScreen`, the SIP core's pre-dispatch, decision by decision (issue 7 items 1–4):
unknown sources dropped or 403, REGISTER 405 or dropped, rate limits 503 + Retry-After, digest
401 challenges (SHA-256 then MD5), a real digest accepted, stale nonces, replays, draining.
The digest answers come from `tests/edge/digest.py`, which shares no code with the gateway."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.config import Config, Secret, SecurityConfig, TrunkConfig
from gateway.metrics import Metrics
from gateway.security.screen import SecurityScreen
from gateway.sip.address import Peer
from gateway.sip.core import SipAction, SipVerdict
from gateway.sip.message import SipRequest
from gateway.sip.parser import parse_message
from tests.edge.digest import challenge_params, digest_authorization

URI = "sip:100@192.0.2.1:5060"
PBX = Peer("198.51.100.7", 5060)
OPEN = Peer("203.0.113.9", 5060)
STRANGER = Peer("192.0.2.200", 5060)


def trunks() -> tuple[TrunkConfig, ...]:
    return (
        TrunkConfig(name="pbx", allow=(ipaddress.ip_network("198.51.100.0/24"),),
                    username="pbx1", realm="gw", password=Secret("s3cret-pw")),
        TrunkConfig(name="carrier", allow=(ipaddress.ip_network("203.0.113.0/24"),)),
    )


def screen(**security: object) -> tuple[SecurityScreen, Metrics]:
    metrics = Metrics()
    config = Config(trunks=trunks(), security=SecurityConfig(**security))  # type: ignore[arg-type]
    return SecurityScreen(config, metrics, now=0.0, secret=b"k" * 32), metrics


def request(method: str = "INVITE", *, to_tag: str = "", auth: str | None = None,
            cseq: int = 1, call_id: str = "c1") -> SipRequest:
    tag = f";tag={to_tag}" if to_tag else ""
    extra = f"Authorization: {auth}\r\n" if auth else ""
    data = (f"{method} {URI} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK{cseq}\r\n"
            f"From: <sip:a@x>;tag=f\r\nTo: <{URI}>{tag}\r\nCall-ID: {call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n{extra}Content-Length: 0\r\n\r\n").encode()
    message = parse_message(data)
    assert isinstance(message, SipRequest)
    return message


def rejections(metrics: Metrics) -> dict[str, float]:
    out = {}
    for family in metrics.registry.collect():
        if family.name == "orga_gateway_security_rejections":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    out[sample.labels["reason"]] = sample.value
    return out


def header(verdict: SipVerdict, name: str) -> list[str]:
    return [v for k, v in verdict.headers if k == name]


# --- who may call ------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["INVITE", "OPTIONS", "REGISTER", "ACK", "BYE"])
def test_unknown_source_dropped_by_default(method: str) -> None:
    s, metrics = screen()
    assert s.screen(STRANGER, request(method), 1.0).action is SipAction.DROP
    assert rejections(metrics) == {"unknown_source": 1}


@pytest.mark.parametrize("method", ["INVITE", "OPTIONS", "REGISTER"])
def test_unknown_source_403_in_reject_mode_and_never_for_ack(method: str) -> None:
    s, metrics = screen(unknown_source="reject")
    verdict = s.screen(STRANGER, request(method), 1.0)
    assert (verdict.action, verdict.status) == (SipAction.RESPOND, 403)
    assert s.screen(STRANGER, request("ACK"), 1.0).action is SipAction.DROP
    assert rejections(metrics) == {"unknown_source": 2}


def test_register_from_a_trunk_405_or_dropped() -> None:
    s, metrics = screen(unknown_source="reject")
    verdict = s.screen(OPEN, request("REGISTER"), 1.0)
    assert (verdict.action, verdict.status) == (SipAction.RESPOND, 405)
    s, metrics = screen()
    assert s.screen(OPEN, request("REGISTER"), 1.0).action is SipAction.DROP
    assert rejections(metrics) == {"register": 1}


def test_an_allowed_request_names_its_trunk() -> None:
    """The verdict carries the trunk (onto InviteReceived): the app never looks it up again."""
    s, _ = screen()
    assert s.screen(OPEN, request(), 1.0).trunk == "carrier"
    assert s.screen(OPEN, request("BYE", to_tag="t"), 1.0).trunk == "carrier"
    assert s.screen(STRANGER, request(), 1.0).trunk is None


def test_trunk_without_credentials_passes() -> None:
    s, metrics = screen()
    assert s.screen(OPEN, request(), 1.0).action is SipAction.ALLOW
    assert s.screen(OPEN, request("OPTIONS"), 1.0).action is SipAction.ALLOW
    assert rejections(metrics) == {}


# --- how fast ----------------------------------------------------------------------------------

def test_invite_rate_per_source_503_with_retry_after() -> None:
    s, metrics = screen(invite_rate_per_source=0.5, invite_burst_per_source=2)
    assert s.screen(OPEN, request(call_id="a"), 1.0).action is SipAction.ALLOW
    assert s.screen(OPEN, request(call_id="b"), 1.0).action is SipAction.ALLOW
    verdict = s.screen(OPEN, request(call_id="c"), 1.0)
    assert (verdict.action, verdict.status) == (SipAction.RESPOND, 503)
    assert header(verdict, "Retry-After") == ["2"]  # one token at 0.5/s
    # In-dialog requests and OPTIONS are not new calls: only the request bucket applies.
    assert s.screen(OPEN, request("BYE", to_tag="t"), 1.0).action is SipAction.ALLOW
    assert s.screen(OPEN, request("OPTIONS"), 1.0).action is SipAction.ALLOW
    # Another source has its own bucket; after the refill the first may call again.
    assert s.screen(Peer("203.0.113.10", 5060), request(), 1.0).action is SipAction.ALLOW
    assert s.screen(OPEN, request(call_id="d"), 3.0).action is SipAction.ALLOW
    assert rejections(metrics) == {"rate_source_invite": 1}


def test_request_rate_per_source_and_ack_never_answered() -> None:
    s, metrics = screen(request_rate_per_source=1.0, request_burst_per_source=3)
    for _ in range(3):
        assert s.screen(OPEN, request("OPTIONS"), 1.0).action is SipAction.ALLOW
    verdict = s.screen(OPEN, request("OPTIONS"), 1.0)
    assert (verdict.status, header(verdict, "Retry-After")) == (503, ["1"])
    assert s.screen(OPEN, request("ACK", to_tag="t"), 1.0).action is SipAction.DROP
    assert rejections(metrics) == {"rate_source_request": 2}


def test_global_calls_per_second_cap_across_sources() -> None:
    s, metrics = screen(calls_per_second=1.0, calls_burst=2)
    sources = [Peer(f"203.0.113.{n}", 5060) for n in range(1, 5)]
    verdicts = [s.screen(p, request(), 1.0) for p in sources]
    assert [v.status for v in verdicts] == [0, 0, 503, 503]
    assert rejections(metrics) == {"rate_global": 2}


def test_draining_options_503_but_calls_pass_to_the_registry() -> None:
    s, _ = screen()
    s.draining.begin()
    verdict = s.screen(OPEN, request("OPTIONS"), 1.0)
    assert (verdict.status, header(verdict, "Retry-After")) == (503, ["60"])
    # The registry answers INVITEs while draining (503 + its own metric), not the screen.
    assert s.screen(OPEN, request(), 1.0).action is SipAction.ALLOW


# --- who they are ------------------------------------------------------------------------------

def challenge(s: SecurityScreen, now: float, source: Peer = PBX) -> list[str]:
    verdict = s.screen(source, request(), now)
    assert (verdict.action, verdict.status) == (SipAction.RESPOND, 401)
    return header(verdict, "WWW-Authenticate")


def test_challenge_offers_sha256_then_md5_with_qop_auth() -> None:
    s, metrics = screen()
    offered = challenge(s, 1.0)
    params = [challenge_params(c) for c in offered]
    assert [p["algorithm"] for p in params] == ["SHA-256", "MD5"]
    assert all(p["realm"] == "gw" and p["qop"] == "auth" for p in params)
    assert params[0]["nonce"] == params[1]["nonce"]
    assert "stale" not in offered[0]
    assert rejections(metrics) == {"auth_missing": 1}


@pytest.mark.parametrize("index", [0, 1])
def test_real_digest_accepted_and_replay_rejected(index: int) -> None:
    s, metrics = screen()
    offered = challenge(s, 1.0)[index]
    auth = digest_authorization(offered, method="INVITE", uri=URI, username="pbx1",
                                password="s3cret-pw", cnonce="abc")
    assert s.screen(PBX, request(auth=auth, cseq=2), 2.0).action is SipAction.ALLOW
    replay = s.screen(PBX, request(auth=auth, cseq=3, call_id="c2"), 2.5)
    assert replay.status == 401
    # The next nc on the same nonce is fine (RFC 7616 §3.4: nc counts up).
    auth2 = digest_authorization(offered, method="INVITE", uri=URI, username="pbx1",
                                 password="s3cret-pw", nc=2, cnonce="abc")
    assert s.screen(PBX, request(auth=auth2, cseq=4, call_id="c3"), 3.0).action is SipAction.ALLOW
    assert rejections(metrics) == {"auth_missing": 1, "auth_replay": 1}


def test_expired_nonce_gets_stale_true() -> None:
    s, metrics = screen(nonce_ttl_s=60.0)
    offered = challenge(s, 1.0)[0]
    auth = digest_authorization(offered, method="INVITE", uri=URI, username="pbx1",
                                password="s3cret-pw")
    verdict = s.screen(PBX, request(auth=auth, cseq=2), 100.0)
    assert verdict.status == 401
    assert all("stale=true" in c for c in header(verdict, "WWW-Authenticate"))
    assert rejections(metrics)["auth_stale"] == 1


@pytest.mark.parametrize(("user", "password", "source", "reason"), [
    ("pbx1", "wrong", PBX, "auth_failed"),
    ("someone", "s3cret-pw", PBX, "auth_failed"),
    ("pbx1", "s3cret-pw", Peer("198.51.100.8", 5060), "auth_bad_nonce"),  # nonce of another IP
])
def test_bad_answers_get_a_fresh_challenge(user: str, password: str, source: Peer,
                                           reason: str) -> None:
    s, metrics = screen()
    offered = challenge(s, 1.0)[0]
    auth = digest_authorization(offered, method="INVITE", uri=URI, username=user,
                                password=password)
    verdict = s.screen(source, request(auth=auth, cseq=2), 2.0)
    assert verdict.status == 401
    assert not any("stale" in c for c in header(verdict, "WWW-Authenticate"))
    assert rejections(metrics)[reason] == 1


def test_only_new_invites_need_auth() -> None:
    s, _ = screen()
    for method in ("OPTIONS", "CANCEL"):
        assert s.screen(PBX, request(method), 1.0).action is SipAction.ALLOW
    assert s.screen(PBX, request("BYE", to_tag="t"), 1.0).action is SipAction.ALLOW
    assert s.screen(PBX, request("INVITE", to_tag="t"), 1.0).action is SipAction.ALLOW


# --- through the endpoint: refusals keep no state ---------------------------------------------

def test_refusals_are_stateless_challenges_are_not() -> None:
    from gateway.sip.endpoint import SipEndpoint
    from tests.sip.test_endpoint_uas import raw

    s, _ = screen(unknown_source="reject", invite_rate_per_source=0.1,
                  invite_burst_per_source=1)
    ep = SipEndpoint(pre_dispatch=s)
    ep.receive_datagram(raw(call_id="x1", branch="z9hG4bK-x1"), ("192.0.2.200", 5060), 1.0)
    ep.receive_datagram(raw("REGISTER", call_id="x2", branch="z9hG4bK-x2"),
                        ("203.0.113.9", 5060), 1.0)
    ep.receive_datagram(raw(call_id="x3", branch="z9hG4bK-x3"), ("203.0.113.9", 5060), 1.0)
    ep.receive_datagram(raw(call_id="x4", branch="z9hG4bK-x4"), ("203.0.113.9", 5060), 1.0)
    out = [item.data.split(b"\r\n", 1)[0] for item in ep.datagrams_to_send()]
    assert out == [b"SIP/2.0 403 Forbidden", b"SIP/2.0 405 Method Not Allowed",
                   b"SIP/2.0 100 Trying", b"SIP/2.0 503 Rate Limited"]
    # Only the admitted INVITE (x3) holds a transaction; the refusals left nothing behind.
    assert ep.transaction_count == 1
    ep.receive_datagram(raw(call_id="y1", branch="z9hG4bK-y1"), ("198.51.100.7", 5060), 1.0)
    (challenge,) = ep.datagrams_to_send()
    assert challenge.data.startswith(b"SIP/2.0 401")
    assert ep.transaction_count == 2  # the 401 is retransmitted and absorbs the INVITE's copies


# --- before parsing: the datagram gate ---------------------------------------------------------

def test_gate_drops_unknown_sources_unparsed_in_drop_mode_only() -> None:
    s, metrics = screen()
    assert s.admit(STRANGER.host, 1.0) is None
    assert s.admit(OPEN.host, 1.0) is not None
    assert rejections(metrics) == {"unknown_source": 1}
    s, _ = screen(unknown_source="reject")
    assert s.admit(STRANGER.host, 1.0) is not None  # parsed, to be answered 403


def test_source_told_to_wait_is_dropped_unparsed_until_retry_after() -> None:
    s, metrics = screen(request_rate_per_source=1.0, request_burst_per_source=2)
    assert s.screen(OPEN, request("OPTIONS"), 10.0).action is SipAction.ALLOW
    assert s.screen(OPEN, request("OPTIONS"), 10.0).action is SipAction.ALLOW
    verdict = s.screen(OPEN, request("OPTIONS"), 10.0)
    assert (verdict.status, header(verdict, "Retry-After")) == (503, ["1"])
    assert s.penalized_sources == 1
    assert [s.admit(OPEN.host, t) for t in (10.1, 10.5, 10.99)] == [None] * 3
    assert s.screen(OPEN, request("OPTIONS"), 10.5).action is SipAction.DROP  # TCP path
    assert s.admit(PBX.host, 10.5) is not None  # others unaffected
    admitted = s.admit(OPEN.host, 11.0)  # Retry-After served
    assert admitted is not None
    assert s.screen(OPEN, request("OPTIONS"), 11.0, admitted).action is SipAction.ALLOW
    assert s.penalized_sources == 0
    assert rejections(metrics) == {"rate_source_request": 5}


def test_invite_rate_alone_does_not_mute_a_source() -> None:
    """A PBX over its INVITE rate still gets its in-dialog requests through."""
    s, _ = screen(invite_rate_per_source=1.0, invite_burst_per_source=1)
    assert s.screen(OPEN, request(call_id="a"), 1.0).action is SipAction.ALLOW
    assert s.screen(OPEN, request(call_id="b"), 1.0).status == 503
    admitted = s.admit(OPEN.host, 1.1)
    assert admitted is not None
    assert s.screen(OPEN, request("BYE", to_tag="t"), 1.1, admitted).action is SipAction.ALLOW


def test_unknown_source_flood_in_reject_mode_stops_getting_403s() -> None:
    s, metrics = screen(unknown_source="reject", request_rate_per_source=1.0,
                        request_burst_per_source=3)
    statuses = [s.screen(STRANGER, request("INVITE", call_id=str(n)), 1.0).status
                for n in range(6)]
    assert statuses == [403, 403, 403, 0, 0, 0]  # then silence, not amplification
    assert s.admit(STRANGER.host, 1.5) is None
    assert rejections(metrics) == {"unknown_source": 3, "rate_source_request": 4}


def test_penalty_box_and_match_cache_are_bounded() -> None:
    s, _ = screen(request_rate_per_source=1.0, request_burst_per_source=1,
                  max_tracked_sources=50)
    for n in range(500):
        source = Peer(f"203.0.113.{n % 250}", 5060) if n < 250 else Peer(f"10.0.{n}.1", 1)
        s.screen(source, request("OPTIONS"), 1.0)
        s.screen(source, request("OPTIONS"), 1.0)
    assert s.penalized_sources <= 50
    assert len(s._trunks) <= 50


@pytest.mark.parametrize("kind", ["retransmissions", "garbage"])
def test_floods_that_never_reach_screen_are_charged_at_the_gate(kind: str) -> None:
    """Retransmissions of one INVITE (each would re-send the 401) and unparseable datagrams
    (each would get a 400) are charged per datagram: after the burst, one 503, then silence."""
    from gateway.sip.endpoint import SipEndpoint
    from tests.sip.test_endpoint_uas import raw

    s, metrics = screen(request_rate_per_source=1.0, request_burst_per_source=10)
    ep = SipEndpoint(pre_dispatch=s, gate=s)
    data = raw() if kind == "retransmissions" else raw().replace(b"CSeq: 1 INVITE", b"CSeq: x")
    for n in range(200):
        ep.receive_datagram(data, (PBX.host, 5060), 5.0 + n * 0.001)
    out = [item.data.split(b"\r\n", 1)[0] for item in ep.datagrams_to_send()]
    first = b"SIP/2.0 401 Unauthorized" if kind == "retransmissions" else b"SIP/2.0 400"
    assert 10 <= len(out) <= 12
    assert all(line.startswith(first) for line in out[:10])
    assert rejections(metrics)["rate_source_request"] >= 189


def test_the_gate_decision_is_passed_in_not_taken_twice() -> None:
    """A datagram takes one request token in `admit`; `screen` uses that decision."""
    s, _ = screen(request_rate_per_source=1.0, request_burst_per_source=2)
    for call_id in ("a", "b"):
        admitted = s.admit(OPEN.host, 5.0)
        assert admitted is not None
        assert s.screen(OPEN, request("OPTIONS", call_id=call_id), 5.0,
                        admitted).action is SipAction.ALLOW
    admitted = s.admit(OPEN.host, 5.0)  # the third within the burst of 2: over the rate
    assert admitted is not None
    verdict = s.screen(OPEN, request("OPTIONS", call_id="c"), 5.0, admitted)
    assert (verdict.status, header(verdict, "Retry-After")) == (503, ["1"])

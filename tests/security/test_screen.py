"""`SecurityScreen`, the SIP core's pre-dispatch, decision by decision (issue 7 items 1–4):
unknown sources dropped or 403, REGISTER 405 or dropped, rate limits 503 + Retry-After, digest
401 challenges (SHA-256 then MD5), a real digest accepted, stale nonces, replays, draining.
The digest answers come from `tests/edge/digest.py`, which shares no code with the gateway."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.config import Config, Secret, SecurityConfig, TrunkConfig
from gateway.metrics import Metrics
from gateway.outcomes import Outcome
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


def trunks(carrier_cps: tuple[float, int] = (30.0, 60)) -> tuple[TrunkConfig, ...]:
    return (
        TrunkConfig(name="pbx", allow=(ipaddress.ip_network("198.51.100.0/24"),),
                    username="pbx1", realm="gw", password=Secret("s3cret-pw")),
        TrunkConfig(name="carrier", allow=(ipaddress.ip_network("203.0.113.0/24"),),
                    max_cps=carrier_cps[0], cps_burst=carrier_cps[1]),
    )


def screen(carrier_cps: tuple[float, int] = (30.0, 60), availability: object = None,
           **security: object) -> tuple[SecurityScreen, Metrics]:
    metrics = Metrics()
    config = Config(trunks=trunks(carrier_cps),
                    security=SecurityConfig(**security))  # type: ignore[arg-type]
    return SecurityScreen(config, metrics, now=0.0, secret=b"k" * 32,
                          availability=availability), metrics  # type: ignore[arg-type]


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
    """[security] per-source INVITE limits: for INVITEs that have not authenticated."""
    s, metrics = screen(invite_rate_per_source=0.5, invite_burst_per_source=2)
    assert s.screen(PBX, request(call_id="a"), 1.0).status == 401
    assert s.screen(PBX, request(call_id="b"), 1.0).status == 401
    verdict = s.screen(PBX, request(call_id="c"), 1.0)
    assert (verdict.action, verdict.status) == (SipAction.RESPOND, 503)
    assert header(verdict, "Retry-After") == ["2"]  # one token at 0.5/s
    # In-dialog requests and OPTIONS are not new calls: only the request bucket applies.
    assert s.screen(PBX, request("BYE", to_tag="t"), 1.0).action is SipAction.ALLOW
    assert s.screen(PBX, request("OPTIONS"), 1.0).action is SipAction.ALLOW
    # Another source has its own bucket; after the refill the first may try again.
    assert s.screen(Peer("198.51.100.10", 5060), request(), 1.0).status == 401
    assert s.screen(PBX, request(call_id="d"), 3.0).status == 401
    assert rejections(metrics) == {"auth_missing": 4, "rate_source_invite": 1}


def test_trunk_has_its_own_calls_per_second_for_all_its_sources() -> None:
    """A trunk's calls take its max_cps/cps_burst bucket, not the [security] ones: a carrier
    (or a load balancer in front of us) places a burst of 30 calls from one address."""
    s, metrics = screen(invite_rate_per_source=0.5, invite_burst_per_source=2,
                        calls_per_second=1.0, calls_burst=2)
    assert all(s.screen(OPEN, request(call_id=f"c{n}"), 1.0 + n / 30).action
               is SipAction.ALLOW for n in range(30))
    s, metrics = screen(carrier_cps=(0.5, 2))
    assert s.screen(OPEN, request(call_id="a"), 1.0).action is SipAction.ALLOW
    assert s.screen(Peer("203.0.113.10", 5060), request(call_id="b"), 1.0).action is (
        SipAction.ALLOW)
    verdict = s.screen(OPEN, request(call_id="c"), 1.0)  # the trunk's budget, whoever asks
    assert (verdict.status, header(verdict, "Retry-After")) == (503, ["2"])
    assert s.screen(OPEN, request("BYE", to_tag="t"), 1.0).action is SipAction.ALLOW
    assert s.screen(OPEN, request("OPTIONS"), 1.0).action is SipAction.ALLOW
    assert s.screen(OPEN, request(call_id="d"), 3.0).action is SipAction.ALLOW
    assert rejections(metrics) == {"rate_trunk": 1}


def test_request_rate_per_source_and_ack_never_answered() -> None:
    s, metrics = screen(request_rate_per_source=1.0, request_burst_per_source=3)
    for _ in range(3):
        assert s.screen(PBX, request("OPTIONS"), 1.0).action is SipAction.ALLOW
    verdict = s.screen(PBX, request("OPTIONS"), 1.0)
    assert (verdict.status, header(verdict, "Retry-After")) == (503, ["1"])
    assert s.screen(PBX, request("ACK", to_tag="t"), 1.0).action is SipAction.DROP
    assert rejections(metrics) == {"rate_source_request": 2}


def test_trusted_trunk_source_gets_a_request_budget_for_its_call_rate() -> None:
    """4 requests per call at the trunk's max_cps: a balancer relaying 30 calls a second
    (INVITE, ACK, BYE, probes) from one address is not throttled by [security]'s 20/s."""
    s, metrics = screen(request_rate_per_source=1.0, request_burst_per_source=3)
    assert all(s.screen(OPEN, request("OPTIONS"), 1.0 + n / 120).action is SipAction.ALLOW
               for n in range(240))
    assert rejections(metrics) == {}


def test_global_calls_per_second_cap_across_unauthenticated_sources() -> None:
    s, metrics = screen(calls_per_second=1.0, calls_burst=2)
    sources = [Peer(f"198.51.100.{n}", 5060) for n in range(1, 5)]
    verdicts = [s.screen(p, request(), 1.0) for p in sources]
    assert [v.status for v in verdicts] == [401, 401, 503, 503]
    # A trunk's calls do not depend on that budget.
    assert s.screen(OPEN, request(), 1.0).action is SipAction.ALLOW
    assert rejections(metrics) == {"auth_missing": 2, "rate_global": 2}


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

    s, _ = screen(carrier_cps=(0.1, 1), unknown_source="reject")
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
    assert s.screen(PBX, request("OPTIONS"), 10.0).action is SipAction.ALLOW
    assert s.screen(PBX, request("OPTIONS"), 10.0).action is SipAction.ALLOW
    verdict = s.screen(PBX, request("OPTIONS"), 10.0)
    assert (verdict.status, header(verdict, "Retry-After")) == (503, ["1"])
    assert s.penalized_sources == 1
    assert [s.admit(PBX.host, t) for t in (10.1, 10.5, 10.99)] == [None] * 3
    assert s.screen(PBX, request("OPTIONS"), 10.5).action is SipAction.DROP  # TCP path
    assert s.admit(OPEN.host, 10.5) is not None  # others unaffected
    admitted = s.admit(PBX.host, 11.0)  # Retry-After served
    assert admitted is not None
    assert s.screen(PBX, request("OPTIONS"), 11.0, admitted).action is SipAction.ALLOW
    assert s.penalized_sources == 0
    assert rejections(metrics) == {"rate_source_request": 5}


def test_call_rate_alone_does_not_mute_a_source() -> None:
    """A PBX over its call rate still gets its in-dialog requests through."""
    s, _ = screen(carrier_cps=(1.0, 1))
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
        source = Peer(f"198.51.100.{n % 250}", 5060) if n < 250 else Peer(f"10.0.{n}.1", 1)
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
        admitted = s.admit(PBX.host, 5.0)
        assert admitted is not None
        assert s.screen(PBX, request("OPTIONS", call_id=call_id), 5.0,
                        admitted).action is SipAction.ALLOW
    admitted = s.admit(PBX.host, 5.0)  # the third within the burst of 2: over the rate
    assert admitted is not None
    verdict = s.screen(PBX, request("OPTIONS", call_id="c"), 5.0, admitted)
    assert (verdict.status, header(verdict, "Retry-After")) == (503, ["1"])


# --- issue 12: guessers, authenticated PBXs, a worker that takes no calls -----------------------

def wrong_guess(s: SecurityScreen, now: float, source: Peer = PBX) -> SipVerdict:
    offered = challenge(s, now, source)[0]
    auth = digest_authorization(offered, method="INVITE", uri=URI, username="pbx1",
                                password=f"guess{now}")
    return s.screen(source, request(auth=auth, cseq=2), now)


def test_password_guesser_goes_to_the_penalty_box(caplog: pytest.LogCaptureFixture) -> None:
    """svcrack paced under every rate limit: its 5th wrong answer within a minute puts it in
    the box; for 10 minutes nothing from it is parsed or answered; logged once."""
    s, metrics = screen(auth_failures_max=5, auth_failures_window_s=60.0, auth_ban_s=600.0)
    assert [wrong_guess(s, 1.0 + n).status for n in range(4)] == [401] * 4
    assert wrong_guess(s, 5.0).action is SipAction.DROP  # the 5th: banned, no answer
    assert [s.admit(PBX.host, t) for t in (5.1, 60.0, 604.9)] == [None] * 3
    assert s.screen(PBX, request(), 300.0).action is SipAction.DROP  # TCP path too
    assert s.admit(Peer("198.51.100.8", 5060).host, 6.0) is not None  # only that source
    assert s.admit(PBX.host, 605.0) is not None  # served its time
    counts = rejections(metrics)
    assert counts["auth_failed"] == 5 and counts["auth_banned"] == 4
    assert len([r for r in caplog.records if "penalty box" in r.getMessage()]) == 1
    assert "guess" not in caplog.text  # nothing of the attempted passwords in the log


def test_authenticated_pbx_is_not_limited_by_what_strangers_spend() -> None:
    """The global unauthenticated bucket is empty (a guesser burst), yet a PBX that
    authenticated lately gets its challenges, and its authenticated calls take the trunk's
    budget (pbx default 30/s)."""
    s, metrics = screen(calls_per_second=1.0, calls_burst=2, invite_rate_per_source=1.0,
                        invite_burst_per_source=1)
    offered = challenge(s, 1.0)[0]
    auth = digest_authorization(offered, method="INVITE", uri=URI, username="pbx1",
                                password="s3cret-pw", cnonce="c")
    assert s.screen(PBX, request(auth=auth, cseq=2), 1.0).action is SipAction.ALLOW
    for n in range(3):  # strangers in the PBX's /24 empty the global bucket
        s.screen(Peer(f"198.51.100.{50 + n}", 5060), request(), 1.1)
    assert rejections(metrics)["rate_global"] >= 1
    for n in range(10):  # the PBX's next ten calls: challenge, then answer
        offered = challenge(s, 1.2 + n / 100)[0]
        auth = digest_authorization(offered, method="INVITE", uri=URI, username="pbx1",
                                    password="s3cret-pw", cnonce=f"c{n}")
        assert s.screen(PBX, request(auth=auth, cseq=2, call_id=f"k{n}"),
                        1.2 + n / 100).action is SipAction.ALLOW


@pytest.mark.parametrize("busy", ["at capacity", "overloaded"])
def test_options_503_while_the_worker_takes_no_calls(busy: str) -> None:
    state: list[str | None] = [busy]
    s, _ = screen(availability=lambda: state[0])
    verdict = s.screen(OPEN, request("OPTIONS"), 1.0)
    d = (Outcome.OVERLOADED if busy == "overloaded" else Outcome.CAPACITY).disposition
    assert (verdict.status, verdict.reason) == (503, d.reason)
    assert header(verdict, "Retry-After") == [str(d.retry_after_s)]
    # In-dialog OPTIONS (a keepalive of a call in progress) is the call's, not the balancer's.
    assert s.screen(OPEN, request("OPTIONS", to_tag="t"), 1.0).action is SipAction.ALLOW
    state[0] = None
    assert s.screen(OPEN, request("OPTIONS"), 2.0).action is SipAction.ALLOW


def test_example_config_lets_a_trunk_place_20_calls_in_one_second() -> None:
    """Issue 12: with config/gateway.example.toml, 20 INVITEs in one second from the configured
    trunk (datagram gate and screen both) all pass; so does a 30-call burst."""
    from pathlib import Path

    from gateway.config import load_config

    example = Path(__file__).resolve().parents[2] / "config" / "gateway.example.toml"
    config = load_config(example, {"ORGA_API_KEY": "sk_orga_ai_test"})
    s = SecurityScreen(config, Metrics(), now=0.0, secret=b"k" * 32)
    source = Peer("127.0.0.1", 5060)
    for n in range(30):
        now = 1.0 + n / 30
        admitted = s.admit(source.host, now)
        assert admitted is not None and admitted.accepted, n
        assert s.screen(source, request(call_id=f"burst{n}"), now,
                        admitted).action is SipAction.ALLOW, n
        admitted = s.admit(source.host, now + 0.01)  # its ACK
        assert admitted is not None and admitted.accepted, n
        assert s.screen(source, request("ACK", to_tag="t", call_id=f"burst{n}"), now + 0.01,
                        admitted).action is SipAction.ALLOW

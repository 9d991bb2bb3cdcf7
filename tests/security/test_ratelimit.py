import pytest

from gateway.config import SecurityConfig
from gateway.security.ratelimit import (
    ConcurrencyLimiter,
    EdgeLimiter,
    KeyedBuckets,
    RateVerdict,
    TokenBucket,
)


def test_token_bucket_rate_and_burst() -> None:
    b = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.retry_after(0.0) == pytest.approx(0.5)
    assert not b.take(0.4)
    assert b.take(0.5)
    assert b.take(100.0) and b.take(100.0) and b.take(100.0) and not b.take(100.0)  # capped
    assert not b.take(50.0)  # time going backwards gives nothing back
    with pytest.raises(ValueError):
        TokenBucket(0, 1, 0.0)


def test_keyed_buckets_are_per_key_and_bounded() -> None:
    kb = KeyedBuckets(rate=1.0, burst=2, max_keys=100)
    assert kb.take("a", 0.0) and kb.take("a", 0.0) and not kb.take("a", 0.0)
    assert kb.take("b", 0.0)
    for i in range(100_000):  # a flood from spoofed sources
        kb.take(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", 1.0)
    assert len(kb) == 100 and kb.evictions > 99_000


def test_lru_keeps_recently_seen_sources() -> None:
    kb = KeyedBuckets(rate=0.001, burst=1, max_keys=3)
    assert kb.take("busy", 0.0)
    for i, key in enumerate(("x", "y", "z", "w")):
        kb.take(key, 1.0 + i)
        assert not kb.take("busy", 1.0 + i)  # touched each time, so never evicted
    assert len(kb) == 3


def test_concurrency_limiter() -> None:
    c = ConcurrencyLimiter(per_key=2, total=3)
    assert c.acquire("a") and c.acquire("a") and not c.acquire("a")
    assert c.acquire("b") and not c.acquire("c")  # total cap
    c.release("a")
    assert c.acquire("c") and c.active == 3
    assert c.acquire("t", limit=5) is False  # total still applies
    c.release("b")
    assert c.acquire("t", limit=1) and not c.acquire("t", limit=1)
    with pytest.raises(ValueError):
        c.release("nobody")
    c.release("t")
    assert c.count("t") == 0


def test_edge_limiter_orders_the_checks() -> None:
    cfg = SecurityConfig(request_rate_per_source=1, request_burst_per_source=5,
                         invite_rate_per_source=1, invite_burst_per_source=2,
                         calls_per_second=1, calls_burst=3)
    edge = EdgeLimiter(cfg, now=0.0)
    ok = [edge.check("192.0.2.1", "INVITE", 0.0, new_call=True).verdict for _ in range(3)]
    assert ok == [RateVerdict.ACCEPT, RateVerdict.ACCEPT, RateVerdict.RATE_SOURCE_INVITE]
    # In-dialog requests from the same source are not INVITE-limited.
    assert edge.check("192.0.2.1", "BYE", 0.0).accepted
    # Another source gets its own INVITE bucket but shares the global call budget.
    assert edge.check("192.0.2.2", "INVITE", 0.0, new_call=True).accepted
    d = edge.check("192.0.2.3", "INVITE", 0.0, new_call=True)
    assert d.verdict is RateVerdict.RATE_GLOBAL and d.retry_after_s == pytest.approx(1.0)
    assert edge.check("192.0.2.1", "OPTIONS", 0.0).accepted  # its 5th request: burst is 5
    d = edge.check("192.0.2.1", "OPTIONS", 0.0)
    assert d.verdict is RateVerdict.RATE_SOURCE_REQUEST and d.retry_after_s > 0
    assert RateVerdict.RATE_GLOBAL.value == "rate_global"
    assert edge.tracked_sources == 3


def test_trunk_bucket_lets_a_carrier_burst_through_and_is_per_trunk() -> None:
    """30 INVITEs in one second from a 30-CPS trunk pass (all from one balancer address);
    a burst beyond `cps_burst` does not; another trunk's budget is untouched."""
    from gateway.security.ratelimit import TrunkLimiter, TrunkRate

    cfg = SecurityConfig()
    limiter = TrunkLimiter([TrunkRate("carrier", 30.0, 60), TrunkRate("pbx", 2.0, 4)], cfg, 0.0)
    assert all(limiter.new_call("carrier", i / 30).accepted for i in range(30))
    # Requests: INVITE+ACK+BYE+1 per call from one source, at 30 calls/s, all pass.
    assert all(limiter.request("carrier", "10.0.0.5", i / 120).accepted for i in range(120))
    burst = [limiter.new_call("carrier", 1.0).accepted for _ in range(70)]
    assert burst.count(True) == 60 and burst[-1] is False  # refilled to cps_burst, no more
    refused = limiter.new_call("carrier", 1.0)
    assert refused.verdict is RateVerdict.RATE_TRUNK and 0 < refused.retry_after_s <= 1 / 30 + 1e-9
    assert [limiter.new_call("pbx", 1.0).accepted for _ in range(5)] == [True] * 4 + [False]


def test_trunk_request_buckets_never_below_the_security_ones() -> None:
    from gateway.security.ratelimit import TrunkLimiter, TrunkRate

    cfg = SecurityConfig(request_rate_per_source=20.0, request_burst_per_source=50)
    limiter = TrunkLimiter([TrunkRate("tiny", 0.5, 1)], cfg, 0.0)
    assert [limiter.request("tiny", "h", 0.0).accepted for _ in range(51)] == [True] * 50 + [
        False]

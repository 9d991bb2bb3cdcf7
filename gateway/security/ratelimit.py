"""Token buckets and concurrency caps for the edge (issue 7 items 4, 5 and 7).

- `TokenBucket`: rate + burst, refilled from the `now` the caller passes.
- `KeyedBuckets`: one bucket per key (source address), at most `max_keys` tracked; the least
  recently seen key is evicted first, so memory stays bounded under a flood from many sources.
  An evicted source comes back with a full bucket: the global cap (`calls_per_second`) is what
  bounds an attacker who rotates addresses.
- `ConcurrencyLimiter`: counts live things per key with a per-key and a total cap (TCP
  connections per source/total, calls per trunk).
- `EdgeLimiter`: the per-request decision the SIP driver needs, built from the `[security]`
  config: per-source request bucket, per-source INVITE bucket, global new-call bucket. These
  are for sources that match no trunk and for INVITEs that have not authenticated.
- `TrunkLimiter`: what a configured trunk gets instead (issue 12 item 2): its own new-call
  bucket (`max_cps`, `cps_burst`) for calls it places, and per-source request buckets sized for
  that rate — behind a SIP load balancer every call of a whole cluster comes from one address.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum

from gateway.config import SecurityConfig


class TokenBucket:
    """`rate` tokens per second up to `burst`; starts full."""

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst = rate, float(burst)
        self._tokens, self._stamp = float(burst), now

    def _refill(self, now: float) -> None:
        if now > self._stamp:  # time never runs backwards for a bucket
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    def take(self, now: float, n: float = 1.0) -> bool:
        self._refill(now)
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False

    def retry_after(self, now: float, n: float = 1.0) -> float:
        """Seconds until `n` tokens are available (0 if they are now)."""
        self._refill(now)
        return max(0.0, (n - self._tokens) / self.rate)


class KeyedBuckets:
    """A bounded LRU map of key -> `TokenBucket`, all with the same rate and burst."""

    def __init__(self, rate: float, burst: float, max_keys: int) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def bucket(self, key: str, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
                self.evictions += 1
        else:
            self._buckets.move_to_end(key)
        return bucket

    def take(self, key: str, now: float, n: float = 1.0) -> bool:
        return self.bucket(key, now).take(now, n)

    def retry_after(self, key: str, now: float) -> float:
        return self.bucket(key, now).retry_after(now)


class ConcurrencyLimiter:
    """Live items per key, capped per key and in total; memory bounded by the total cap."""

    def __init__(self, per_key: int, total: int) -> None:
        self.per_key, self.total = per_key, total
        self._counts: dict[str, int] = {}
        self._total = 0

    @property
    def active(self) -> int:
        return self._total

    def count(self, key: str) -> int:
        return self._counts.get(key, 0)

    def acquire(self, key: str, limit: int | None = None) -> bool:
        """Take a slot for `key` (`limit` overrides the per-key cap, e.g. a trunk's max_calls)."""
        per_key = self.per_key if limit is None else limit
        if self._total >= self.total or self._counts.get(key, 0) >= per_key:
            return False
        self._counts[key] = self._counts.get(key, 0) + 1
        self._total += 1
        return True

    def release(self, key: str) -> None:
        n = self._counts.get(key, 0)
        if n <= 0:
            raise ValueError(f"release without acquire for {key!r}")
        if n == 1:
            del self._counts[key]
        else:
            self._counts[key] = n - 1
        self._total -= 1


class RateVerdict(Enum):
    """Edge decision for one request; values are the `security_rejections` reasons."""

    ACCEPT = "accept"
    RATE_SOURCE_REQUEST = "rate_source_request"
    RATE_SOURCE_INVITE = "rate_source_invite"
    RATE_GLOBAL = "rate_global"
    RATE_TRUNK = "rate_trunk"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: RateVerdict
    retry_after_s: float = 0.0

    @property
    def accepted(self) -> bool:
        return self.verdict is RateVerdict.ACCEPT


ACCEPTED = Decision(RateVerdict.ACCEPT)


class EdgeLimiter:
    """Per-source request and INVITE buckets plus the global new-call bucket."""

    def __init__(self, config: SecurityConfig, now: float) -> None:
        self._requests = KeyedBuckets(config.request_rate_per_source,
                                      config.request_burst_per_source, config.max_tracked_sources)
        self._invites = KeyedBuckets(config.invite_rate_per_source,
                                     config.invite_burst_per_source, config.max_tracked_sources)
        self._calls = TokenBucket(config.calls_per_second, config.calls_burst, now)

    def check(self, source_ip: str, method: str, now: float, *, new_call: bool = False
              ) -> Decision:
        """Every request passes the per-source bucket; a dialog-creating INVITE (`new_call`)
        also the per-source INVITE bucket and the global calls-per-second bucket."""
        decision = self.request(source_ip, now)
        if decision.accepted and new_call and method == "INVITE":
            return self.new_call(source_ip, now)
        return decision

    def request(self, source_ip: str, now: float) -> Decision:
        """The per-source bucket every message (request, or datagram before parsing) takes."""
        if not self._requests.take(source_ip, now):
            return Decision(RateVerdict.RATE_SOURCE_REQUEST,
                            self._requests.retry_after(source_ip, now))
        return ACCEPTED

    def new_call(self, source_ip: str, now: float) -> Decision:
        """The per-source INVITE bucket, then the global calls-per-second bucket."""
        if not self._invites.take(source_ip, now):
            return Decision(RateVerdict.RATE_SOURCE_INVITE,
                            self._invites.retry_after(source_ip, now))
        if not self._calls.take(now):
            return Decision(RateVerdict.RATE_GLOBAL, self._calls.retry_after(now))
        return ACCEPTED

    @property
    def tracked_sources(self) -> int:
        return max(len(self._requests), len(self._invites))


# SIP requests one call costs a source: INVITE, ACK, BYE, and one more (a retransmission, an
# in-dialog refresh or a balancer's OPTIONS probe). Sizes a trunk source's request bucket.
REQUESTS_PER_CALL = 4


@dataclass(frozen=True, slots=True)
class TrunkRate:
    """One trunk's new-call rate: `max_cps` per second, bursts of `cps_burst`."""

    name: str
    max_cps: float
    cps_burst: int


class TrunkLimiter:
    """Per trunk: one new-call bucket for the whole trunk, and per-source request buckets of
    `REQUESTS_PER_CALL` times its call rate (never smaller than `[security]`'s per-source
    request limits)."""

    def __init__(self, trunks: list[TrunkRate], config: SecurityConfig, now: float) -> None:
        self._calls = {t.name: TokenBucket(t.max_cps, t.cps_burst, now) for t in trunks}
        self._requests = {
            t.name: KeyedBuckets(max(config.request_rate_per_source, REQUESTS_PER_CALL * t.max_cps),
                                 max(config.request_burst_per_source,
                                     REQUESTS_PER_CALL * t.cps_burst),
                                 config.max_tracked_sources)
            for t in trunks}

    def request(self, trunk: str, source_ip: str, now: float) -> Decision:
        buckets = self._requests[trunk]
        if not buckets.take(source_ip, now):
            return Decision(RateVerdict.RATE_SOURCE_REQUEST, buckets.retry_after(source_ip, now))
        return ACCEPTED

    @property
    def tracked_sources(self) -> int:
        return sum(len(buckets) for buckets in self._requests.values())

    def new_call(self, trunk: str, now: float) -> Decision:
        bucket = self._calls[trunk]
        if not bucket.take(now):
            return Decision(RateVerdict.RATE_TRUNK, bucket.retry_after(now))
        return ACCEPTED

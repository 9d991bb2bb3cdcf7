"""The SIP edge: every new request from the wire is screened here before the core acts on it.

Order (issue 7, issue 12): who is calling (trunk by source CIDR; unknown sources dropped or
403, REGISTER refused; password guessers in the penalty box dropped) → how fast → whether this
worker takes calls (an out-of-dialog OPTIONS gets 503 while it does not: draining, at
`max_calls` or overloaded, so a balancer's probing takes it out) → who they are (digest
authentication of new INVITEs for trunks with credentials: 401 with SHA-256 and MD5
challenges). Every refusal is counted in `security_rejections_total{reason}` and logged at a
bounded rate. Refusals of who and how fast (403, 405, 503) are stateless (RFC 3261 §8.2.7): a
flood costs no transactions; 401 challenges keep a transaction so a retransmitted INVITE gets
the same nonce.

How fast, by who is asking (issue 12 item 2):
- a source a trunk trusts (inside its CIDRs, and authenticated lately if it needs digest):
  per-source request bucket sized for the trunk's call rate (`REQUESTS_PER_CALL` × `max_cps`;
  behind a load balancer one address carries a whole cluster); any other source: `[security]`;
- a call the trunk places — by address, or once its digest answer checks out — takes the
  trunk's own bucket (`max_cps`, `cps_burst`), never a budget strangers can spend;
- an INVITE that has not authenticated (the challenge leg, a wrong password) takes the
  `[security]` per-source INVITE bucket and the global `calls_per_second` bucket — unless its
  source authenticated within the nonce lifetime (a PBX's every call starts with a challenge);
- failed digest answers put a source in the penalty box (`auth_failures_max` within
  `auth_failures_window_s` → dropped unparsed for `auth_ban_s`, logged once).

Every UDP datagram takes its source's request token before it is parsed (`admit`, the core's
`DatagramGate`), so retransmission and garbage floods are charged too. A source over that rate
is told `Retry-After: N` once; until the N seconds pass its datagrams are dropped unparsed, as
are datagrams from sources no trunk allows in drop mode: refusing a flood must cost less than
serving it. This object is the core's `PreDispatch` and `DatagramGate`; it reads no clock of
its own — the core passes `now` — and keeps nothing between the two hooks: the rate decision
`admit` made for a datagram comes back to `screen` through the core (`admitted`). An allowed
request's verdict names its trunk, which the core puts on `InviteReceived`: a call's source is
identified once. Draining is the process's one `Draining` flag.
"""

from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict
from collections.abc import Callable

from gateway.config import Config, TrunkConfig
from gateway.drain import Draining
from gateway.logs import RateLimitedLog
from gateway.metrics import Metrics
from gateway.outcomes import Outcome, response_headers
from gateway.security.acl import TrunkMatcher
from gateway.security.penalty import PenaltyBox
from gateway.security.policy import PolicyAction, screen_request
from gateway.security.ratelimit import (
    Decision,
    EdgeLimiter,
    RateVerdict,
    TrunkLimiter,
    TrunkRate,
)
from gateway.sip.address import Peer
from gateway.sip.auth import Algorithm, AuthResult, DigestAuthenticator
from gateway.sip.core import DROP, SipVerdict
from gateway.sip.message import SipRequest

log = logging.getLogger("gateway.security")

# Why this worker takes no new call right now ("draining", "at capacity", "overloaded"), or
# None when it does: asked for every out-of-dialog OPTIONS.
Availability = Callable[[], str | None]

NO_TRUNK = "-"
# availability() reasons → what an OPTIONS gets (the same disposition an INVITE would get).
_BUSY = {"draining": Outcome.DRAINING, "at capacity": Outcome.CAPACITY,
         "overloaded": Outcome.OVERLOADED}
_UNKNOWN = object()


def _wait(decision: Decision) -> int:
    """Whole seconds for Retry-After (at least 1) and for the penalty that goes with it."""
    return max(1, math.ceil(decision.retry_after_s))


class SecurityScreen:
    def __init__(self, config: Config, metrics: Metrics, *, now: float = 0.0,
                 secret: bytes | None = None, draining: Draining | None = None,
                 availability: Availability | None = None) -> None:
        self._config = config
        self._security = config.security
        self._metrics = metrics
        self._matcher = TrunkMatcher(config.trunks)
        self._limiter = EdgeLimiter(config.security, now)
        self._trunk_limiter = TrunkLimiter(
            [TrunkRate(t.name, t.max_cps, t.cps_burst) for t in config.trunks], config.security,
            now)
        sec = config.security
        self._guessers = PenaltyBox(sec.auth_failures_max, sec.auth_failures_window_s,
                                    sec.auth_ban_s, sec.max_tracked_sources)
        # Sources whose digest answer checked out, until when they count as authenticated.
        self._authenticated: OrderedDict[str, float] = OrderedDict()
        self._auth = DigestAuthenticator(secret or os.urandom(32),
                                         nonce_ttl_s=config.security.nonce_ttl_s)
        self._log = RateLimitedLog(log)
        self._trunks: dict[str, TrunkConfig | None] = {}  # match cache, bounded
        # Sources told to wait (503 Retry-After): until when, and why. Bounded like the buckets.
        self._penalty: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self.draining = draining if draining is not None else Draining()
        self._availability = availability

    def trunk(self, host: str) -> TrunkConfig | None:
        trunk = self._trunks.get(host, _UNKNOWN)
        if trunk is _UNKNOWN:
            if len(self._trunks) >= self._security.max_tracked_sources:
                self._trunks.clear()
            trunk = self._trunks[host] = self._matcher.match(host)
        return trunk  # type: ignore[return-value]

    @property
    def tracked_sources(self) -> int:
        """Sources with rate buckets: strangers' and those trunks trust (bounded, each LRU)."""
        return self._limiter.tracked_sources + self._trunk_limiter.tracked_sources

    @property
    def penalized_sources(self) -> int:
        return len(self._penalty)

    def admit(self, host: str, now: float) -> Decision | None:
        """The core's `DatagramGate`: every datagram takes the source's request token here,
        before parsing — retransmissions and garbage included, which never reach `screen`.
        Dropped unparsed (None): sources no trunk allows (drop mode) and sources still inside
        the Retry-After they were given. The datagram that first goes over the rate is let
        through so `screen` can answer it 503 with that Retry-After; the source waits from
        then on. The decision returned comes back to `screen` with the parsed request."""
        if self._penalized(host, now):
            return None
        trunk = self.trunk(host)
        if self._security.unknown_source == "drop" and trunk is None:
            self._count("unknown_source", host, now)
            return None
        decision = self._request_token(trunk, host, now)
        if not decision.accepted:
            self._penalize(host, now + _wait(decision), RateVerdict.RATE_SOURCE_REQUEST.value)
        return decision

    def screen(self, source: Peer, request: SipRequest, now: float,
               admitted: object | None = None) -> SipVerdict:
        method = request.method
        host = source.host
        if isinstance(admitted, Decision):
            decision = admitted  # this datagram already took its token in `admit`
        else:  # TCP, or a caller without the gate
            if self._penalized(host, now):
                return DROP
            decision = self._request_token(self.trunk(host), host, now)
            if not decision.accepted:
                self._penalize(host, now + _wait(decision), decision.verdict.value)
        trunk = self.trunk(host)
        first = screen_request(trunk, method, self._security)
        if first.action is PolicyAction.DROP:
            return self._refuse(first.reason, source, method, now, None)
        if first.action is PolicyAction.REJECT:
            if trunk is None and not decision.accepted:
                # An unknown source over the request rate gets no more 403s for a while.
                return self._refuse(decision.verdict.value, source, method, now, None)
            return self._refuse(first.reason, source, method, now,
                                SipVerdict.respond(first.status, stateless=True))
        assert trunk is not None
        new_call = method == "INVITE" and request.to.tag is None
        if decision.accepted and new_call and not trunk.requires_auth:
            # A busy PBX over its call rate is not muted: its in-dialog requests still pass.
            decision = self._trunk_limiter.new_call(trunk.name, now)
        if not decision.accepted:
            return self._rate_limited(decision, source, method, now)
        if method == "OPTIONS" and request.to.tag is None:
            # The balancer's health probe gets what an INVITE would get now.
            busy = self._busy()
            if busy is not None:
                d = busy.disposition
                assert d.status is not None
                return SipVerdict.respond(d.status, d.reason, response_headers(d))
        if new_call and trunk.requires_auth:
            return self._authenticate(trunk, source, request, now)
        return SipVerdict.allow(trunk.name)

    def _busy(self) -> Outcome | None:
        if self.draining:
            return Outcome.DRAINING
        reason = self._availability() if self._availability is not None else None
        return None if reason is None else _BUSY.get(reason, Outcome.CAPACITY)

    def _request_token(self, trunk: TrunkConfig | None, host: str, now: float) -> Decision:
        """The per-source request token: sized for the trunk when the source is trusted by it
        (inside a trunk's CIDRs and either no digest needed or authenticated lately)."""
        if trunk is None or (trunk.requires_auth and not self._recently_authenticated(host, now)):
            return self._limiter.request(host, now)
        return self._trunk_limiter.request(trunk.name, host, now)

    def _rate_limited(self, decision: Decision, source: Peer, method: str,
                      now: float) -> SipVerdict:
        answer = None if method == "ACK" else SipVerdict.respond(
            503, "Rate Limited", [("Retry-After", str(_wait(decision)))], stateless=True)
        return self._refuse(decision.verdict.value, source, method, now, answer)

    def _recently_authenticated(self, host: str, now: float) -> bool:
        until = self._authenticated.get(host)
        if until is None or now < until:
            return until is not None
        del self._authenticated[host]
        return False

    def _authenticated_now(self, host: str, now: float) -> None:
        self._guessers.succeeded(host)
        self._authenticated[host] = now + self._security.nonce_ttl_s
        self._authenticated.move_to_end(host)
        while len(self._authenticated) > self._security.max_tracked_sources:
            self._authenticated.popitem(last=False)

    def _authenticate(self, trunk: TrunkConfig, source: Peer, request: SipRequest,
                      now: float) -> SipVerdict:
        assert trunk.username is not None and trunk.password is not None
        algorithms = [Algorithm(a) for a in trunk.digest_algorithms]
        result = self._auth.verify(
            request.headers.get("Authorization"), method=request.method, source_ip=source.host,
            now=now, realm=trunk.realm, username=trunk.username,
            password=trunk.password.reveal(), request_uri=str(request.uri),
            algorithms=algorithms,
        )
        host = source.host
        if result is AuthResult.OK:
            self._authenticated_now(host, now)
            decision = self._trunk_limiter.new_call(trunk.name, now)
            if not decision.accepted:
                return self._rate_limited(decision, source, request.method, now)
            return SipVerdict.allow(trunk.name)
        if result not in (AuthResult.MISSING, AuthResult.STALE) and self._guessers.failed(
                host, now):
            sec = self._security
            log.warning("penalty box: %s failed digest authentication %d times within %.0f s; "
                        "dropping everything from it for %.0f s", host, sec.auth_failures_max,
                        sec.auth_failures_window_s, sec.auth_ban_s)
            self._metrics.security_rejection(result.reason)
            return DROP
        if not self._recently_authenticated(host, now):
            # Not authenticated: the [security] per-source INVITE and global buckets, which
            # no authenticated trunk's calls depend on.
            decision = self._limiter.new_call(host, now)
            if not decision.accepted:
                return self._rate_limited(decision, source, request.method, now)
        challenge = self._auth.challenge(trunk.realm, source.host, now,
                                         stale=result is AuthResult.STALE, algorithms=algorithms)
        answer = SipVerdict.respond(401, None, [("WWW-Authenticate", c) for c in challenge])
        if result is AuthResult.MISSING:  # the normal first leg of a digest exchange
            self._metrics.security_rejection(result.reason)
            return answer
        return self._refuse(result.reason, source, request.method, now, answer)

    def _penalized(self, host: str, now: float) -> bool:
        if self._guessers.banned(host, now):
            self._metrics.security_rejection("auth_banned")
            return True
        entry = self._penalty.get(host)
        if entry is None:
            return False
        if now >= entry[0]:
            del self._penalty[host]
            return False
        self._count(entry[1], host, now)
        return True

    def _penalize(self, host: str, until: float, reason: str) -> None:
        self._penalty[host] = (until, reason)
        self._penalty.move_to_end(host)
        while len(self._penalty) > self._security.max_tracked_sources:
            self._penalty.popitem(last=False)

    def _count(self, reason: str, host: str, now: float) -> None:
        self._metrics.security_rejection(reason)
        self._log.log(reason, now, logging.WARNING, "dropped datagram from %s: %s", host, reason)

    def _refuse(self, reason: str, source: Peer, method: str, now: float,
                answer: SipVerdict | None) -> SipVerdict:
        self._metrics.security_rejection(reason)
        self._log.log(reason, now, logging.WARNING, "refused %s from %s: %s", method,
                      source.host, reason)
        return answer if answer is not None else DROP


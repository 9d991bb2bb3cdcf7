"""The SIP edge: every new request from the wire is screened here before the core acts on it.

Order (issue 7): who is calling (trunk by source CIDR; unknown sources dropped or 403,
REGISTER refused) → how fast (per-source request and INVITE buckets, global new-call bucket:
503 with Retry-After) → draining (OPTIONS gets 503) → who they are (digest authentication of
new INVITEs for trunks with credentials: 401 with SHA-256 and MD5 challenges). Every refusal
is counted in `security_rejections_total{reason}` and logged at a bounded rate. Refusals of
who and how fast (403, 405, 503) are stateless (RFC 3261 §8.2.7): a flood costs no
transactions; 401 challenges keep a transaction so a retransmitted INVITE gets the same nonce.
This object is the core's `PreDispatch`; it reads no clock of its own — the core passes `now`.
"""

from __future__ import annotations

import logging
import math
import os

from gateway.config import Config, TrunkConfig
from gateway.logs import RateLimitedLog
from gateway.metrics import Metrics
from gateway.security.acl import TrunkMatcher
from gateway.security.policy import Action as PolicyAction
from gateway.security.policy import screen_request
from gateway.security.ratelimit import EdgeLimiter
from gateway.sip.address import Peer
from gateway.sip.auth import Algorithm, AuthResult, DigestAuthenticator
from gateway.sip.core import ALLOW, DROP, Verdict
from gateway.sip.message import Request

log = logging.getLogger("gateway.security")

NO_TRUNK = "-"


class SecurityScreen:
    def __init__(self, config: Config, metrics: Metrics, *, now: float = 0.0,
                 secret: bytes | None = None) -> None:
        self._config = config
        self._security = config.security
        self._metrics = metrics
        self._matcher = TrunkMatcher(config.trunks)
        self._limiter = EdgeLimiter(config.security, now)
        self._auth = DigestAuthenticator(secret or os.urandom(32),
                                         nonce_ttl_s=config.security.nonce_ttl_s)
        self._log = RateLimitedLog(log)
        self.draining = False

    def trunk(self, host: str) -> TrunkConfig | None:
        return self._matcher.match(host)

    def trunk_of(self, peer: Peer) -> str:
        trunk = self._matcher.match(peer.host)
        return trunk.name if trunk is not None else NO_TRUNK

    def screen(self, source: Peer, request: Request, now: float) -> Verdict:
        method = request.method
        trunk = self._matcher.match(source.host)
        first = screen_request(trunk, method, self._security)
        if first.action is PolicyAction.DROP:
            return self._refuse(first.reason, source, method, now, None)
        if first.action is PolicyAction.REJECT:
            return self._refuse(first.reason, source, method, now,
                                Verdict.respond(first.status, stateless=True))
        assert trunk is not None
        new_call = method == "INVITE" and request.to.tag is None
        decision = self._limiter.check(source.host, method, now, new_call=new_call)
        if not decision.accepted:
            retry = str(max(1, math.ceil(decision.retry_after_s)))
            answer = None if method == "ACK" else Verdict.respond(
                503, "Rate Limited", [("Retry-After", retry)], stateless=True)
            return self._refuse(decision.verdict.value, source, method, now, answer)
        if self.draining and method == "OPTIONS" and request.to.tag is None:
            return Verdict.respond(503, "Draining", [("Retry-After", "60")])
        if new_call and trunk.requires_auth:
            return self._authenticate(trunk, source, request, now)
        return ALLOW

    def _authenticate(self, trunk: TrunkConfig, source: Peer, request: Request,
                      now: float) -> Verdict:
        assert trunk.username is not None and trunk.password is not None
        algorithms = [Algorithm(a) for a in trunk.digest_algorithms]
        result = self._auth.verify(
            request.headers.get("Authorization"), method=request.method, source_ip=source.host,
            now=now, realm=trunk.realm, username=trunk.username,
            password=trunk.password.reveal(), request_uri=str(request.uri),
            algorithms=algorithms,
        )
        if result is AuthResult.OK:
            return ALLOW
        challenge = self._auth.challenge(trunk.realm, source.host, now,
                                         stale=result is AuthResult.STALE, algorithms=algorithms)
        answer = Verdict.respond(401, None, [("WWW-Authenticate", c) for c in challenge])
        if result is AuthResult.MISSING:  # the normal first leg of a digest exchange
            self._metrics.security_rejection(result.reason)
            return answer
        return self._refuse(result.reason, source, request.method, now, answer)

    def _refuse(self, reason: str, source: Peer, method: str, now: float,
                answer: Verdict | None) -> Verdict:
        self._metrics.security_rejection(reason)
        self._log.log(reason, now, logging.WARNING, "refused %s from %s: %s", method,
                      source.host, reason)
        return answer if answer is not None else DROP


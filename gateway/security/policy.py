"""Who gets an answer at all (issue 7 items 2 and 3): the first decision on every request.

A request from a source no trunk allows is silently dropped (default) or answered 403 —
`[security] unknown_source` — and never with anything that tells a scanner which numbers or
users exist. REGISTER is not a service we offer: 405 or, for sources we drop, nothing.
Responses to requests are never generated for ACK (RFC 3261 §17.2.1: ACK gets no response).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from gateway.config import SecurityConfig, TrunkConfig


class PolicyAction(Enum):
    PASS = "pass"  # continue: rate limits, then auth (if the trunk has credentials), then call
    DROP = "drop"  # send nothing
    REJECT = "reject"  # answer with `status` (never for ACK)


@dataclass(frozen=True, slots=True)
class Screen:
    action: PolicyAction
    status: int = 0  # SIP status to send when action is REJECT
    reason: str = ""  # `security_rejections` reason when not PASS


def screen_request(trunk: TrunkConfig | None, method: str, security: SecurityConfig) -> Screen:
    """Decide from the matched trunk (None: no trunk allows the source) and the method."""
    drop = security.unknown_source == "drop"
    if trunk is None:
        if drop or method == "ACK":
            return Screen(PolicyAction.DROP, reason="unknown_source")
        return Screen(PolicyAction.REJECT, 403, "unknown_source")
    if method == "REGISTER":
        if drop:
            return Screen(PolicyAction.DROP, reason="register")
        return Screen(PolicyAction.REJECT, 405, "register")
    return Screen(PolicyAction.PASS)

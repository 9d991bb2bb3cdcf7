import ipaddress

import pytest

from gateway.config import SecurityConfig, TrunkConfig
from gateway.security.policy import PolicyAction, screen_request

TRUNK = TrunkConfig(name="pbx", allow=(ipaddress.ip_network("192.0.2.0/24"),))
DROP = SecurityConfig()
REJECT = SecurityConfig(unknown_source="reject")


@pytest.mark.parametrize(("trunk", "method", "security", "action", "status", "reason"), [
    (None, "INVITE", DROP, PolicyAction.DROP, 0, "unknown_source"),
    (None, "OPTIONS", DROP, PolicyAction.DROP, 0, "unknown_source"),
    (None, "INVITE", REJECT, PolicyAction.REJECT, 403, "unknown_source"),
    (None, "REGISTER", REJECT, PolicyAction.REJECT, 403, "unknown_source"),
    (None, "ACK", REJECT, PolicyAction.DROP, 0, "unknown_source"),
    (TRUNK, "REGISTER", DROP, PolicyAction.DROP, 0, "register"),
    (TRUNK, "REGISTER", REJECT, PolicyAction.REJECT, 405, "register"),
    (TRUNK, "INVITE", DROP, PolicyAction.PASS, 0, ""),
    (TRUNK, "OPTIONS", REJECT, PolicyAction.PASS, 0, ""),
])
def test_screen(trunk: TrunkConfig | None, method: str, security: SecurityConfig,
                action: PolicyAction, status: int, reason: str) -> None:
    s = screen_request(trunk, method, security)
    assert (s.action, s.status, s.reason) == (action, status, reason)

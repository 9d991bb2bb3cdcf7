import ipaddress

import pytest

from gateway.config import SecurityConfig, TrunkConfig
from gateway.security.policy import Action, screen_request

TRUNK = TrunkConfig(name="pbx", allow=(ipaddress.ip_network("192.0.2.0/24"),))
DROP = SecurityConfig()
REJECT = SecurityConfig(unknown_source="reject")


@pytest.mark.parametrize(("trunk", "method", "security", "action", "status", "reason"), [
    (None, "INVITE", DROP, Action.DROP, 0, "unknown_source"),
    (None, "OPTIONS", DROP, Action.DROP, 0, "unknown_source"),
    (None, "INVITE", REJECT, Action.REJECT, 403, "unknown_source"),
    (None, "REGISTER", REJECT, Action.REJECT, 403, "unknown_source"),
    (None, "ACK", REJECT, Action.DROP, 0, "unknown_source"),
    (TRUNK, "REGISTER", DROP, Action.DROP, 0, "register"),
    (TRUNK, "REGISTER", REJECT, Action.REJECT, 405, "register"),
    (TRUNK, "INVITE", DROP, Action.PASS, 0, ""),
    (TRUNK, "OPTIONS", REJECT, Action.PASS, 0, ""),
])
def test_screen(trunk: TrunkConfig | None, method: str, security: SecurityConfig,
                action: Action, status: int, reason: str) -> None:
    s = screen_request(trunk, method, security)
    assert (s.action, s.status, s.reason) == (action, status, reason)

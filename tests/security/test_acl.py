import ipaddress

import pytest

from gateway.config import TrunkConfig
from gateway.security.acl import TrunkMatcher


def trunk(name: str, *nets: str) -> TrunkConfig:
    return TrunkConfig(name=name, allow=tuple(ipaddress.ip_network(n) for n in nets))


MATCHER = TrunkMatcher([
    trunk("carrier", "203.0.113.0/24", "2001:db8::/32"),
    trunk("pbx", "203.0.113.10/32"),
    trunk("office", "10.0.0.0/8"),
    trunk("office2", "10.0.0.0/8"),
])


@pytest.mark.parametrize(("ip", "name"), [
    ("203.0.113.10", "pbx"),  # longest prefix wins over the wider carrier range
    ("203.0.113.11", "carrier"),
    ("2001:db8::5", "carrier"),
    ("2001:db8::5%eth0", "carrier"),
    ("::ffff:203.0.113.10", "pbx"),  # IPv4-mapped from a dual-stack socket
    ("10.1.2.3", "office"),  # equal prefixes: config order
    ("192.0.2.1", None),
    ("::1", None),
    ("not-an-ip", None),
    ("", None),
])
def test_match(ip: str, name: str | None) -> None:
    found = MATCHER.match(ip)
    assert (found.name if found else None) == name


def test_match_accepts_address_objects() -> None:
    found = MATCHER.match(ipaddress.ip_address("203.0.113.99"))
    assert found is not None and found.name == "carrier"
    assert TrunkMatcher([]).match("127.0.0.1") is None

"""Which trunk a source address belongs to (issue 7 item 1): CIDR matching, longest prefix wins.

Longest prefix rather than first listed, so a narrow trunk with credentials (one PBX) can sit
inside a wider one and still be the one that applies. Ties keep config order. IPv4-mapped IPv6
addresses (dual-stack sockets report `::ffff:192.0.2.1`) match IPv4 networks; a zone suffix
(`fe80::1%eth0`) is ignored. Anything that is not an IP address matches nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from gateway.config import TrunkConfig

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(value: str | IPAddress) -> IPAddress | None:
    if not isinstance(value, str):
        addr: IPAddress = value
    else:
        try:
            addr = ipaddress.ip_address(value.split("%", 1)[0])
        except ValueError:
            return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class TrunkMatcher:
    def __init__(self, trunks: Sequence[TrunkConfig]) -> None:
        entries = [(net, order, trunk) for order, trunk in enumerate(trunks)
                   for net in trunk.allow]
        # Most specific first; within a prefix length, config order.
        entries.sort(key=lambda e: (-e[0].prefixlen, e[1]))
        self._entries = [(net, trunk) for net, _, trunk in entries]

    def match(self, ip: str | IPAddress) -> TrunkConfig | None:
        addr = parse_ip(ip)
        if addr is None:
            return None
        for net, trunk in self._entries:
            if addr.version == net.version and addr in net:
                return trunk
        return None

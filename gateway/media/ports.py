"""RTP port pool over the configured range: even ports only, quarantine after release.

RTP uses the even port and leaves port+1 for RTCP (RFC 3550 §11). A released port stays out of
use for `quarantine_s` so that late packets of the previous call (or a retransmitting peer that
has not seen our BYE) never reach the next call on that port. Exhaustion raises `PortsExhausted`,
which carries its call outcome (503 and a metric).
"""

from __future__ import annotations

import collections
import logging

from gateway.clock import Clock
from gateway.outcomes import Outcome

logger = logging.getLogger(__name__)


class PortsExhausted(Exception):
    """No RTP port is free; the call is answered 503 Service Unavailable."""

    outcome = Outcome.NO_PORT


class PortPool:
    def __init__(self, port_min: int, port_max: int, quarantine_s: float, clock: Clock) -> None:
        if not 0 < port_min <= port_max <= 65535:
            raise ValueError("bad RTP port range")
        first = port_min + (port_min % 2)
        self._all = frozenset(range(first, port_max, 2)) | (
            {port_max} if port_max % 2 == 0 and port_max >= first else set()
        )
        if not self._all:
            raise ValueError("RTP port range holds no even port")
        self._free: collections.deque[int] = collections.deque(sorted(self._all))
        self._quarantine: collections.deque[tuple[float, int]] = collections.deque()
        self._in_use: set[int] = set()
        self._quarantine_s = quarantine_s
        self._clock = clock

    @property
    def capacity(self) -> int:
        return len(self._all)

    @property
    def free_count(self) -> int:
        self._expire()
        return len(self._free)

    @property
    def in_use_count(self) -> int:
        return len(self._in_use)

    def acquire(self) -> int:
        self._expire()
        if not self._free:
            raise PortsExhausted(f"all {len(self._all)} RTP ports in use or quarantined")
        port = self._free.popleft()
        self._in_use.add(port)
        return port

    def release(self, port: int) -> None:
        """Idempotent: releasing a port twice (teardown paths race) is harmless."""
        if port not in self._in_use:
            return
        self._in_use.discard(port)
        self._quarantine.append((self._clock.now() + self._quarantine_s, port))

    def _expire(self) -> None:
        now = self._clock.now()
        # Releases happen in time order, so the deque is sorted by deadline.
        while self._quarantine and self._quarantine[0][0] <= now:
            self._free.append(self._quarantine.popleft()[1])

"""RFC 3261 timer values (§17, Table 4 of Appendix A) and RFC 6026 Timers L and M.

All timers derive from `TimerSettings(T1, T2, T4)`; nothing here reads a clock. Timers that
only absorb retransmissions (D, I, J, K) are zero on reliable transports (§17.1.1.2, §17.2.1,
§17.2.2, §17.1.2.2), because a reliable transport never retransmits.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TimerSettings:
    """Base timers in seconds. Tests shrink them (e.g. T1=0.05) to keep real-peer runs short."""

    T1: float = 0.5  # RTT estimate
    T2: float = 4.0  # cap of the retransmission interval for non-INVITE requests and 2xx
    T4: float = 5.0  # how long a message can stay in the network
    D: float = 32.0  # Timer D on unreliable transports: "at least 32 seconds" (§17.1.1.2)

    @property
    def timeout(self) -> float:
        """64·T1: Timers B, F, H, L, M and the 2xx-without-ACK limit of §13.3.1.4."""
        return 64 * self.T1

    def timer_d(self, reliable: bool) -> float:
        return 0.0 if reliable else max(self.D, self.timeout)

    def timer_i(self, reliable: bool) -> float:
        return 0.0 if reliable else self.T4

    def timer_j(self, reliable: bool) -> float:
        return 0.0 if reliable else self.timeout

    def timer_k(self, reliable: bool) -> float:
        return 0.0 if reliable else self.T4

    def next_interval(self, interval: float, *, capped: bool = True) -> float:
        """The retransmission interval after `interval`: doubled, capped at T2 unless INVITE."""
        doubled = interval * 2
        return min(doubled, self.T2) if capped else doubled


DEFAULT_TIMERS = TimerSettings()


def next_fire(scheduled: float | None, interval: float, now: float) -> float:
    """The next retransmission time, counted from when the last one was due rather than from
    when a busy event loop got round to it, so lateness does not accumulate; a slot that is
    already past is skipped instead of fired in a burst.
    """
    if scheduled is None or scheduled + interval <= now:
        return now + interval
    return scheduled + interval

"""Overload protection: is this worker healthy enough to take one more call?

One worker is one event loop. When it is busy, everything on it runs late — the 20 ms playout
pacer first, so the callers hear gaps. Admission therefore watches the worker's own health and
refuses new INVITEs (503 with Retry-After, `calls_ended_total{result="overloaded"}`) while:

- the event loop's lag — how late a 50 ms ticker wakes up — has its `quantile` over the last
  `window_s` above `loop_lag_s` (a quantile, not the maximum: one garbage collection or one
  DTLS handshake must not refuse calls; and only over a whole window, so the worker's first
  seconds, when imports and caches warm up, are not judged), or
- the process used more than `cpu_fraction` of one core over the window (all threads: PyAV's
  and aiortc's included; 0 disables this check).

Leaving overload needs the window to pass below both thresholds, so the state does not flap
call by call. `OverloadDetector` is the decision, fed `now` and samples (sans-IO, tested with
hand-made clocks); `LoadMonitor` is the asyncio ticker that feeds it, records each lag in
`orga_gateway_event_loop_lag_seconds` and logs each change of state once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

TICK_S = 0.05


@dataclass(frozen=True, slots=True)
class OverloadThresholds:
    loop_lag_s: float  # refuse new calls above this lag quantile ...
    cpu_fraction: float  # ... or above this share of one core (0 = not checked)
    window_s: float  # over this window
    quantile: float = 0.9


class OverloadDetector:
    """The overload decision from lag and CPU samples, each stamped with the caller's `now`."""

    def __init__(self, thresholds: OverloadThresholds) -> None:
        self.thresholds = thresholds
        self._lags: deque[tuple[float, float]] = deque()  # (now, lag)
        self._cpu: deque[tuple[float, float]] = deque()  # (now, process CPU seconds)
        self.reason: str | None = None  # "loop_lag" or "cpu" while overloaded
        self._since: float | None = None  # first sample

    @property
    def overloaded(self) -> bool:
        return self.reason is not None

    def observe(self, now: float, lag_s: float, cpu_s: float) -> str | None:
        """Add one tick's samples; returns the new reason when the state changed, else None
        ("" when overload just ended)."""
        window = self.thresholds.window_s
        if self._since is None:
            self._since = now
        self._lags.append((now, lag_s))
        self._cpu.append((now, cpu_s))
        while self._lags and self._lags[0][0] < now - window:
            self._lags.popleft()
        while len(self._cpu) > 1 and self._cpu[1][0] <= now - window:
            self._cpu.popleft()
        reason = self._reason(now)
        if reason == self.reason:
            return None
        self.reason = reason
        return reason or ""

    def lag_quantile(self) -> float:
        lags = sorted(lag for _, lag in self._lags)
        if not lags:
            return 0.0
        return lags[min(len(lags) - 1, int(self.thresholds.quantile * len(lags)))]

    def cpu_fraction(self) -> float | None:
        """Share of one core used over the window; None until a full window is sampled."""
        if not self._cpu:
            return None
        (t0, c0), (t1, c1) = self._cpu[0], self._cpu[-1]
        if t1 - t0 < self.thresholds.window_s * 0.9:
            return None
        return (c1 - c0) / (t1 - t0)

    def _reason(self, now: float) -> str | None:
        t = self.thresholds
        if self._since is None or now - self._since < t.window_s:
            return None  # not judged on part of a window (the first seconds after start)
        if self.lag_quantile() > t.loop_lag_s:
            return "loop_lag"
        cpu = self.cpu_fraction()
        if t.cpu_fraction > 0 and cpu is not None and cpu > t.cpu_fraction:
            return "cpu"
        return None


class LoadMonitor:
    """Ticks every 50 ms on the running loop; `overloaded` is what admission asks."""

    def __init__(self, thresholds: OverloadThresholds, observe_lag: Callable[[float], None],
                 *, cpu_clock: Callable[[], float] = time.process_time) -> None:
        self.detector = OverloadDetector(thresholds)
        self._observe_lag = observe_lag
        self._cpu_clock = cpu_clock
        self._task: asyncio.Task[None] | None = None

    @property
    def overloaded(self) -> bool:
        return self.detector.overloaded

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="load monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + TICK_S
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            now = loop.time()
            lag = max(0.0, now - due)
            self._observe_lag(lag)
            change = self.detector.observe(now, lag, self._cpu_clock())
            if change:
                d = self.detector
                cpu = d.cpu_fraction()
                log.warning("overloaded (%s): event-loop lag p%d %.0f ms, CPU %s of a core; "
                            "refusing new calls", change, round(d.thresholds.quantile * 100),
                            d.lag_quantile() * 1000, "?" if cpu is None else f"{cpu:.0%}")
            elif change == "":
                log.info("no longer overloaded: taking new calls again")
            due = now + TICK_S

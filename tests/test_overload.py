"""Overload decision: lag quantile and CPU share over a window, with hand-made time."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.overload import TICK_S, LoadMonitor, OverloadDetector, OverloadThresholds

T = OverloadThresholds(loop_lag_s=0.010, cpu_fraction=0.85, window_s=2.0)


def feed(d: OverloadDetector, start: float, seconds: float, lag: float, cpu_share: float,
         cpu0: float = 0.0) -> tuple[float, float, list[str | None]]:
    """Ticks every 50 ms from `start` for `seconds`; returns (now, cpu seconds, changes)."""
    now, cpu, changes = start, cpu0, []
    for _ in range(round(seconds / TICK_S)):
        now += TICK_S
        cpu += TICK_S * cpu_share
        changes.append(d.observe(now, lag, cpu))
    return now, cpu, [c for c in changes if c is not None]


def test_quiet_worker_is_not_overloaded() -> None:
    d = OverloadDetector(T)
    _, _, changes = feed(d, 0.0, 5.0, lag=0.001, cpu_share=0.4)
    assert changes == [] and not d.overloaded
    assert d.cpu_fraction() == pytest.approx(0.4)


def test_single_spikes_do_not_refuse_calls() -> None:
    """One GC pause or DTLS handshake (a 60 ms lag now and then) is below the p90."""
    d = OverloadDetector(T)
    now, cpu = 0.0, 0.0
    for _ in range(5):
        now, cpu, changes = feed(d, now, 0.95, lag=0.001, cpu_share=0.3, cpu0=cpu)
        assert changes == []
        now += TICK_S
        assert d.observe(now, 0.060, cpu) is None
    assert not d.overloaded


@pytest.mark.parametrize(("lag", "share", "reason"), [
    (0.025, 0.5, "loop_lag"),  # the loop runs late most of the time
    (0.002, 0.97, "cpu"),  # the loop keeps up, but the core is nearly used up
])
def test_sustained_lag_or_cpu_is_overload_until_a_quiet_window(lag: float, share: float,
                                                               reason: str) -> None:
    d = OverloadDetector(T)
    now, cpu, changes = feed(d, 0.0, 3.0, lag=0.001, cpu_share=0.3)
    now, cpu, changes = feed(d, now, 3.0, lag=lag, cpu_share=share, cpu0=cpu)
    assert changes == [reason] and d.reason == reason
    # Back to normal: still overloaded while the bad samples are in the window, then not.
    now, cpu, changes = feed(d, now, 0.25, lag=0.001, cpu_share=0.3, cpu0=cpu)
    assert changes == [] and d.overloaded
    now, cpu, changes = feed(d, now, 2.75, lag=0.001, cpu_share=0.3, cpu0=cpu)
    assert changes == [""] and not d.overloaded


def test_cpu_check_off_and_needs_a_full_window() -> None:
    d = OverloadDetector(OverloadThresholds(loop_lag_s=0.010, cpu_fraction=0.0, window_s=2.0))
    _, _, changes = feed(d, 0.0, 4.0, lag=0.001, cpu_share=1.0)
    assert changes == []
    d = OverloadDetector(T)
    _, _, changes = feed(d, 0.0, 1.0, lag=0.001, cpu_share=1.0)
    assert changes == [] and d.cpu_fraction() is None  # not judged on half a window


async def test_monitor_sees_a_blocked_loop_and_records_every_lag() -> None:
    lags: list[float] = []
    monitor = LoadMonitor(OverloadThresholds(loop_lag_s=0.010, cpu_fraction=0.0,
                                             window_s=0.5), lags.append)
    monitor.start()
    await asyncio.sleep(0.3)
    assert not monitor.overloaded
    for _ in range(8):  # a loop that blocks for 80 ms at a time
        await asyncio.sleep(0)
        time.sleep(0.08)
    assert monitor.overloaded and max(lags) >= 0.05
    await monitor.stop()
    assert monitor._task is None


def test_first_partial_window_is_not_judged() -> None:
    """A worker's first seconds (imports, warm caches) run late; that is not overload."""
    d = OverloadDetector(T)
    _, _, changes = feed(d, 0.0, 1.5, lag=0.040, cpu_share=0.3)
    assert changes == [] and not d.overloaded
    _, _, changes = feed(d, 1.5, 1.0, lag=0.040, cpu_share=0.3)
    assert changes == ["loop_lag"]  # still late once a whole window is seen: overloaded

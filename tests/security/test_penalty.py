"""The penalty box: N failures inside the window ban a source for a while; bounded memory."""

from __future__ import annotations

import pytest

from gateway.security.penalty import PenaltyBox


def test_fifth_failure_in_a_minute_bans_for_ten_minutes() -> None:
    box = PenaltyBox(max_failures=5, window_s=60.0, ban_s=600.0, max_sources=100)
    assert [box.failed("192.0.2.9", t) for t in (0.0, 10.0, 20.0, 30.0)] == [False] * 4
    assert not box.banned("192.0.2.9", 30.0)
    assert box.failed("192.0.2.9", 40.0)  # the 5th within 60 s: banned, reported once
    assert box.banned("192.0.2.9", 40.0) and box.banned("192.0.2.9", 639.9)
    assert not box.banned("192.0.2.10", 41.0)  # only that source
    assert len(box) == 1
    assert not box.banned("192.0.2.9", 640.0) and len(box) == 0  # served its time


def test_paced_guesser_gets_a_handful_of_tries_per_ban() -> None:
    """svcrack at 3 guesses a second: 5 guesses, then nothing for 10 minutes."""
    box = PenaltyBox(max_failures=5, window_s=60.0, ban_s=600.0, max_sources=100)
    tried, now = 0, 0.0
    while now < 3600.0:
        if not box.banned("198.51.100.7", now):
            tried += 1
            box.failed("198.51.100.7", now)
        now += 1 / 3
    assert tried == 5 * 6  # six bans in an hour, five guesses each


def test_slow_failures_and_successes_do_not_ban() -> None:
    box = PenaltyBox(max_failures=3, window_s=60.0, ban_s=600.0, max_sources=100)
    assert not any(box.failed("h", t) for t in (0.0, 61.0, 122.0, 183.0))  # 1 a minute
    box.failed("p", 200.0)
    box.failed("p", 201.0)
    box.succeeded("p")  # the PBX got its password right: its typos are forgiven
    assert not box.failed("p", 202.0) and not box.banned("p", 202.0)


def test_memory_is_bounded() -> None:
    box = PenaltyBox(max_failures=1, window_s=60.0, ban_s=600.0, max_sources=10)
    for i in range(1000):
        box.failed(f"10.0.{i // 256}.{i % 256}", float(i) / 1000)
        box.failed(f"2001:db8::{i:x}", float(i) / 1000)
    assert len(box) == 10 and len(box._failures) <= 10


@pytest.mark.parametrize("args", [(0, 60.0, 600.0, 10), (5, 0.0, 600.0, 10),
                                  (5, 60.0, 0.0, 10), (5, 60.0, 600.0, 0)])
def test_nonsense_settings_are_refused(args: tuple[int, float, float, int]) -> None:
    with pytest.raises(ValueError):
        PenaltyBox(*args)

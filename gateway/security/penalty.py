"""The penalty box for password guessers (issue 12 item 2).

A source whose digest answers keep failing is guessing: `max_failures` failed attempts within
`window_s` put it in the box, and for `ban_s` every datagram from it is dropped unparsed — no
401, no 403, nothing a guesser can time. A patient guesser pacing itself under every rate limit
(SIPVicious `svcrack` at 3 guesses a second found a 30th-guess password) then gets
`max_failures` tries per `ban_s` — 5 per 10 minutes by default, not ten thousand an hour.

A success clears the source's failures (a PBX with one typo in a burst is not punished for it
later). Memory is bounded: at most `max_sources` sources are tracked, least recently failed
first out. The screen counts every dropped datagram (`security_rejections_total{reason=
"auth_banned"}`) and logs each ban once, when it starts.
"""

from __future__ import annotations

from collections import OrderedDict, deque


class PenaltyBox:
    def __init__(self, max_failures: int, window_s: float, ban_s: float,
                 max_sources: int) -> None:
        if max_failures < 1 or window_s <= 0 or ban_s <= 0 or max_sources < 1:
            raise ValueError("max_failures, window_s, ban_s and max_sources must be positive")
        self.max_failures, self.window_s, self.ban_s = max_failures, window_s, ban_s
        self.max_sources = max_sources
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._banned: OrderedDict[str, float] = OrderedDict()  # source -> banned until

    def __len__(self) -> int:
        """Sources in the box right now (expired bans are removed as they are looked up)."""
        return len(self._banned)

    def banned(self, host: str, now: float) -> bool:
        until = self._banned.get(host)
        if until is None:
            return False
        if now >= until:
            del self._banned[host]
            return False
        return True

    def failed(self, host: str, now: float) -> bool:
        """Record one failed attempt; True when it puts the source in the box (log it then)."""
        times = self._failures.get(host)
        if times is None:
            times = self._failures[host] = deque(maxlen=self.max_failures)
            if len(self._failures) > self.max_sources:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(host)
        times.append(now)
        if len(times) < self.max_failures or now - times[0] > self.window_s:
            return False
        del self._failures[host]
        self._banned[host] = now + self.ban_s
        self._banned.move_to_end(host)
        while len(self._banned) > self.max_sources:
            self._banned.popitem(last=False)
        return True

    def succeeded(self, host: str) -> None:
        self._failures.pop(host, None)

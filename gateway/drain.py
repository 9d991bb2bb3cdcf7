"""The process's one draining flag.

SIGTERM starts a drain (`Gateway.drain`): from then on the call registry answers new INVITEs
503 Draining, the security screen answers OPTIONS 503 (so a proxy's health check takes this
worker out of rotation), `/ready` says 503 and the systemd status says "draining". All of them
read this one object, which `app.py` creates and hands to each; a drain is never undone.
"""

from __future__ import annotations


class Draining:
    __slots__ = ("_on",)

    def __init__(self) -> None:
        self._on = False

    def __bool__(self) -> bool:
        return self._on

    def begin(self) -> None:
        self._on = True

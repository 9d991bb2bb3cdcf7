"""systemd's notify protocol (sd_notify(3)), written directly on `NOTIFY_SOCKET`.

Owns READY=1 (after the sockets are bound: `Type=notify` makes systemd wait for it), STATUS=
(a line for `systemctl status`), WATCHDOG=1 keep-alives when `WATCHDOG_USEC` is set (for
`WatchdogSec=`), and STOPPING=1 when draining starts. The socket is an AF_UNIX datagram socket,
a path or, with a leading `@`, an abstract-namespace name. Outside systemd (no `NOTIFY_SOCKET`)
every call is a cheap no-op, so the daemon calls it unconditionally.

A failed send is logged and ignored: a notification problem must never take calls down.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


def socket_address(value: str) -> str:
    """`@name` is the abstract namespace: the kernel wants a leading NUL byte instead."""
    return "\0" + value[1:] if value.startswith("@") else value


class SystemdNotifier:
    """Sends sd_notify messages; a no-op when not started by systemd with a notify socket."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET", "")
        self._address = socket_address(path) if path and path[0] in "/@" else None
        self._sock: socket.socket | None = None
        self.watchdog_interval_s = self._watchdog_interval(env)

    @staticmethod
    def _watchdog_interval(env: Mapping[str, str]) -> float | None:
        """Half the watchdog timeout, as sd_watchdog_enabled(3) recommends; None if off."""
        try:
            usec = int(env.get("WATCHDOG_USEC", "0"))
        except ValueError:
            return None
        pid = env.get("WATCHDOG_PID")
        if usec <= 0 or (pid and pid != str(os.getpid())):
            return None
        return usec / 2_000_000

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        """Send `KEY=value` lines as one datagram; True if sent."""
        if self._address is None:
            return False
        message = "\n".join(a.replace("\n", " ") for a in assignments).encode("utf-8")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(message, self._address)
        except OSError as exc:
            log.warning("sd_notify %s failed: %s", assignments[0].split("=", 1)[0], exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *((f"STATUS={status}",) if status else ()))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.watchdog_interval_s is not None and self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *((f"STATUS={status}",) if status else ()))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def run_watchdog(self, status: Callable[[], str] | None = None) -> None:
        """Ping the watchdog (and refresh STATUS=) every half period until cancelled.

        It runs on the event loop on purpose: if the loop is stuck, pings stop and systemd
        restarts the service, which is the point of `WatchdogSec=`.
        """
        if self.watchdog_interval_s is None or not self.enabled:
            return
        while True:
            lines = ["WATCHDOG=1"]
            if status is not None:
                lines.append(f"STATUS={status()}")
            self.notify(*lines)
            await asyncio.sleep(self.watchdog_interval_s)

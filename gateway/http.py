"""The operator's HTTP endpoint: GET /metrics, /healthz, /ready and /calls on `[http] listen`.

A deliberately small HTTP/1.1 server on asyncio streams (one request per connection, then
close): it serves four read-only resources to Prometheus, systemd/ load balancers and humans,
so it needs no framework. It bounds what a client can cost (header size, header read time,
concurrent connections), because the port may be reachable by more than Prometheus.

- `/healthz`: the event loop answers, so the process is alive (200).
- `/ready`: 200 when new calls are welcome; 503 while draining, at `max_calls` or overloaded.
- `/calls`: JSON list of the active calls from a provider (the call registry).
- `/metrics`: the `Metrics` registry in the Prometheus text format.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.metrics import CONTENT_TYPE, Metrics

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 8192
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass(frozen=True, slots=True)
class GatewayState:
    """What /ready needs to know, reported by the call registry."""

    draining: bool
    active_calls: int
    max_calls: int
    overloaded: bool = False  # gateway/overload.py: new calls get 503 Overloaded

    @property
    def ready(self) -> bool:
        return self.reason == "ready"

    @property
    def reason(self) -> str:
        if self.draining:
            return "draining"
        if self.active_calls >= self.max_calls:
            return "at capacity"
        return "overloaded" if self.overloaded else "ready"


StateProvider = Callable[[], GatewayState]
CallsProvider = Callable[[], Sequence[Mapping[str, Any]]]


class HttpServer:
    """Serves the four endpoints; `await start()`, then `port` is the bound port."""

    def __init__(self, metrics: Metrics, state: StateProvider, calls: CallsProvider | None = None,
                 *, host: str = "127.0.0.1", port: int = 0, header_timeout_s: float = 5.0,
                 max_connections: int = 64) -> None:
        self._metrics = metrics
        self._state = state
        self._calls = calls if calls is not None else metrics.conversations
        self._host, self._port = host, port
        self._header_timeout_s = header_timeout_s
        self._slots = asyncio.Semaphore(max_connections)
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, self._port,
                                                  limit=MAX_HEADER_BYTES)
        log.info("HTTP endpoint on %s:%d (/metrics /healthz /ready /calls)", self._host,
                 self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> HttpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._slots.locked():  # over the connection cap: close at once, do not queue
            writer.close()
            return
        async with self._slots:
            try:
                status, ctype, body, head_only = await self._respond(reader)
                self._write(writer, status, ctype, body, head_only)
                await writer.drain()
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[int, str, bytes, bool]:
        try:
            async with asyncio.timeout(self._header_timeout_s):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            return 408, "text/plain", b"timeout\n", False
        except asyncio.LimitOverrunError:
            return 431, "text/plain", b"headers too large\n", False
        except asyncio.IncompleteReadError:
            raise
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return 400, "text/plain", b"bad request\n", False
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return 405, "text/plain", b"only GET\n", False
        head_only = method == b"HEAD"
        try:
            status, ctype, body = self._route(target.decode("ascii", "replace"))
        except Exception:  # a broken provider is a 500 here, never a dead endpoint
            log.exception("HTTP %s failed", target[:64])
            status, ctype, body = 500, "text/plain", b"internal error\n"
        return status, ctype, body, head_only

    def _route(self, path: str) -> tuple[int, str, bytes]:
        if path == "/metrics":
            return 200, CONTENT_TYPE, self._metrics.render()
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        if path == "/ready":
            state = self._state()
            body = {"ready": state.ready, "reason": state.reason, "draining": state.draining,
                    "active_calls": state.active_calls, "max_calls": state.max_calls}
            return (200 if state.ready else 503), "application/json", _json(body)
        if path == "/calls":
            return 200, "application/json", _json([dict(c) for c in self._calls()])
        return 404, "text/plain", b"not found\n"

    @staticmethod
    def _write(writer: asyncio.StreamWriter, status: int, ctype: str, body: bytes,
               head_only: bool) -> None:
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n\r\n")
        writer.write(head.encode("ascii") + (b"" if head_only else body))


def _json(value: Any) -> bytes:
    return (json.dumps(value, default=str, ensure_ascii=False) + "\n").encode("utf-8")

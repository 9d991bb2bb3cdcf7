"""The operator HTTP server: uvicorn serving one ASGI app on `[http] listen`.

The gateway owns the event loop and the signals (SIGTERM drains, SIGINT stops), so uvicorn runs
as a task inside that loop with its own signal capture switched off. We bind the socket
ourselves: a bind error surfaces at `start()`, and port 0 (tests) tells its real port at once.

The port may be reachable by more than Prometheus, so a client's cost is bounded: headers must
arrive within `header_timeout_s` (a slow-loris client gets 408 and is closed; uvicorn itself only
times out idle keep-alive connections), header bytes are capped (h11 answers 400), and at most
`max_connections` are served at once (uvicorn answers 503 beyond that).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 8192
_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\n"
                     b"Content-Length: 8\r\nConnection: close\r\n\r\ntimeout\n")


class _HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol plus a deadline for a request's headers.

    Armed when the connection opens and again after each response; disarmed once h11 has
    parsed a request's headers (the peer's state leaves IDLE).
    """

    header_timeout_s = 5.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.write(_TIMEOUT_RESPONSE)
            self.transport.close()


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the gateway's loop owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class OperatorServer:
    """Serve `app` on host:port; `await start()`, then `port` is the bound port."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0,
                 header_timeout_s: float = 5.0, max_connections: int = 64) -> None:
        protocol = type("HeaderDeadlineProtocol", (_HeaderDeadlineProtocol,),
                        {"header_timeout_s": header_timeout_s})
        self._config = uvicorn.Config(
            app, http=protocol, lifespan="on", log_config=None, log_level="warning",
            access_log=False,
            server_header=False, limit_concurrency=max_connections,
            h11_max_incomplete_event_size=MAX_HEADER_BYTES, timeout_graceful_shutdown=2,
        )
        self._host, self._requested_port = host, port
        self._server: _EmbeddedServer | None = None
        self._socket: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError("server not started")
        return int(self._socket.getsockname()[1])

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._requested_port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._socket = sock
        self._server = _EmbeddedServer(self._config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]),
                                         name="operator http")
        while not self._server.started:
            if self._task.done():  # startup failed (the app's lifespan raised)
                self._task.result()
                raise RuntimeError("operator HTTP server stopped during startup")
            await asyncio.sleep(0.01)
        log.info("HTTP endpoint on %s:%d (/metrics /healthz /ready /calls /v1)", self._host,
                 self.port)

    async def close(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 5.0)
            except TimeoutError:
                self._server.force_exit = True
                await self._task
        if self._socket is not None:
            self._socket.close()
        self._server = self._task = self._socket = None

    async def __aenter__(self) -> OperatorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

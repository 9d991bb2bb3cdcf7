"""A small asyncio HTTP/1.1 server: just enough for the emulator's JSON endpoints.

Why our own: the emulator needs three JSON routes plus a control route, inside an existing
asyncio loop (tests start it in-process on port 0) and as a CLI process. The standard library
has no asyncio HTTP server and the venv has no ASGI server; pulling in one (uvicorn + a
framework) for four routes would add more code to trust than this file. Scope (RFC 9112):
request line + headers (bounded), bodies by Content-Length only (chunked request bodies get
411/501), persistent connections by default for HTTP/1.1, `Connection: close` honoured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 32 * 1024
MAX_BODY_BYTES = 1024 * 1024
IDLE_TIMEOUT_S = 30.0

REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 411: "Length Required", 413: "Content Too Large",
    422: "Unprocessable Entity", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any) -> Response:
        body = json.dumps(payload, ensure_ascii=False).encode()
        return cls(status, body, {"Content-Type": "application/json"})


Handler = Callable[[Request], Awaitable[Response]]


class _BadRequest(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class HttpServer:
    """Serve `handler` on (host, port); port 0 picks a free port, read back from `port`."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0) -> None:
        self._handler = handler
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._on_connection, self._host, self._port, limit=MAX_HEAD_BYTES
        )

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while await self._serve_one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        except asyncio.CancelledError:
            # Cancelled by close(). Return normally: on 3.11 the streams callback calls
            # task.exception() on this task, which raises (and logs) for a cancelled task.
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        try:
            async with asyncio.timeout(IDLE_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            await self._write(writer, Response.json(431, {"detail": "Headers too large"}), False)
            return False
        except asyncio.IncompleteReadError:
            return False
        try:
            request, keep_alive = await self._parse(head, reader)
        except _BadRequest as bad:
            await self._write(writer, Response.json(bad.status, {"detail": REASONS.get(
                bad.status, "Bad Request")}), False)
            return False
        try:
            response = await self._handler(request)
        except Exception:
            log.exception("emulator handler failed")
            response = Response.json(500, {"detail": "Internal Server Error"})
        await self._write(writer, response, keep_alive)
        return keep_alive

    async def _parse(self, head: bytes, reader: asyncio.StreamReader) -> tuple[Request, bool]:
        try:
            text = head.decode("latin-1")
        except UnicodeDecodeError:
            raise _BadRequest(400) from None
        lines = text.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(400)
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise _BadRequest(400)
            key = name.lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        if "transfer-encoding" in headers:
            raise _BadRequest(501 if headers["transfer-encoding"].lower() != "chunked" else 411)
        length_text = headers.get("content-length", "0")
        if not length_text.isdigit():
            raise _BadRequest(400)
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            raise _BadRequest(413)
        body = await reader.readexactly(length) if length else b""
        connection = headers.get("connection", "").lower()
        keep_alive = "close" not in connection and (
            version == "HTTP/1.1" or "keep-alive" in connection
        )
        split = urlsplit(target)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        return Request(method.upper(), split.path, query, headers, body), keep_alive

    async def _write(
        self, writer: asyncio.StreamWriter, response: Response, keep_alive: bool
    ) -> None:
        reason = REASONS.get(response.status, "Unknown")
        head = [f"HTTP/1.1 {response.status} {reason}"]
        headers = {"Content-Length": str(len(response.body)), **response.headers}
        headers["Connection"] = "keep-alive" if keep_alive else "close"
        head += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body)
        await writer.drain()

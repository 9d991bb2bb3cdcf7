"""Webhook delivery: signed JSON POSTs of call events, in order, through a durable spool.

`WebhookSender.emit` is what calls reach (through their `CallRecord`): it serialises the event,
puts it on an in-memory queue and returns — a call never waits for disk or network. The sender
is owned by the app, not by calls: one writer task moves queued events into one on-disk `Spool`
per receiver URL (fsync'd, on its own I/O thread), and one delivery task per receiver POSTs the
oldest entry until the receiver takes it, so each receiver sees events in the order they
happened and a receiver that is down for an hour loses nothing. `stop()` (SIGTERM, after the
drain) writes every queued event to the spool before it returns; the next start delivers it.

Each POST: `Content-Type: application/json`, `X-Orga-Gateway-Event: <event>`,
`X-Orga-Gateway-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`;
the body is `{"event", "id", "call"}` where `id` is the same on every attempt of one event (the
receiver deduplicates on it: delivery is at least once). `verify_signature` is the recipe.

Outcomes: 2xx delivered; 408/425/429, 5xx, timeouts and network errors are retried with
exponential backoff (1 s doubling to 5 min, with jitter) and counted as retries; other statuses
are refused for good (counted `failed`, logged, removed). A full spool drops the new event
(counted `dropped`, logged) — never silently.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import hmac
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx

from gateway.config import Secret, WebhooksConfig
from gateway.records.spool import Spool

log = logging.getLogger(__name__)
T = TypeVar("T")

EVENT_HEADER = "X-Orga-Gateway-Event"
SIGNATURE_HEADER = "X-Orga-Gateway-Signature"
REQUEST_TIMEOUT_S = 10.0
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 300.0
QUEUE_MAX = 10_000  # events waiting for the writer; ~minutes of a busy gateway's events
STOP_FLUSH_S = 2.0  # on stop, how long delivery may go on before pending events stay spooled
_RETRY_STATUSES = frozenset({408, 425, 429})


def spool_directory(config: WebhooksConfig, url: str) -> Path:
    """Each receiver has its own spool (its own order and its own outages)."""
    return Path(config.spool_dir) / hashlib.sha256(url.encode()).hexdigest()[:16]


class WebhookMetrics(Protocol):
    def webhook_event(self, outcome: str, n: int = 1) -> None: ...
    def webhook_retry(self) -> None: ...


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The signature header's value for `body` sent at `timestamp` (unix seconds)."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: bytes, header: str, body: bytes, now: float,
                     tolerance_s: float = 300.0) -> bool:
    """What a receiver does: recompute over the raw body, compare in constant time, and
    refuse timestamps older than `tolerance_s` (replays)."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
        given = fields["v1"]
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, given)


@dataclass(slots=True)
class _Receiver:
    url: str
    spool: Spool
    wake: asyncio.Event
    idle: asyncio.Event
    task: asyncio.Task[None] | None = None


class WebhookSender:
    """Owned by the app: `await start()`, `emit()` from calls, `await stop()` at shutdown."""

    def __init__(self, config: WebhooksConfig, secret: Secret, metrics: WebhookMetrics, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 wall_clock: Callable[[], float] = time.time,
                 backoff_s: tuple[float, float] = (BACKOFF_FIRST_S, BACKOFF_MAX_S),
                 stop_flush_s: float = STOP_FLUSH_S) -> None:
        self.config = config
        self._metrics = metrics
        self._secret = secret.reveal().encode()
        self._wall = wall_clock
        self._backoff_first, self._backoff_max = backoff_s
        self._stop_flush_s = stop_flush_s
        self._client = httpx.AsyncClient(transport=transport, timeout=REQUEST_TIMEOUT_S,
                                         follow_redirects=False)
        max_bytes = int(config.spool_max_mb * 1024 * 1024)
        self._receivers = [
            _Receiver(url, Spool(spool_directory(config, url), max_bytes), asyncio.Event(),
                      asyncio.Event())
            for url in config.targets
        ]
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        # The spool's file I/O, off the loop on one thread of our own (a fixed thread count,
        # whatever else uses asyncio's default executor).
        self._io = concurrent.futures.ThreadPoolExecutor(1, "webhook-spool")
        self._writer: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def spool_bytes(self) -> int:
        return sum(r.spool.size_bytes for r in self._receivers)

    async def start(self) -> None:
        for receiver in self._receivers:
            left = await self._disk(receiver.spool.load)
            if left:
                log.info("webhook spool: %d events from a previous run to deliver", left)
        self._writer = asyncio.create_task(self._write(), name="webhook spool writer")
        for receiver in self._receivers:
            receiver.task = asyncio.create_task(self._deliver(receiver), name="webhook delivery")
            receiver.wake.set()

    def emit(self, event: str, call: dict[str, Any]) -> None:
        """Queue one event for every receiver; never blocks, never raises into the call."""
        if event not in self.config.events or not self._receivers:
            return
        if self._stopping or self._queue.qsize() >= QUEUE_MAX:
            self._metrics.webhook_event("dropped", len(self._receivers))
            log.error("webhook event %s dropped: the spool writer is %s", event,
                      "stopped" if self._stopping else "behind")
            return
        body = json.dumps({"event": event, "id": uuid.uuid4().hex, "call": call},
                          separators=(",", ":"), ensure_ascii=False).encode()
        self._queue.put_nowait(body)

    async def stop(self) -> None:
        """Spool everything queued, give delivery a moment, then end the tasks."""
        self._stopping = True
        if self._writer is not None:
            self._queue.put_nowait(None)
            await self._writer
        pending = [r.idle.wait() for r in self._receivers if r.spool.size_bytes]
        if pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._stop_flush_s):
                    await asyncio.gather(*pending)
        for receiver in self._receivers:
            if receiver.task is not None:
                receiver.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await receiver.task
        await self._client.aclose()
        self._io.shutdown(wait=False)  # idle: every task that used it has ended
        left = sum(len(r.spool) for r in self._receivers)
        if left:
            log.info("webhook spool: %d events kept for the next start", left)

    async def _disk(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    # --- tasks --------------------------------------------------------------------------------
    async def _write(self) -> None:
        while (body := await self._queue.get()) is not None:
            for receiver in self._receivers:
                name = await self._disk(receiver.spool.append, body)
                if name is None:
                    self._metrics.webhook_event("dropped")
                    log.error("webhook spool full (%.0f MB): event dropped for one receiver; "
                              "is the receiver down?", self.config.spool_max_mb)
                    continue
                self._metrics.webhook_event("spooled")
                receiver.idle.clear()
                receiver.wake.set()

    async def _deliver(self, receiver: _Receiver) -> None:
        failures = 0
        while True:
            # Cleared before looking, so an entry spooled while we look sets it again and the
            # wait below returns at once (no lost wake-up).
            receiver.wake.clear()
            entry = await self._disk(receiver.spool.oldest)
            if entry is None:
                if not receiver.wake.is_set():
                    receiver.idle.set()
                await receiver.wake.wait()
                continue
            name, body = entry
            outcome = await self._post(receiver.url, body)
            if outcome == "retry":
                self._metrics.webhook_retry()
                delay = min(self._backoff_max, self._backoff_first * 2 ** failures)
                failures += 1
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                continue
            failures = 0
            self._metrics.webhook_event(outcome)
            await self._disk(receiver.spool.remove, name)

    async def _post(self, url: str, body: bytes) -> str:
        """One attempt: "delivered", "failed" (refused for good) or "retry"."""
        event = json.loads(body)["event"]
        headers = {"Content-Type": "application/json", EVENT_HEADER: event,
                   SIGNATURE_HEADER: sign(self._secret, body, int(self._wall()))}
        try:
            response = await self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:  # timeouts, refused connections, resets
            log.warning("webhook %s: %s; will retry", event, exc.__class__.__name__)
            return "retry"
        status = response.status_code
        if 200 <= status < 300:
            return "delivered"
        if status >= 500 or status in _RETRY_STATUSES:
            log.warning("webhook %s: receiver answered %d; will retry", event, status)
            return "retry"
        log.error("webhook %s: receiver refused it with %d; event discarded", event, status)
        return "failed"

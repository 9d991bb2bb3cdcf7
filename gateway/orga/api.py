"""Orga realtime REST client: client-secrets, ice-config and calls over one httpx.AsyncClient.

Owns every HTTP exchange with Orga (reference §2-§5, seed `orga-realtime-calls.txt`):
- `POST /v1/realtime/client-secrets` with the API key, no body, `?email=` only when configured;
- `GET /v1/realtime/ice-config` with the ephemeral token, wrapped or bare server lists;
- `POST /v1/realtime/calls` with the offer, its candidates and a complete `params` object.

httpx exceptions and error bodies are mapped here, once, to `gateway.orga.errors`: the nested
401 envelope, plain `error.message`, FastAPI 422 `detail` lists, 429/5xx, timeouts. Secrets
are scrubbed from any server text we keep. Retry policy lives here too: client-secrets and
ice-config are retried with full-jitter backoff inside a deadline; /calls is never retried by
this module (the caller mints a new token, see `session.py`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx
from aiortc import RTCIceServer

from gateway.orga.errors import (
    OrgaAuthError,
    OrgaError,
    OrgaIncompleteAnswer,
    OrgaProtocolError,
    OrgaRequestError,
    OrgaTimeoutError,
    OrgaUnavailableError,
    OrgaValidationError,
    ValidationIssue,
)
from gateway.orga.ice_servers import normalise_ice_servers
from gateway.orga.settings import OrgaClientSettings, SessionParams

log = logging.getLogger(__name__)

T = TypeVar("T")

CLIENT_SECRETS_PATH = "/v1/realtime/client-secrets"
ICE_CONFIG_PATH = "/v1/realtime/ice-config"
CALLS_PATH = "/v1/realtime/calls"

# Backoff for the retried steps: full jitter over an exponential cap (AWS architecture blog
# "Exponential Backoff and Jitter"); the widget SDK uses 200 ms x 2^n.
BACKOFF_BASE_S = 0.2
BACKOFF_CAP_S = 2.0
DETACHED_JOIN_S = 5.0  # how long ending an unused session may take once its answer is in
MAX_ERROR_TEXT = 300  # bound what we keep from a non-JSON error body


@dataclass(frozen=True, slots=True)
class ClientSecret:
    """An ephemeral token; single use on /calls. The token never appears in a repr."""

    token: str = field(repr=False)
    expires_at: datetime | None = None  # naive UTC, as Orga sends it


@dataclass(frozen=True, slots=True)
class CallAnswer:
    sdp: str = field(repr=False)
    conversation_id: str


def parse_expires_at(value: object) -> datetime | None:
    """Orga sends naive-UTC ISO 8601 with microseconds; also accept `Z` or an offset."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def candidates_from_sdp(sdp: str) -> list[dict[str, Any]]:
    """`offer.candidates` from the SDP's `a=candidate` lines, with the m-line's mid and index.

    The SDK builds the same list from `icecandidate` events; aiortc puts every gathered
    candidate in the SDP instead (non-trickle), so we read them back from there.
    """
    result: list[dict[str, Any]] = []
    mline_index = -1
    mid: str | None = None
    pending: list[str] = []

    def flush() -> None:
        for cand in pending:
            entry: dict[str, Any] = {"candidate": cand, "sdpMLineIndex": mline_index}
            if mid is not None:
                entry["sdpMid"] = mid
            result.append(entry)
        pending.clear()

    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            flush()
            mline_index += 1
            mid = None
        elif mline_index >= 0 and line.startswith("a=mid:"):
            mid = line[len("a=mid:") :]
        elif mline_index >= 0 and line.startswith("a=candidate:"):
            pending.append(line[len("a=") :])
    flush()
    # Key order as in the seed document: candidate, sdpMid, sdpMLineIndex.
    return [
        {k: e[k] for k in ("candidate", "sdpMid", "sdpMLineIndex") if k in e} for e in result
    ]


def parse_ice_servers(body: object, endpoint: str = "ice_config") -> list[RTCIceServer]:
    """`{"iceServers": [...]}` or a bare list (v11 guide); URLs normalised by `ice_servers.py`.

    Only a body with no server list at all is an error; a URL or entry aiortc cannot use is
    skipped with one warning, never a failed call.
    """
    servers = body.get("iceServers") if isinstance(body, dict) else body
    if not isinstance(servers, list):
        raise OrgaProtocolError(endpoint, 200, "response has no iceServers list")
    parsed = normalise_ice_servers(servers)
    parsed.warn_skipped()
    return parsed.servers


def _server_message(body: object) -> str:
    """The human message from any error envelope Orga uses (reference §5)."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            message = error.get("message")
            if isinstance(message, str):
                return message
            if isinstance(message, dict):  # client-secrets 401: an envelope inside `message`
                inner = _server_message(message)
                if inner:
                    return inner
        elif isinstance(error, str):
            return error
        detail = body.get("detail")
        if isinstance(detail, str):
            return detail
        message = body.get("message")
        if isinstance(message, str):
            return message
    return ""


def _validation_issues(body: object) -> list[ValidationIssue]:
    detail = body.get("detail") if isinstance(body, dict) else None
    issues: list[ValidationIssue] = []
    if isinstance(detail, list):
        for entry in detail:
            if not isinstance(entry, dict):
                continue
            loc = entry.get("loc")
            loc_tuple = tuple(p for p in loc if isinstance(p, str | int)) if isinstance(
                loc, list
            ) else ()
            msg = entry.get("msg")
            kind = entry.get("type")
            issues.append(
                ValidationIssue(
                    loc=loc_tuple,
                    msg=msg if isinstance(msg, str) else "invalid",
                    type=kind if isinstance(kind, str) else None,
                )
            )
    elif isinstance(detail, str):
        issues.append(ValidationIssue(loc=(), msg=detail))
    return issues


# (endpoint, seconds, error): error is None on success, the HTTP status of an error response,
# or "timeout" / "network" / "protocol" — what `Metrics.orga_request` takes.
RequestObserver = Callable[[str, float, "int | str | None"], None]


class OrgaApi:
    """The REST client: one per process, one pooled HTTP/1.1 connection set to Orga."""

    def __init__(
        self,
        settings: OrgaClientSettings,
        *,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        observer: RequestObserver | None = None,
        on_token: Callable[[str], None] | None = None,
        on_token_spent: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self._observer = observer
        self._on_token = on_token
        self._on_token_spent = on_token_spent
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(settings.request_timeout_s),
            http1=True,
            http2=False,
            follow_redirects=False,
            headers={"Accept": "application/json"},
        )
        self._base = settings.base_url.rstrip("/")
        self._rng = rng
        self._sleep = sleep
        self._detached: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"OrgaApi(base_url={self._base!r})"

    def detach(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run work that must outlive the call that started it (ending a session the caller
        abandoned, see `session.py`); `aclose()` waits for it, bounded."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._detached.add(task)
        task.add_done_callback(self._detached.discard)

    async def aclose(self) -> None:
        if self._detached:
            # A detached session end waits for a late /calls answer (up to two request
            # timeouts, see `session.py`) and then for the join (`DETACHED_JOIN_S`).
            bound = 2 * self.settings.request_timeout_s + DETACHED_JOIN_S
            _, pending = await asyncio.wait(set(self._detached), timeout=bound)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._owns_client:
            await self._client.aclose()

    # -- the three endpoints -------------------------------------------------------------

    async def create_client_secret(self, *, timeout_s: float | None = None) -> ClientSecret:
        params = {"email": self.settings.email} if self.settings.email else None
        body = await self._request(
            "client_secrets",
            "POST",
            CLIENT_SECRETS_PATH,
            secret=self.settings.api_key,
            params=params,
            # The Node SDK and the docs send Content-Type even without a body.
            headers={"Content-Type": "application/json"},
            timeout_s=timeout_s,
        )
        token = body.get("ephemeral_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise OrgaProtocolError("client_secrets", 200, "response has no ephemeral_token")
        assert isinstance(body, dict)
        if self._on_token is not None:
            self._on_token(token)  # e.g. register it with the log redaction filter
        return ClientSecret(token=token, expires_at=parse_expires_at(body.get("expires_at")))

    async def get_ice_config(
        self, token: str, *, timeout_s: float | None = None
    ) -> list[RTCIceServer]:
        body = await self._request(
            "ice_config", "GET", ICE_CONFIG_PATH, secret=token, timeout_s=timeout_s
        )
        return parse_ice_servers(body)

    async def create_call(
        self,
        token: str,
        offer_sdp: str,
        candidates: list[dict[str, Any]],
        params: SessionParams,
        *,
        timeout_s: float | None = None,
    ) -> CallAnswer:
        payload = {
            "offer": {"sdp": offer_sdp, "type": "offer", "candidates": candidates},
            "params": params.to_json(),
        }
        try:
            body = await self._request(
                "calls", "POST", CALLS_PATH, secret=token, json_body=payload,
                timeout_s=timeout_s,
            )
        finally:
            # We never use a token again once /calls has answered or failed (the service takes
            # each token once; a retry mints a new one), so whoever was told of it (`on_token`,
            # e.g. the log redaction filter) can let it go instead of holding every call's.
            if self._on_token_spent is not None:
                self._on_token_spent(token)
        if not isinstance(body, dict):
            raise OrgaProtocolError("calls", 200, "response is not an object")
        answer = body.get("answer")
        conversation_id = body.get("conversation_id")
        sdp = answer.get("sdp") if isinstance(answer, dict) else None
        if not isinstance(sdp, str) or not sdp:
            raise OrgaProtocolError("calls", 200, "response has no answer")
        if not isinstance(conversation_id, str) or not conversation_id:
            raise OrgaIncompleteAnswer("calls", 200, "response has no conversation_id", sdp)
        return CallAnswer(sdp=sdp, conversation_id=conversation_id)

    # -- retried steps ---------------------------------------------------------------------

    async def mint_token(self, deadline: float) -> ClientSecret:
        """`create_client_secret` retried on retryable errors until `deadline` (loop time)."""
        return await self.retry(
            "client_secrets", lambda t: self.create_client_secret(timeout_s=t), deadline
        )

    async def fetch_ice_servers(self, token: str, deadline: float) -> list[RTCIceServer]:
        """`get_ice_config` retried; ice-config does not consume the token (reference §1)."""
        return await self.retry(
            "ice_config", lambda t: self.get_ice_config(token, timeout_s=t), deadline
        )

    async def retry(
        self, endpoint: str, attempt: Callable[[float], Awaitable[T]], deadline: float
    ) -> T:
        """Run `attempt(timeout)` until it succeeds, fails for good, or the deadline passes."""
        loop = asyncio.get_running_loop()
        tries = 0
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise OrgaTimeoutError(endpoint, None, "setup budget exhausted")
            try:
                return await attempt(min(self.settings.request_timeout_s, remaining))
            except OrgaError as exc:
                tries += 1
                await self.back_off(exc, tries, deadline)

    async def back_off(self, exc: OrgaError, tries: int, deadline: float) -> None:
        """Wait before retry number `tries` after `exc`, or re-raise `exc` when a retry cannot
        help or could not start before `deadline` (loop time).

        The wait is full jitter over an exponential cap, or the server's `Retry-After` (429,
        503) when it sent one: asking earlier would only be refused again.
        """
        if not exc.retryable:
            raise exc
        retry_after = exc.retry_after_s if isinstance(exc, OrgaUnavailableError) else None
        if retry_after is not None:
            delay = retry_after
        else:
            delay = self._rng() * min(BACKOFF_CAP_S, BACKOFF_BASE_S * (2 ** (tries - 1)))
        if asyncio.get_running_loop().time() + delay >= deadline:
            raise exc
        log.info("orga %s failed (%s), retry %d in %.2f s%s", exc.endpoint, exc.reason, tries,
                 delay, " (Retry-After)" if retry_after is not None else "")
        await self._sleep(delay)

    # -- one request, errors mapped --------------------------------------------------------

    async def _request(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        secret: str,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        json_body: Any = None,
        timeout_s: float | None = None,
    ) -> Any:
        all_headers = {"Authorization": f"Bearer {secret}", **(headers or {})}
        kwargs: dict[str, Any] = {"headers": all_headers, "params": params}
        if json_body is not None:
            kwargs["content"] = json.dumps(json_body, ensure_ascii=False).encode()
            all_headers["Content-Type"] = "application/json"
        if timeout_s is not None:
            kwargs["timeout"] = httpx.Timeout(timeout_s)
        clock = asyncio.get_running_loop()  # the loop clock (gateway/clock.py)
        started = clock.time()
        error: int | str | None = None
        try:
            try:
                response = await self._client.request(method, self._base + path, **kwargs)
            except httpx.TimeoutException:
                raise OrgaTimeoutError(endpoint, None, "request timed out") from None
            except httpx.TransportError as exc:
                # Exception text can hold the URL (with ?email=) but never headers; keep the type.
                raise OrgaUnavailableError(
                    endpoint, None, f"connection failed ({type(exc).__name__})"
                ) from None
            return self._decode(endpoint, response, secret)
        except OrgaError as exc:
            error = exc.status if exc.status is not None and exc.status >= 300 else (
                "timeout" if isinstance(exc, OrgaTimeoutError)
                else "network" if exc.status is None else "protocol"
            )
            raise
        finally:
            if self._observer is not None:
                self._observer(endpoint, clock.time() - started, error)

    def _decode(self, endpoint: str, response: httpx.Response, secret: str) -> Any:
        status = response.status_code
        try:
            body: Any = response.json() if response.content else None
            malformed = False
        except (json.JSONDecodeError, UnicodeDecodeError):
            body, malformed = None, True
        if 200 <= status < 300:
            if malformed or body is None:
                raise OrgaProtocolError(endpoint, status, "response is not valid JSON")
            return body
        message = _server_message(body) if not malformed else ""
        if not message:
            message = response.text[:MAX_ERROR_TEXT].strip() or response.reason_phrase
        message = _scrub(message, (secret, self.settings.api_key))
        if status in (401, 403):
            raise OrgaAuthError(endpoint, status, message)
        if status == 422:
            issues = [
                ValidationIssue(i.loc, _scrub(i.msg, (secret, self.settings.api_key)), i.type)
                for i in _validation_issues(body)
            ]
            raise OrgaValidationError(endpoint, status, issues)
        if status == 429 or status >= 500:
            raise OrgaUnavailableError(endpoint, status, message,
                                       retry_after_s=parse_retry_after(response.headers))
        raise OrgaRequestError(endpoint, status, message)


MAX_RETRY_AFTER_S = 3600.0


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """`Retry-After` as seconds (RFC 9110 §10.2.3: delay-seconds or an HTTP-date); None when
    absent or unreadable."""
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - datetime.now(UTC)).total_seconds()), MAX_RETRY_AFTER_S)


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text

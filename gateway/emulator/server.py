"""The emulated Orga REST API: three endpoints with the reference's exact errors, plus control.

Endpoints (reference §2-§4, §11):
- `POST /v1/realtime/client-secrets`: Bearer API key → HS256 token; 401 with the nested
  envelope for a wrong key; 403 `Not authenticated` without a header; `email` optional (strict
  legacy mode: 422 when missing).
- `GET /v1/realtime/ice-config`: Bearer token (not consumed) → `{"iceServers": [...]}`.
- `POST /v1/realtime/calls`: Bearer token, single use; 422 FastAPI `detail` for a bad body;
  runs an `EmulatedSession` answerer and returns `{answer, conversation_id}`.
- `GET /_emulator/state`, `POST /_emulator/faults`: counters and fault injection for tests and
  users' resilience drills (Bearer API key required).
Faults: fail the next N /calls with a status, delay every response, answer without
`conversation_id`, answer with malformed JSON, end sessions after N seconds, reject all tokens.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

from gateway.emulator.agent import AgentSettings, EmulatedSession
from gateway.emulator.httpserver import HttpServer, Request, Response
from gateway.emulator.stun import LoopbackStunServer
from gateway.emulator.tokens import TokenIssuer
from gateway.emulator.validation import json_invalid, missing, validate_call
from gateway.orga.settings import VOICES

log = logging.getLogger(__name__)

LEGACY_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage",
                 "shimmer")


def error_body(message: Any, kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


BAD_KEY_BODY = error_body(error_body("Incorrect or inactive API key provided."))  # nested
INVALID_TOKEN_BODY = error_body("Invalid ephemeral token")
NOT_AUTHENTICATED_BODY = error_body("Not authenticated")


@dataclass(slots=True)
class Faults:
    """Mutable on purpose: the control endpoint changes it while the emulator runs."""

    fail_calls: int = 0  # fail the next N /calls ...
    fail_status: int = 503  # ... with this status
    retry_after_s: int | None = None  # ... and this Retry-After header
    delay_s: float = 0.0  # delay every API response
    calls_delay_s: float = 0.0  # delay /calls answers after the session exists (slow Orga)
    omit_conversation_id: bool = False
    malformed_calls: bool = False  # answer /calls 200 with a body that is not JSON
    end_after_s: float | None = None  # end each session after this long
    reject_tokens: bool = False

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a JSON object of changes; all or nothing, each value type-checked."""
        kinds = {"fail_calls": int, "fail_status": int, "delay_s": float, "calls_delay_s": float,
                 "retry_after_s": int,
                 "omit_conversation_id": bool, "malformed_calls": bool, "end_after_s": float,
                 "reject_tokens": bool}
        checked: dict[str, Any] = {}
        for key, value in changes.items():
            kind = kinds.get(key)
            if kind is None:
                raise ValueError(f"unknown fault {key!r}")
            if key in ("end_after_s", "retry_after_s") and value is None:
                checked[key] = None
            elif kind is float and isinstance(value, int | float) and not isinstance(value, bool):
                checked[key] = float(value)
            elif isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
                checked[key] = value
            else:
                raise ValueError(f"fault {key!r} needs a {kind.__name__}")
        for key, value in checked.items():
            setattr(self, key, value)

    def snapshot(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    api_keys: tuple[str, ...] = field(repr=False, default=())
    token_ttl_s: float = 900.0  # the docs' example token
    ice_servers: tuple[dict[str, Any], ...] = ()  # what ice-config returns (loopback: none)
    stun_server: bool = False  # run a loopback STUN server and list it first in ice-config
    bare_ice_list: bool = False  # v11-guide shape: a bare list
    params_required: bool = True  # 422 "Missing params" (strict)
    email_required: bool = False  # legacy strict mode for client-secrets
    accept_legacy_voices: bool = False
    missing_auth_status: int = 403
    agent: AgentSettings = field(default_factory=AgentSettings)


@dataclass(slots=True)
class EmulatorStats:
    client_secrets_requests: int = 0
    ice_config_requests: int = 0
    calls_requests: int = 0
    calls_ok: int = 0
    sessions_ended: int = 0


class Emulator:
    """The whole emulator; `start()` inside a running loop, read `port`, `stop()` at the end."""

    def __init__(
        self,
        config: EmulatorConfig,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        faults: Faults | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.faults = faults or Faults()
        self.stats = EmulatorStats()
        self._tokens = TokenIssuer(secrets.token_bytes(32), config.token_ttl_s, clock)
        self._used: dict[str, int] = {}  # jti -> exp, for single use on /calls
        self._clock = clock
        self._http = HttpServer(self.handle, host, port)
        self.sessions: dict[str, EmulatedSession] = {}
        self.ended_sessions: list[EmulatedSession] = []
        self._reply = config.agent.reply_samples()
        self._voices = VOICES + (LEGACY_VOICES if config.accept_legacy_voices else ())
        self.stun: LoopbackStunServer | None = None
        self._ice_servers: list[dict[str, Any]] = list(config.ice_servers)

    @property
    def port(self) -> int:
        return self._http.port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        if self.config.stun_server:
            self.stun = LoopbackStunServer()
            await self.stun.start()
            self._ice_servers.insert(0, {"urls": self.stun.url})
        await self._http.start()

    async def stop(self) -> None:
        await self._http.close()
        if self.stun is not None:
            self.stun.close()
        for session in list(self.sessions.values()):
            await session.close()

    def all_sessions(self) -> list[EmulatedSession]:
        return [*self.ended_sessions, *self.sessions.values()]

    def state(self) -> dict[str, Any]:
        """Counters for tests and the control endpoint (no secrets)."""
        sessions = [s.stats.snapshot() for s in self.all_sessions()]
        return {
            "client_secrets_requests": self.stats.client_secrets_requests,
            "ice_config_requests": self.stats.ice_config_requests,
            "calls_requests": self.stats.calls_requests,
            "calls_ok": self.stats.calls_ok,
            "sessions_active": len(self.sessions),
            "sessions_ended": self.stats.sessions_ended,
            "utterances": sum(len(s["utterances"]) for s in sessions),
            "faults": self.faults.snapshot(),
            "sessions": sessions,
        }

    # -- routing ---------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        routes = {
            "/v1/realtime/client-secrets": ("POST", self._client_secrets),
            "/v1/realtime/ice-config": ("GET", self._ice_config),
            "/v1/realtime/calls": ("POST", self._calls),
            "/_emulator/state": ("GET", self._control_state),
            "/_emulator/faults": ("POST", self._control_faults),
        }
        route = routes.get(request.path.rstrip("/") or "/")
        if route is None:
            return Response.json(404, {"detail": "Not Found"})
        method, handler = route
        if request.method != method:
            return Response.json(405, {"detail": "Method Not Allowed"})
        counter = {
            "/v1/realtime/client-secrets": "client_secrets_requests",
            "/v1/realtime/ice-config": "ice_config_requests",
            "/v1/realtime/calls": "calls_requests",
        }.get(request.path.rstrip("/"))
        if counter is not None:  # counted on arrival, before any injected delay
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)
            if self.faults.delay_s > 0:
                await asyncio.sleep(self.faults.delay_s)
        return await handler(request)

    @staticmethod
    def _bearer(request: Request) -> str | None:
        header = request.headers.get("authorization")
        if header is None:
            return None
        scheme, _, value = header.partition(" ")
        # FastAPI's HTTPBearer also answers 403 for a non-Bearer scheme.
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None

    def _not_authenticated(self) -> Response:
        return Response.json(self.config.missing_auth_status, NOT_AUTHENTICATED_BODY)

    def _token_claims(self, token: str) -> dict[str, Any] | None:
        if self.faults.reject_tokens:
            return None
        claims = self._tokens.verify(token)
        if claims is None or claims.get("jti") in self._used:
            return None
        return claims

    # -- endpoints -------------------------------------------------------------------------

    async def _client_secrets(self, request: Request) -> Response:
        key = self._bearer(request)
        if key is None:
            return self._not_authenticated()
        if not any(secrets.compare_digest(key, k) for k in self.config.api_keys):
            return Response.json(401, BAD_KEY_BODY)
        if self.config.email_required and "email" not in request.query:
            return Response.json(422, {"detail": [missing(["query", "email"])]})
        token, expires_at, _ = self._tokens.mint(key)
        return Response.json(200, {"ephemeral_token": token, "token_type": "bearer",
                                   "expires_at": expires_at})

    async def _ice_config(self, request: Request) -> Response:
        token = self._bearer(request)
        if token is None:
            return self._not_authenticated()
        if self._token_claims(token) is None:
            return Response.json(401, INVALID_TOKEN_BODY)
        servers = list(self._ice_servers)
        return Response.json(200, servers if self.config.bare_ice_list else {"iceServers": servers})

    async def _calls(self, request: Request) -> Response:
        token = self._bearer(request)
        if token is None:
            return self._not_authenticated()
        claims = self._token_claims(token)
        if claims is None:
            return Response.json(401, INVALID_TOKEN_BODY)
        try:
            body = json.loads(request.body)
        except (ValueError, UnicodeDecodeError) as exc:
            return Response.json(422, {"detail": [json_invalid(str(exc).split(":")[0])]})
        call, errors = validate_call(
            body, voices=self._voices, params_required=self.config.params_required
        )
        if call is None:
            return Response.json(422, {"detail": errors})
        self._consume(claims)  # single use from here on, whatever happens next
        if self.faults.fail_calls > 0:
            self.faults.fail_calls -= 1
            status = self.faults.fail_status
            response = Response.json(status, error_body(f"Injected failure ({status})",
                                                        "api_error"))
            if self.faults.retry_after_s is not None:
                response.headers["Retry-After"] = str(self.faults.retry_after_s)
            return response

        conversation_id = secrets.token_hex(12)
        session = EmulatedSession(
            conversation_id, call.params, self.config.agent, self._reply, self._on_session_end
        )
        self.sessions[conversation_id] = session
        try:
            answer_sdp = await session.answer(call.offer_sdp)
        except Exception as exc:
            log.warning("emulator answerer rejected the offer: %s", exc)
            await session.close("offer_rejected")
            return Response.json(400, error_body("Invalid SDP offer"))
        self.stats.calls_ok += 1
        if self.faults.end_after_s is not None:
            session.end_after(self.faults.end_after_s)
        answer = {"sdp": answer_sdp, "type": "answer"}
        if self.faults.calls_delay_s > 0:
            await asyncio.sleep(self.faults.calls_delay_s)
        if self.faults.omit_conversation_id:  # the session stays up: the client must end it
            return Response.json(200, {"answer": answer})
        if self.faults.malformed_calls:
            await session.close("malformed_answer")
            return Response(200, b'{"answer": {"sdp": "v=0', {"Content-Type": "application/json"})
        return Response.json(200, {"answer": answer, "conversation_id": conversation_id})

    def _consume(self, claims: dict[str, Any]) -> None:
        now = self._clock()
        for jti, exp in list(self._used.items()):  # forget tokens that expired anyway
            if exp <= now:
                del self._used[jti]
        self._used[str(claims.get("jti"))] = int(claims["exp"])

    def _on_session_end(self, session: EmulatedSession) -> None:
        if self.sessions.pop(session.conversation_id, None) is not None:
            self.stats.sessions_ended += 1
            self.ended_sessions.append(session)
            del self.ended_sessions[:-100]  # bounded history for the control endpoint

    # -- control ---------------------------------------------------------------------------

    def _control_allowed(self, request: Request) -> bool:
        key = self._bearer(request)
        return key is not None and any(secrets.compare_digest(key, k)
                                       for k in self.config.api_keys)

    async def _control_state(self, request: Request) -> Response:
        if not self._control_allowed(request):
            return Response.json(401, BAD_KEY_BODY)
        return Response.json(200, self.state())

    async def _control_faults(self, request: Request) -> Response:
        if not self._control_allowed(request):
            return Response.json(401, BAD_KEY_BODY)
        try:
            changes = json.loads(request.body)
            if not isinstance(changes, dict):
                raise ValueError("body must be an object")
            self.faults.update(changes)
        except ValueError as exc:
            return Response.json(400, error_body(str(exc)))
        return Response.json(200, self.faults.snapshot())


def with_agent(config: EmulatorConfig, **changes: Any) -> EmulatorConfig:
    """A copy of `config` with agent settings changed (tests, CLI)."""
    return replace(config, agent=replace(config.agent, **changes))

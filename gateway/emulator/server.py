"""The emulated Orga REST API: state, tokens, sessions and faults behind the FastAPI app.

Endpoints (reference §2-§4, §11; the HTTP mapping is `app.py`):
- `POST /v1/realtime/client-secrets`: Bearer API key → HS256 token (default TTL 120 s, within
  the documented 60-120 s); 401 with the nested envelope for a wrong key; 403 `Not
  authenticated` without a header; `email` optional (strict legacy mode: 422 when missing).
- `GET /v1/realtime/ice-config`: Bearer token (not consumed) → `{"iceServers": [...]}`, with
  an optional loopback STUN server (`stun.py`) listed first in the provider URL form.
- `POST /v1/realtime/calls`: Bearer token, single use; pydantic-validated body (`models.py`);
  runs an `EmulatedSession` answerer and returns `{answer, conversation_id}`.
- `GET /_emulator/state`, `POST /_emulator/faults`: counters and fault injection for tests and
  users' resilience drills (Bearer API key required).
Faults: fail the next N /calls with a status (and a Retry-After), delay every response or only
/calls answers, answer without `conversation_id`, answer with malformed JSON, end sessions
after N seconds, stop a session's media without closing it (a dead leg), reject all tokens.
Served by uvicorn inside the caller's event loop (tests use port 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import uvicorn
from fastapi import APIRouter

from gateway.emulator.agent import AgentSettings, EmulatedSession
from gateway.emulator.app import create_app, error_body
from gateway.emulator.models import OfferBody
from gateway.emulator.stun import LoopbackStunServer
from gateway.emulator.tokens import TokenIssuer
from gateway.emulator.tool_caller import ScriptedTool, ToolCaller
from gateway.orga.catalog import VOICES
from gateway.orga.settings import SessionParams

log = logging.getLogger(__name__)

LEGACY_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage",
                 "shimmer")

DEFAULT_TOKEN_TTL_S = 120.0  # the how-to's "ttl": 120; the docs say about 1-2 minutes


@dataclass(frozen=True, slots=True)
class Reply:
    """What /calls answers; `raw` bytes replace the JSON body (malformed-answer fault)."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None


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
    media_stop_after_s: float | None = None  # then send no more RTP, keep ICE/DTLS up (dead leg)
    reject_tokens: bool = False

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a JSON object of changes; all or nothing, each value type-checked."""
        kinds = {"fail_calls": int, "fail_status": int, "delay_s": float, "calls_delay_s": float,
                 "retry_after_s": int,
                 "omit_conversation_id": bool, "malformed_calls": bool, "end_after_s": float,
                 "media_stop_after_s": float,
                 "reject_tokens": bool}
        checked: dict[str, Any] = {}
        for key, value in changes.items():
            kind = kinds.get(key)
            if kind is None:
                raise ValueError(f"unknown fault {key!r}")
            if key in ("end_after_s", "retry_after_s", "media_stop_after_s") and value is None:
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
    token_ttl_s: float = DEFAULT_TOKEN_TTL_S
    ice_servers: tuple[dict[str, Any], ...] = ()  # what ice-config returns (loopback: none)
    stun_server: bool = False  # run a loopback STUN server and list it first in ice-config
    bare_ice_list: bool = False  # v11-guide shape: a bare list
    params_required: bool = True  # 422 "Missing params" (strict)
    email_required: bool = False  # legacy strict mode for client-secrets
    accept_legacy_voices: bool = False
    missing_auth_status: int = 403
    agent: AgentSettings = field(default_factory=AgentSettings)
    # Play Orga's cloud for agent tools: call this tool of each session's mcp_server.
    tool_script: ScriptedTool | None = None


@dataclass(slots=True)
class EmulatorStats:
    client_secrets_requests: int = 0
    ice_config_requests: int = 0
    calls_requests: int = 0
    calls_ok: int = 0
    sessions_ended: int = 0


class _Server(uvicorn.Server):
    """uvicorn inside our loop: signals stay with whoever runs the loop (CLI, pytest)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Emulator:
    """The whole emulator; `start()` inside a running loop, read `port`, `stop()` at the end.

    `extra_routers` are added to the FastAPI app (another mode's routes, see `app.py`).
    """

    def __init__(
        self,
        config: EmulatorConfig,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        faults: Faults | None = None,
        clock: Callable[[], float] = time.time,
        extra_routers: Sequence[APIRouter] = (),
    ) -> None:
        self.config = config
        self.faults = faults or Faults()
        self.stats = EmulatorStats()
        self._tokens = TokenIssuer(secrets.token_bytes(32), config.token_ttl_s, clock)
        self._used: dict[str, int] = {}  # jti -> exp, for single use on /calls
        self._clock = clock
        self.sessions: dict[str, EmulatedSession] = {}
        self.tools = ToolCaller(config.tool_script)  # agent tools over MCP (tool_caller.py)
        self.ended_sessions: list[EmulatedSession] = []
        self._reply = config.agent.reply_samples()
        self.voices = VOICES + (LEGACY_VOICES if config.accept_legacy_voices else ())
        self.stun: LoopbackStunServer | None = None
        self._ice_servers: list[dict[str, Any]] = list(config.ice_servers)
        self.app = create_app(self, extra_routers=extra_routers)
        self._server = _Server(uvicorn.Config(
            self.app, host=host, port=port, log_config=None, access_log=False,
            lifespan="off", timeout_graceful_shutdown=1, ws="none",
        ))
        self._serving: asyncio.Task[None] | None = None
        self._host = host

    @property
    def port(self) -> int:
        assert self._server.started, "emulator not started"
        return int(self._server.servers[0].sockets[0].getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    async def start(self) -> None:
        if self.config.stun_server:
            self.stun = LoopbackStunServer()
            await self.stun.start()
            self._ice_servers.insert(0, {"urls": self.stun.url})
        self._serving = asyncio.create_task(self._server.serve(), name="emulator http")
        while not self._server.started:
            if self._serving.done():  # bind failed: surface uvicorn's error
                self._serving.result()
                raise OSError(f"emulator could not listen on {self._host}")
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        if self._serving is not None:
            self._server.should_exit = True
            await self._serving
            self._serving = None
        if self.stun is not None:
            self.stun.close()
        await self.tools.close()
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
            "tool_calls": [o.to_json() for o in self.tools.outcomes],
        }

    # -- what the routes ask (app.py) -------------------------------------------------------

    async def arrived(self, counter: str) -> None:
        """A realtime request arrived: count it, then apply the injected delay."""
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        if self.faults.delay_s > 0:
            await asyncio.sleep(self.faults.delay_s)

    def is_api_key(self, key: str) -> bool:
        return any(secrets.compare_digest(key, k) for k in self.config.api_keys)

    def token_claims(self, token: str) -> dict[str, Any] | None:
        if self.faults.reject_tokens:
            return None
        claims = self._tokens.verify(token)
        if claims is None or claims.get("jti") in self._used:
            return None
        return claims

    def mint(self, key: str) -> dict[str, Any]:
        token, expires_at, _ = self._tokens.mint(key)
        return {"ephemeral_token": token, "token_type": "bearer", "expires_at": expires_at}

    def ice_config(self) -> Any:
        servers = list(self._ice_servers)
        return servers if self.config.bare_ice_list else {"iceServers": servers}

    async def create_call(
        self, claims: dict[str, Any], offer: OfferBody, params: SessionParams,
    ) -> Reply:
        self._consume(claims)  # single use from here on, whatever happens next
        if self.faults.fail_calls > 0:
            self.faults.fail_calls -= 1
            status = self.faults.fail_status
            headers = ({"Retry-After": str(self.faults.retry_after_s)}
                       if self.faults.retry_after_s is not None else {})
            return Reply(status, error_body(f"Injected failure ({status})", "api_error"),
                         headers)

        conversation_id = secrets.token_hex(12)
        session = EmulatedSession(
            conversation_id, params, self.config.agent, self._reply, self._on_session_end,
            self.voices,
        )
        self.sessions[conversation_id] = session
        try:
            answer_sdp = await session.answer(offer.sdp)
        except Exception as exc:
            log.warning("emulator answerer rejected the offer: %s", exc)
            await session.close("offer_rejected")
            return Reply(400, error_body("Invalid SDP offer"))
        self.stats.calls_ok += 1
        self.tools.session_started(
            conversation_id, params.mcp_server.to_json() if params.mcp_server else None)
        if self.faults.end_after_s is not None:
            session.end_after(self.faults.end_after_s)
        if self.faults.media_stop_after_s is not None:
            session.stop_media_after(self.faults.media_stop_after_s)
        answer = {"sdp": answer_sdp, "type": "answer"}
        if self.faults.calls_delay_s > 0:
            await asyncio.sleep(self.faults.calls_delay_s)
        if self.faults.omit_conversation_id:  # the session stays up: the client must end it
            return Reply(200, {"answer": answer})
        if self.faults.malformed_calls:
            await session.close("malformed_answer")
            return Reply(200, raw=b'{"answer": {"sdp": "v=0')
        return Reply(200, {"answer": answer, "conversation_id": conversation_id})

    def _consume(self, claims: dict[str, Any]) -> None:
        now = self._clock()
        for jti, exp in list(self._used.items()):  # forget tokens that expired anyway
            if exp <= now:
                del self._used[jti]
        self._used[str(claims.get("jti"))] = int(claims["exp"])

    def _on_session_end(self, session: EmulatedSession) -> None:
        self.tools.session_ended(session.conversation_id)
        if self.sessions.pop(session.conversation_id, None) is not None:
            self.stats.sessions_ended += 1
            self.ended_sessions.append(session)
            del self.ended_sessions[:-100]  # bounded history for the control endpoint


def with_agent(config: EmulatorConfig, **changes: Any) -> EmulatorConfig:
    """A copy of `config` with agent settings changed (tests, CLI)."""
    return replace(config, agent=replace(config.agent, **changes))

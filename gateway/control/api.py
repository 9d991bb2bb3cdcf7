"""The operator API under `/v1/`: list live calls and ask them to act.

Authentication is a bearer token (`[api] token_env` or `token_file`), compared in constant
time. Without a token the API is off: every `/v1/` path answers 404 saying so, while
`/metrics` and the health endpoints stay open. Errors are JSON `{"detail": ...}`: 401 without
a valid token, 404 for an unknown call, 409 when the call's state does not allow the request,
422 for bad input (FastAPI's validation list, or our message).

- `GET /v1/calls` → `{"calls": [call, ...]}`; `GET /v1/calls/{id}` → one call.
- `POST /v1/calls/{id}/hangup` → 202: the call sends BYE (or its final response if not yet
  answered) and ends with `result="api_hangup"`.
- `POST /v1/calls/{id}/transfer` `{"target": name}` → 202; progress in `GET /v1/calls/{id}`.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, Field

from gateway.config import Secret
from gateway.control.actions import (
    ActionRefused,
    Actor,
    CallDirectory,
    ControlledCall,
    OutboundRequest,
)

API_OFF = ("the control API is off: set [api] token_env or token_file in the gateway's config "
           "to enable it")


class TransferRequest(BaseModel):
    target: str = Field(min_length=1, max_length=64,
                        description="a name from the route's transfer_targets")


class OutboundCallRequest(BaseModel):
    to: str = Field(pattern=r"^(\+[1-9][0-9]{5,14}|sips?:[^\s<>\"]{3,200})$",
                    description="an E.164 number (+4930...) or a SIP URI")
    trunk: str = Field(min_length=1, max_length=64, description="a trunk with outbound_proxy")
    from_: str | None = Field(default=None, alias="from", pattern=r"^\+?[0-9A-Za-z._-]{1,32}$",
                              description="caller ID (user part); default the trunk's from_user")
    instructions: str | None = Field(default=None, max_length=20000)
    voice: str | None = Field(default=None, max_length=64)
    model: str | None = Field(default=None, max_length=64)
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    ring_timeout_s: float = Field(default=30.0, gt=0, le=300,
                                  description="no final answer by then: CANCEL, no_answer")


class HangupRequest(BaseModel):
    reason: str | None = Field(default=None, max_length=200)


def api_router(directory: CallDirectory, token: Secret | None) -> APIRouter:
    if token is None or not token.reveal():
        return _off_router()
    router = APIRouter(prefix="/v1", tags=["calls"],
                       dependencies=[Depends(_BearerToken(token.reveal()))])

    def find(call_id: str) -> ControlledCall:
        call = directory.controlled_call(call_id)
        if call is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no active call with this id")
        return call

    @router.get("/calls")
    async def list_calls() -> dict[str, Any]:
        return {"calls": [dict(c.info()) for c in directory.controlled_calls()]}

    @router.post("/calls", status_code=status.HTTP_201_CREATED)
    async def place_call(body: OutboundCallRequest) -> dict[str, Any]:
        request = OutboundRequest(
            to=body.to, trunk=body.trunk, from_user=body.from_, instructions=body.instructions,
            voice=body.voice, model=body.model, temperature=body.temperature,
            ring_timeout_s=body.ring_timeout_s)
        try:
            call = directory.place_call(request)
        except ActionRefused as exc:
            raise HTTPException(exc.status, exc.message) from None
        return dict(call.info())

    @router.get("/calls/{call_id}")
    async def get_call(call_id: str) -> dict[str, Any]:
        return dict(find(call_id).info())

    @router.post("/calls/{call_id}/hangup", status_code=status.HTTP_202_ACCEPTED)
    async def hang_up(call_id: str, body: HangupRequest | None = None) -> dict[str, Any]:
        call = find(call_id)
        _ask(lambda: call.request_hang_up(Actor.API, body.reason if body else None))
        return dict(call.info())

    @router.post("/calls/{call_id}/transfer", status_code=status.HTTP_202_ACCEPTED)
    async def transfer(call_id: str, body: TransferRequest) -> dict[str, Any]:
        call = find(call_id)
        _ask(lambda: call.request_transfer(body.target, Actor.API))
        return dict(call.info())

    return router


class _BearerToken:
    """The dependency that admits a request with `Authorization: Bearer <token>`."""

    def __init__(self, token: str) -> None:
        self._expected = token.encode()

    async def __call__(self, request: Request) -> None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                                 self._expected):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})


def _ask(action: Any) -> None:
    try:
        action()
    except ActionRefused as exc:
        raise HTTPException(exc.status, exc.message) from None


def _off_router() -> APIRouter:
    router = APIRouter(prefix="/v1", include_in_schema=False)

    @router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    async def off(path: str) -> None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, API_OFF)

    return router

"""The emulator's HTTP surface: a FastAPI app built by `create_app`, served by uvicorn.

Routes (reference §2-§4, §11, seed `orga-realtime-calls.txt`):
- `POST /v1/realtime/client-secrets`, `GET /v1/realtime/ice-config`, `POST /v1/realtime/calls`
  (router `realtime_router`);
- `GET /_emulator/state`, `POST /_emulator/faults` (router `control_router`), Bearer API key.
The endpoints' logic lives on `Emulator` (`server.py`); this module only maps HTTP onto it.
Validation errors are FastAPI's own 422 `detail` arrays from the pydantic models in
`models.py`, as the real (FastAPI) service produces them; the bodies the reference documents
(401 nested envelope, 401 `Invalid ephemeral token`, 403 `Not authenticated`) are raised as
`ApiError` with exactly those bodies. FastAPI's strict content type (its default) is what makes
a /calls body without `Content-Type: application/json` a 422.

To extend the emulator (e.g. another mode's routes), pass routers to `create_app`:
`create_app(emulator, extra_routers=[router])`.

No `from __future__ import annotations` here: FastAPI reads the route signatures at runtime,
and the `params` model is built per emulator (the accepted voices are a setting).
"""

import json
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from gateway.emulator.models import OfferBody, mcp_server, params_model, session_params
from gateway.orga.catalog import MODALITIES, MODELS

CLIENT_SECRETS_PATH = "/v1/realtime/client-secrets"
ICE_CONFIG_PATH = "/v1/realtime/ice-config"
CALLS_PATH = "/v1/realtime/calls"


def error_body(message: Any, kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


BAD_KEY_BODY = error_body(error_body("Incorrect or inactive API key provided."))  # nested
INVALID_TOKEN_BODY = error_body("Invalid ephemeral token")
NOT_AUTHENTICATED_BODY = error_body("Not authenticated")


class ApiError(Exception):
    """An error response with an exact body (the reference's envelopes)."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


def bearer_value(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    scheme, _, value = authorization.partition(" ")
    # FastAPI's HTTPBearer also refuses a non-Bearer scheme as "Not authenticated".
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def create_app(emulator: Any, *, extra_routers: Sequence[APIRouter] = ()) -> FastAPI:
    """The emulator's app; `emulator` is a `server.Emulator` (Any: no import cycle)."""
    app = FastAPI(title="Orga realtime API emulator", docs_url=None, redoc_url=None,
                  openapi_url=None)

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)

    app.add_exception_handler(ApiError, api_error)
    app.include_router(realtime_router(emulator))
    app.include_router(control_router(emulator))
    for router in extra_routers:
        app.include_router(router)
    return app


def realtime_router(emu: Any) -> APIRouter:
    router = APIRouter()
    Params = params_model(emu.voices, MODELS, MODALITIES)

    def counted(counter: str) -> Any:
        async def dependency() -> None:
            await emu.arrived(counter)  # counted, then the injected delay, before anything
        return Depends(dependency)

    def bearer(authorization: Annotated[str | None, Header()] = None) -> str:
        value = bearer_value(authorization)
        if value is None:
            raise ApiError(emu.config.missing_auth_status, NOT_AUTHENTICATED_BODY)
        return value

    def token_claims(token: Annotated[str, Depends(bearer)]) -> dict[str, Any]:
        claims = emu.token_claims(token)
        if claims is None:
            raise ApiError(401, INVALID_TOKEN_BODY)
        return dict(claims)

    @router.post(CLIENT_SECRETS_PATH, dependencies=[counted("client_secrets_requests")])
    async def client_secrets(request: Request,
                             key: Annotated[str, Depends(bearer)]) -> dict[str, Any]:
        if not emu.is_api_key(key):
            raise ApiError(401, BAD_KEY_BODY)
        if emu.config.email_required and "email" not in request.query_params:
            raise RequestValidationError([{"type": "missing", "loc": ("query", "email"),
                                           "msg": "Field required", "input": None}])
        return dict(emu.mint(key))

    @router.get(ICE_CONFIG_PATH, dependencies=[counted("ice_config_requests")])
    async def ice_config(claims: Annotated[dict[str, Any], Depends(token_claims)]) -> Any:
        return emu.ice_config()

    if emu.config.params_required:
        @router.post(CALLS_PATH, dependencies=[counted("calls_requests")])
        async def calls(claims: Annotated[dict[str, Any], Depends(token_claims)],
                        offer: OfferBody, params: Params) -> Response:  # type: ignore[valid-type]
            return await _calls(claims, offer, params)
    else:
        @router.post(CALLS_PATH, dependencies=[counted("calls_requests")])
        async def calls_lenient(claims: Annotated[dict[str, Any], Depends(token_claims)],
                                offer: OfferBody,
                                params: Params | None = None) -> Response:  # type: ignore[valid-type]
            return await _calls(claims, offer, params)

    async def _calls(claims: dict[str, Any], offer: OfferBody,
                     params: BaseModel | None) -> Response:
        reply = await emu.create_call(claims, offer, session_params(params), mcp_server(params))
        if reply.raw is not None:  # an injected malformed answer
            return Response(reply.raw, status_code=reply.status, media_type="application/json")
        return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)

    return router


def control_router(emu: Any) -> APIRouter:
    router = APIRouter(prefix="/_emulator")

    def api_key(authorization: Annotated[str | None, Header()] = None) -> None:
        key = bearer_value(authorization)
        if key is None or not emu.is_api_key(key):
            raise ApiError(401, BAD_KEY_BODY)

    @router.get("/state", dependencies=[Depends(api_key)])
    async def state() -> dict[str, Any]:
        return dict(emu.state())

    @router.post("/faults", dependencies=[Depends(api_key)])
    async def faults(request: Request) -> dict[str, Any]:
        try:
            changes = json.loads(await request.body())
            if not isinstance(changes, dict):
                raise ValueError("body must be an object")
            emu.faults.update(changes)
        except ValueError as exc:
            raise ApiError(400, error_body(str(exc))) from None
        return dict(emu.faults.snapshot())

    return router

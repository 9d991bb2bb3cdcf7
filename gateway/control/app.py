"""The operator ASGI app: health endpoints, the `/v1/` API and (when configured) MCP tools
under `/mcp/<secret>`, whose SDK session manager runs for the app's lifespan.

Composed once by `gateway/app.py`; served by `server.OperatorServer`. The OpenAPI schema of
the operator API is at `/v1/openapi.json` (no bundled docs UI: it would load assets from a
CDN).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from fastapi import FastAPI

from gateway.config import Secret
from gateway.control.actions import (
    ActionRefused,
    CallDirectory,
    ControlledCall,
    OutboundRequest,
)
from gateway.control.api import api_router
from gateway.control.health import CallsProvider, StateProvider, health_router
from gateway.metrics import Metrics

if TYPE_CHECKING:  # the mcp SDK takes ~1.5 s to import: only when [mcp] is configured
    from gateway.control.mcp_tools import McpTools


class _NoCalls:
    def controlled_calls(self) -> list[ControlledCall]:
        return []

    def controlled_call(self, control_id: str) -> ControlledCall | None:
        return None

    def place_call(self, request: OutboundRequest) -> ControlledCall:
        raise ActionRefused("this server places no calls", 409)


def operator_app(metrics: Metrics, state: StateProvider, calls: CallsProvider | None = None, *,
                 directory: CallDirectory | None = None, token: Secret | None = None,
                 mcp: McpTools | None = None) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if mcp is None:
            yield
            return
        async with mcp.running():
            yield

    app = FastAPI(title="orga-sip-gateway operator API", openapi_url="/v1/openapi.json",
                  docs_url=None, redoc_url=None, lifespan=lifespan)
    app.include_router(health_router(metrics, state, calls))
    app.include_router(api_router(directory if directory is not None else _NoCalls(), token))
    if mcp is not None:
        app.mount(mcp.mount_path, mcp)
    return app

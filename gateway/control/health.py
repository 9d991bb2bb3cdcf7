"""The open, read-only operator endpoints: `/metrics`, `/healthz`, `/ready`, `/calls`.

- `/healthz`: the event loop answers, so the process is alive (200).
- `/ready`: 200 when new calls are welcome; 503 while draining, at `max_calls` or overloaded.
- `/calls`: JSON list of the active calls from a provider (the call registry).
- `/metrics`: the `Metrics` registry in the Prometheus text format.

They need no token: Prometheus, systemd and load balancers read them. A failing provider is a
500 for that request, never a dead endpoint. Handlers are `async def` so they run on the
gateway's loop (FastAPI would run plain functions in a thread pool, beside the call registry).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response

from gateway.metrics import CONTENT_TYPE, Metrics

log = logging.getLogger(__name__)

_NO_STORE = {"Cache-Control": "no-store"}


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


def health_router(metrics: Metrics, state: StateProvider,
                  calls: CallsProvider | None = None) -> APIRouter:
    calls_of = calls if calls is not None else metrics.conversations
    # Outside the /v1 API schema: GET+HEAD routes would also give duplicate operation ids.
    router = APIRouter(tags=["health"], include_in_schema=False)

    def guarded(name: str, produce: Callable[[], Response]) -> Response:
        try:
            return produce()
        except Exception:  # a broken provider is a 500 here, never a dead endpoint
            log.exception("HTTP %s failed", name)
            return PlainTextResponse("internal error\n", 500, headers=_NO_STORE)

    @router.api_route("/metrics", methods=["GET", "HEAD"], response_class=Response)
    async def get_metrics() -> Response:
        return guarded("/metrics", lambda: Response(metrics.render(), 200, headers=_NO_STORE,
                                                     media_type=CONTENT_TYPE))

    @router.api_route("/healthz", methods=["GET", "HEAD"], response_class=PlainTextResponse)
    async def get_healthz() -> Response:
        return PlainTextResponse("ok\n", headers=_NO_STORE)

    @router.api_route("/ready", methods=["GET", "HEAD"], response_class=Response)
    async def get_ready() -> Response:
        def produce() -> Response:
            s = state()
            body = {"ready": s.ready, "reason": s.reason, "draining": s.draining,
                    "active_calls": s.active_calls, "max_calls": s.max_calls}
            return _json(body, 200 if s.ready else 503)
        return guarded("/ready", produce)

    @router.api_route("/calls", methods=["GET", "HEAD"], response_class=Response)
    async def get_calls() -> Response:
        return guarded("/calls", lambda: _json([dict(c) for c in calls_of()]))

    return router


def _json(value: Any, status: int = 200) -> Response:
    body = json.dumps(value, default=str, ensure_ascii=False) + "\n"
    return Response(body.encode("utf-8"), status, headers=_NO_STORE,
                    media_type="application/json")

"""The registry of active calls: admission, routing, event dispatch, drain and shutdown.

Admission (issue 6 item 1, issue 7 item 4/7, issue 12) happens here before a `Call` exists:
draining → 503, `limits.max_calls` reached → 503, the worker overloaded → 503, the trunk's
`max_calls` reached → 503, no route → 404;
each rejection is a SIP response and a `calls_ended{result}` sample. Admitted calls run as tasks
the registry owns; SIP events are dispatched to them by call handle. `drain()` stops admission
and waits for calls to end, up to `limits.drain_timeout_s`, then hangs up the rest.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

from gateway.call import Call, CallContext, callee_of, caller_of
from gateway.control.actions import ActionRefused, OutboundRequest
from gateway.drain import Draining
from gateway.heap import HeapTrimmer
from gateway.outbound import OutboundCall
from gateway.outcomes import Outcome, response_headers
from gateway.records.record import CallRecord
from gateway.routes import match_route
from gateway.sip.events import CallHandle, DialogEnded, InviteReceived

log = logging.getLogger(__name__)

UNROUTED = "-"  # route label for calls rejected before a route was chosen


class CallRegistry:
    def __init__(self, ctx: CallContext, draining: Draining | None = None,
                 overloaded: Callable[[], bool] | None = None) -> None:
        self.ctx = ctx
        self.calls: dict[CallHandle, Call] = {}
        self._by_control_id: dict[str, Call] = {}
        self._tasks: dict[CallHandle, asyncio.Task[None]] = {}
        self._per_trunk: Counter[str] = Counter()
        self._trunk_limits = {t.name: t.max_calls for t in ctx.config.trunks}
        self.draining = draining if draining is not None else Draining()
        self._overloaded = overloaded or (lambda: False)
        self._idle = asyncio.Event()
        self._idle.set()
        self._heap = HeapTrimmer(lambda: len(self.calls))
        self._next_placeholder = 0  # outbound calls have no SIP handle until their INVITE is out

    # --- admission ----------------------------------------------------------------------------
    def at_capacity(self) -> bool:
        return len(self.calls) >= self.ctx.config.limits.max_calls

    def availability(self) -> str | None:
        """Why no new call is taken now — "draining", "at capacity", "overloaded" — or None.
        The screen answers OPTIONS and /ready from it, so a balancer's probe sees what an
        INVITE would get."""
        if self.draining:
            return "draining"
        if self.at_capacity():
            return "at capacity"
        return "overloaded" if self._overloaded() else None

    def on_invite(self, event: InviteReceived, trunk: str) -> None:
        metrics = self.ctx.metrics
        callee = callee_of(event)
        if self.draining:
            self._refuse(event, Outcome.DRAINING, trunk)
            return
        if self.at_capacity():
            self._refuse(event, Outcome.CAPACITY, trunk)
            return
        if self._overloaded():
            self._refuse(event, Outcome.OVERLOADED, trunk)
            return
        limit = self._trunk_limits.get(trunk)
        if limit is not None and self._per_trunk[trunk] >= limit:
            metrics.security_rejection("trunk_capacity")
            self._refuse(event, Outcome.TRUNK_CAPACITY, trunk)
            return
        route = match_route(self.ctx.config.routes, callee, trunk)
        if route is None:
            self._refuse(event, Outcome.NO_ROUTE, trunk)
            return
        call = Call(self.ctx, event, route, trunk)
        self.calls[event.call] = call
        self._by_control_id[call.control_id] = call
        self._per_trunk[trunk] += 1
        self._idle.clear()
        metrics.call_started(call.route_label, trunk)
        metrics.set_active_calls(len(self.calls))
        self._tasks[event.call] = asyncio.create_task(self._run(call), name=f"call {call.call_id}")

    def _refuse(self, event: InviteReceived, outcome: Outcome, trunk: str) -> None:
        d = outcome.disposition
        assert d.status is not None, outcome
        self.ctx.signalling.reject(event.call, d.status, reason=d.reason,
                                   headers=response_headers(d))
        self.ctx.metrics.call_ended(d.result, UNROUTED, trunk)
        CallRecord.refused(self.ctx.records, sip_call_id=event.request.call_id, trunk=trunk,
                           route=UNROUTED, caller=caller_of(event), callee=callee_of(event),
                           result=d.result, sip_status=d.status,
                           now=asyncio.get_running_loop().time())
        log.log(d.log_level, "refused call %s with %d (%s)", event.request.call_id, d.status,
                d.result)

    async def _run(self, call: Call) -> None:
        try:
            await call.run()
        finally:
            self.calls.pop(call.handle, None)
            self._by_control_id.pop(call.control_id, None)
            self._tasks.pop(call.handle, None)
            self._per_trunk[call.trunk] -= 1
            self.ctx.metrics.set_active_calls(len(self.calls))
            if not self.calls:
                self._idle.set()
            self._heap.call_ended()

    # --- events -------------------------------------------------------------------------------
    def on_event(self, event: object) -> None:
        """Any SIP event with a `call` handle other than a new INVITE."""
        handle = getattr(event, "call", None)
        call = self.calls.get(handle) if handle is not None else None
        if call is not None:
            call.sip_event(event)
        elif not isinstance(event, DialogEnded):
            log.debug("event for unknown call: %r", event)

    # --- drain and shutdown -------------------------------------------------------------------
    async def drain(self, timeout_s: float) -> None:
        """Refuse new calls; let active ones finish for up to `timeout_s`, then hang up."""
        self.draining.begin()
        self.ctx.metrics.set_draining(True)
        log.info("draining: %d active calls, waiting up to %.0f s", len(self.calls), timeout_s)
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            log.warning("drain timeout: hanging up %d calls", len(self.calls))
            await self.hang_up_all(Outcome.DRAINED)

    async def hang_up_all(self, outcome: Outcome = Outcome.SHUTDOWN) -> None:
        for call in list(self.calls.values()):
            call.hang_up(outcome)
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=10.0)

    # --- outbound calls (POST /v1/calls) -------------------------------------------------------
    def place_call(self, request: OutboundRequest) -> Call:
        """Admit and start an outbound call; `ActionRefused` says why not (503 full/draining,
        422 a trunk that is unknown or places no calls). Counted like inbound calls."""
        trunk = next((t for t in self.ctx.config.trunks if t.name == request.trunk), None)
        if trunk is None:
            names = ", ".join(t.name for t in self.ctx.config.trunks)
            raise ActionRefused(f"no trunk is named {request.trunk[:64]!r} (trunks: {names})", 422)
        if trunk.outbound_proxy is None:
            raise ActionRefused(f"trunk {trunk.name!r} places no calls: set its outbound_proxy",
                                422)
        if self.draining:
            raise ActionRefused("the gateway is draining", 503)
        if self.at_capacity():
            raise ActionRefused("limits.max_calls reached", 503)
        if self._overloaded():
            raise ActionRefused("the gateway is overloaded", 503)
        limit = self._trunk_limits.get(trunk.name)
        if limit is not None and self._per_trunk[trunk.name] >= limit:
            raise ActionRefused(f"trunk {trunk.name!r} is at its max_calls", 503)
        self._next_placeholder -= 1
        placeholder = CallHandle(self._next_placeholder)
        call = OutboundCall(self.ctx, request, trunk, placeholder, self._bind)
        self.calls[placeholder] = call
        self._by_control_id[call.control_id] = call
        self._per_trunk[trunk.name] += 1
        self._idle.clear()
        self.ctx.metrics.call_started(call.route_label, trunk.name)
        self.ctx.metrics.set_active_calls(len(self.calls))
        self._tasks[placeholder] = asyncio.create_task(self._run(call), name="outbound call")
        return call

    def _bind(self, call: Call, handle: CallHandle) -> None:
        """The outbound call's INVITE is out: its SIP handle replaces the placeholder."""
        task = self._tasks.pop(call.handle, None)
        self.calls.pop(call.handle, None)
        call.handle = handle
        self.calls[handle] = call
        if task is not None:
            self._tasks[handle] = task

    # --- the operator API's view (gateway.control.actions.CallDirectory) ----------------------
    def controlled_calls(self) -> list[Call]:
        return list(self.calls.values())

    def controlled_call(self, control_id: str) -> Call | None:
        return self._by_control_id.get(control_id)

    def describe(self) -> list[dict[str, object]]:
        return [call.describe() for call in self.calls.values()]

"""The agent's tools, served over MCP (streamable HTTP) at `/mcp/<per-call secret>`.

Orga's cloud connects to the URL a call put into its `/calls` request (`params.mcp_server`,
orga-api §4) and calls tools there. The secret in the URL is the only credential: 192 random
bits (`secrets.token_urlsafe(24)`), issued when the call starts, revoked when it ends, so a tool
call acts on exactly one live call; any other path under `/mcp/` gets a plain 404 before the
MCP SDK sees the request. The secret is never logged (the access log is off; our records name
the call's id).

The MCP protocol is the SDK's (`mcp` low-level `Server` and its `StreamableHTTPSessionManager`,
stateless: each request stands alone, so nothing accumulates between tool calls and a revoked
secret cannot ride on an open session). Tools, each acting on the URL's call:
- `hang_up(reason?)`: end the call once the agent's goodbye has finished playing.
- `transfer_call(target)`: blind transfer to a name from the route's `transfer_targets` (the
  description lists them); answers with the transfer's outcome.
- `send_dtmf(digits)`: RFC 4733 events towards the phone (IVRs on outbound calls).
- `get_call_info()`: caller, callee, trunk, duration, DTMF received so far.
Tools only ask the call (`gateway.control.actions`); a refusal is a tool error the model reads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import mcp.types as types
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import Receive, Scope, Send

from gateway.control.actions import ActionRefused, Actor

log = logging.getLogger(__name__)

SECRET_BYTES = 24  # 192 bits; the contract asks for at least 128
MOUNT = "/mcp"
DTMF_CHARS = frozenset("0123456789*#ABCD")
MAX_DTMF = 32


class ToolCall(Protocol):
    """What the tools may ask of a call (a `Call` provides it)."""

    def info(self) -> Mapping[str, object]: ...

    def transfer_targets(self) -> list[str]: ...

    def request_hang_up(self, actor: Actor, reason: str | None = None) -> None: ...

    async def transfer(self, target: str, actor: Actor) -> str:
        """Run a transfer to its end; the outcome in words (raise ActionRefused on failure)."""
        ...

    def request_dtmf(self, digits: str) -> None: ...

    def dtmf_received(self) -> str: ...


@dataclass(frozen=True, slots=True)
class McpGrant:
    """One call's capability: its URL (for `params.mcp_server`) and the revocation."""

    url: str
    secret: str
    tools: McpTools

    def revoke(self) -> None:
        self.tools.revoke(self.secret)


class McpTools:
    """The ASGI app mounted at `/mcp` and the table of live secrets."""

    mount_path = MOUNT

    def __init__(self, public_url: str,
                 on_tool: Callable[[str, bool], None] | None = None) -> None:
        self.public_url = public_url.rstrip("/")
        self._on_tool = on_tool
        self._calls: dict[str, ToolCall] = {}
        self._server: Server[Any] = Server("orga-sip-gateway", on_list_tools=self._list_tools,
                                           on_call_tool=self._call_tool)
        # The secret in the path is the credential; Host/Origin checks against DNS rebinding
        # would only refuse Orga's cloud, which reaches us under a name we cannot predict.
        self._manager = StreamableHTTPSessionManager(
            self._server, stateless=True, json_response=True,
            security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
            max_request_body_size=64 * 1024)

    # --- grants -------------------------------------------------------------------------------
    def grant(self, call: ToolCall) -> McpGrant:
        secret = secrets.token_urlsafe(SECRET_BYTES)
        self._calls[secret] = call
        return McpGrant(f"{self.public_url}{MOUNT}/{secret}", secret, self)

    def revoke(self, secret: str) -> None:
        self._calls.pop(secret, None)

    @property
    def live(self) -> int:
        return len(self._calls)

    # --- ASGI -----------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The SDK's session manager needs a task group for the server's lifetime."""
        async with self._manager.run():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._call_of(scope) is None:
            await _not_found(send)
            return
        await self._manager.handle_request(scope, receive, send)

    def _call_of(self, scope: Scope) -> ToolCall | None:
        path: str = scope.get("path", "")
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        secret = path.removeprefix(MOUNT).strip("/")
        if not secret or "/" in secret:
            return None
        return self._calls.get(secret)

    # --- MCP handlers -------------------------------------------------------------------------
    def _request_call(self, ctx: Any) -> ToolCall:
        request = getattr(ctx, "request", None)
        call = self._call_of(request.scope) if request is not None else None
        if call is None:  # revoked between the HTTP check and this handler
            raise ActionRefused("the call has ended", 404)
        return call

    async def _list_tools(self, ctx: Any, params: Any) -> types.ListToolsResult:
        try:
            targets = self._request_call(ctx).transfer_targets()
        except ActionRefused:
            targets = []
        return types.ListToolsResult(tools=tool_definitions(targets))

    async def _call_tool(self, ctx: Any, params: types.CallToolRequestParams
                         ) -> types.CallToolResult:
        args = params.arguments or {}
        try:
            call = self._request_call(ctx)
            text = await self._run(call, params.name, args)
        except ActionRefused as exc:
            log.info("tool %s refused: %s", params.name[:40], exc.message)
            self._observe(params.name, False)
            return types.CallToolResult(content=[types.TextContent(text=exc.message)],
                                        is_error=True)
        self._observe(params.name, True)
        return types.CallToolResult(content=[types.TextContent(text=text)])

    def _observe(self, tool: str, ok: bool) -> None:
        if self._on_tool is not None:
            self._on_tool(tool, ok)

    async def _run(self, call: ToolCall, name: str, args: Mapping[str, Any]) -> str:
        if name == "hang_up":
            reason = args.get("reason")
            call.request_hang_up(Actor.AGENT, str(reason)[:200] if reason else None)
            return "The call will end after your last words have been played."
        if name == "transfer_call":
            target = args.get("target")
            if not isinstance(target, str) or not target:
                raise ActionRefused("transfer_call needs a target name", 422)
            return await call.transfer(target, Actor.AGENT)
        if name == "send_dtmf":
            digits = args.get("digits")
            if (not isinstance(digits, str) or not digits or len(digits) > MAX_DTMF
                    or not set(digits.upper()) <= DTMF_CHARS):
                raise ActionRefused(f"digits must be 1-{MAX_DTMF} of 0-9 * # A-D", 422)
            call.request_dtmf(digits.upper())
            return f"Sent DTMF {digits.upper()}."
        if name == "get_call_info":
            info = dict(call.info())
            info["dtmf_received"] = call.dtmf_received()
            return json.dumps(info, default=str)
        raise ActionRefused(f"unknown tool {name[:40]!r}", 404)


def tool_definitions(targets: list[str]) -> list[types.Tool]:
    """The four tools; `transfer_call` names this call's allowed targets."""
    no_args: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
    target_schema: dict[str, Any] = {"type": "string", "description": "who to transfer to"}
    if targets:
        target_schema["enum"] = targets
    where = (", ".join(targets) if targets
             else "none are configured for this call, so transfers will be refused")
    return [
        types.Tool(
            name="hang_up",
            description="End the phone call. Say goodbye first: the call ends once your last "
                        "words have been played to the caller.",
            input_schema={"type": "object", "additionalProperties": False, "properties": {
                "reason": {"type": "string", "description": "why, for the call's record"}}}),
        types.Tool(
            name="transfer_call",
            description="Put the caller through to a person (blind transfer): tell the caller "
                        f"first. Targets: {where}. If the transfer fails the call stays with "
                        "you and the result says why.",
            input_schema={"type": "object", "additionalProperties": False,
                          "properties": {"target": target_schema}, "required": ["target"]}),
        types.Tool(
            name="send_dtmf",
            description="Press keys on the phone line (DTMF, e.g. to navigate a phone menu).",
            input_schema={"type": "object", "additionalProperties": False, "required": ["digits"],
                          "properties": {"digits": {
                              "type": "string", "pattern": "^[0-9*#A-Da-d]{1,32}$",
                              "description": "keys to press, e.g. \"1\" or \"0049#\""}}}),
        types.Tool(
            name="get_call_info",
            description="Who is calling whom, on which line, for how long, and the keys the "
                        "caller pressed so far.",
            input_schema=no_args),
    ]


async def _not_found(send: Send) -> None:
    body = b'{"detail":"Not Found"}'
    await send({"type": "http.response.start", "status": 404,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

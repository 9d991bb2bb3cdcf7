"""The emulator in the role of Orga's cloud for agent tools (`params.mcp_server`, reference §4).

Orga's cloud connects to the MCP server a `/calls` request names and calls tools there when the
model decides to. The emulator has no model, so it calls a tool *on request*: the control
endpoint (`POST /_emulator/tools`) or a scripted action given on the command line
(`--agent-tool NAME[=JSON]` after `--agent-tool-after S` seconds of each session). It uses the
MCP SDK's own client, so demos and tests drive the whole chain: emulator → gateway's
`/mcp/<secret>` → the call.

The URL holds the gateway's per-call secret: it is kept per conversation while the session
lives and never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 90.0  # a transfer_call waits for the transfer's outcome


class ToolRequestError(ValueError):
    """A bad tool request (unknown conversation, no mcp_server, malformed arguments)."""


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    tool: str
    text: str
    is_error: bool

    def to_json(self) -> dict[str, Any]:
        return {"tool": self.tool, "text": self.text, "is_error": self.is_error}


@dataclass(frozen=True, slots=True)
class ScriptedTool:
    """`--agent-tool NAME[=JSON]` with `--agent-tool-after S`."""

    name: str
    arguments: dict[str, Any]
    after_s: float

    @classmethod
    def parse(cls, spec: str, after_s: float) -> ScriptedTool:
        name, sep, raw = spec.partition("=")
        try:
            arguments = json.loads(raw) if sep else {}
        except ValueError as exc:
            raise ToolRequestError(f"--agent-tool {name}: arguments are not JSON ({exc})") from None
        if not name or not isinstance(arguments, dict):
            raise ToolRequestError("--agent-tool takes NAME or NAME={\"arg\": ...}")
        return cls(name, arguments, after_s)


def mcp_server_url(server: object) -> str | None:
    """The `url` of a session's `params.mcp_server` object, if it has a usable one."""
    url = server.get("url") if isinstance(server, dict) else None
    return url if isinstance(url, str) and url.startswith(("http://", "https://")) else None


class ToolCaller:
    """Tool servers of the live sessions, and the client calls to them."""

    def __init__(self, script: ScriptedTool | None = None) -> None:
        self._urls: dict[str, str] = {}
        self._script = script
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.outcomes: list[ToolOutcome] = []  # bounded history for tests and the state view

    def session_started(self, conversation_id: str, mcp_server: object) -> None:
        """A session began; `mcp_server` is its `params.mcp_server` object as sent (or None)."""
        url = mcp_server_url(mcp_server)
        if url is None:
            return
        self._urls[conversation_id] = url
        if self._script is not None:
            self._tasks[conversation_id] = asyncio.create_task(
                self._scripted(conversation_id, self._script), name="emulator scripted tool")

    def session_ended(self, conversation_id: str) -> None:
        self._urls.pop(conversation_id, None)
        task = self._tasks.pop(conversation_id, None)
        if task is not None and not task.done():
            task.cancel()

    async def close(self) -> None:
        for conversation_id in list(self._tasks):
            self.session_ended(conversation_id)

    async def call(self, conversation_id: str | None, tool: str,
                   arguments: dict[str, Any]) -> ToolOutcome:
        """Call `tool` on the session's MCP server (the only session when no id is given)."""
        if conversation_id is None:
            if len(self._urls) != 1:
                raise ToolRequestError(f"{len(self._urls)} sessions have an mcp_server: name "
                                       "the conversation_id")
            conversation_id = next(iter(self._urls))
        url = self._urls.get(conversation_id)
        if url is None:
            raise ToolRequestError("no live session with an mcp_server has this conversation_id")
        from mcp import Client  # the SDK only when a tool is actually called

        async with asyncio.timeout(CALL_TIMEOUT_S), Client(url) as client:
            result = await client.call_tool(tool, arguments)
        text = " ".join(getattr(c, "text", "") for c in result.content).strip()
        outcome = ToolOutcome(tool, text, bool(result.is_error))
        self.outcomes = [*self.outcomes[-49:], outcome]
        log.info("emulator called tool %s for %s: %s", tool, conversation_id,
                 "error" if outcome.is_error else "ok")
        return outcome

    async def _scripted(self, conversation_id: str, script: ScriptedTool) -> None:
        await asyncio.sleep(script.after_s)
        try:
            await self.call(conversation_id, script.name, script.arguments)
        except Exception as exc:  # a demo aid: report, never take the emulator down
            log.warning("scripted tool %s failed: %s", script.name, type(exc).__name__)

"""The emulator as Orga's cloud for agent tools: it finds a session's mcp_server in the /calls
params and calls tools there with the MCP SDK's client (here against the gateway's tool server
with a stand-in call)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.control.actions import Actor
from gateway.emulator.tool_caller import ScriptedTool, ToolCaller, ToolRequestError, mcp_server_url
from tests.control.test_mcp_tools import FakeCall, served


def test_mcp_server_url_and_script_parsing() -> None:
    server = {"id": "c1", "url": "https://gw.example/mcp/s3cr3t", "alias": "p"}
    assert mcp_server_url(server) == "https://gw.example/mcp/s3cr3t"
    for bad in (None, {}, "x", {"url": "file:///etc/passwd"}, {"url": 3}):
        assert mcp_server_url(bad) is None
    script = ScriptedTool.parse('transfer_call={"target": "sales"}', 2.0)
    assert (script.name, script.arguments, script.after_s) == ("transfer_call",
                                                              {"target": "sales"}, 2.0)
    assert ScriptedTool.parse("hang_up", 0).arguments == {}
    with pytest.raises(ToolRequestError):
        ScriptedTool.parse("hang_up={oops", 0)


async def test_calls_tools_on_request_and_by_script() -> None:
    async with served() as tools:
        call = FakeCall("a", ["operator"])
        grant = tools.grant(call)
        caller = ToolCaller()
        with pytest.raises(ToolRequestError):
            await caller.call(None, "hang_up", {})
        caller.session_started("conv-1", {"id": "a", "url": grant.url, "alias": "phone"})
        outcome = await caller.call(None, "transfer_call", {"target": "operator"})
        assert (outcome.text, outcome.is_error) == ("transferred to operator", False)
        refused = await caller.call("conv-1", "transfer_call", {"target": "nobody"})
        assert refused.is_error
        caller.session_ended("conv-1")
        with pytest.raises(ToolRequestError):
            await caller.call("conv-1", "hang_up", {})

        scripted = ToolCaller(ScriptedTool("hang_up", {"reason": "demo"}, 0.05))
        scripted.session_started("conv-2", {"url": grant.url})
        for _ in range(200):
            if scripted.outcomes:
                break
            await asyncio.sleep(0.02)
        assert scripted.outcomes[0].tool == "hang_up" and not scripted.outcomes[0].is_error
        assert ("hang_up", (Actor.AGENT, "demo")) in call.asked
        await scripted.close()

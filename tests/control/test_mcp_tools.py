"""The MCP tool server with the SDK's own client over real HTTP: tools listed per call, each
tool reaching exactly the call of its URL, and a wrong or revoked secret getting nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import httpx
import pytest
from mcp import Client

from gateway.control.actions import ActionRefused, Actor
from gateway.control.app import operator_app
from gateway.control.health import GatewayState
from gateway.control.mcp_tools import McpTools
from gateway.control.server import OperatorServer
from gateway.metrics import Metrics


class FakeCall:
    def __init__(self, name: str, targets: list[str]) -> None:
        self.name, self.targets = name, targets
        self.asked: list[tuple[str, object]] = []

    def info(self) -> Mapping[str, object]:
        return {"id": self.name, "caller": "+4930123"}

    def transfer_targets(self) -> list[str]:
        return self.targets

    def request_hang_up(self, actor: Actor, reason: str | None = None) -> None:
        self.asked.append(("hang_up", (actor, reason)))

    async def transfer(self, target: str, actor: Actor) -> str:
        if target not in self.targets:
            raise ActionRefused(f"{target!r} is not a transfer target of this call", 422)
        self.asked.append(("transfer", target))
        return f"transferred to {target}"

    def request_dtmf(self, digits: str) -> None:
        self.asked.append(("dtmf", digits))

    def dtmf_received(self) -> str:
        return "42"


@asynccontextmanager
async def served() -> AsyncIterator[McpTools]:
    tools = McpTools("http://placeholder/")
    app = operator_app(Metrics(), lambda: GatewayState(False, 0, 1), mcp=tools)
    async with OperatorServer(app) as server:
        tools.public_url = f"http://127.0.0.1:{server.port}"
        yield tools


def text(result: object) -> str:
    return result.content[0].text  # type: ignore[attr-defined,no-any-return]


async def test_tools_act_on_the_call_of_their_url() -> None:
    async with served() as tools:
        a, b = FakeCall("a", ["operator", "sales"]), FakeCall("b", [])
        grant_a, grant_b = tools.grant(a), tools.grant(b)
        assert grant_a.url.startswith(tools.public_url + "/mcp/")
        assert len(grant_a.secret) >= 22 and grant_a.secret != grant_b.secret  # >= 128 bits
        async with Client(grant_a.url) as client:
            listed = (await client.list_tools()).tools
            assert [t.name for t in listed] == ["hang_up", "transfer_call", "send_dtmf",
                                                "get_call_info"]
            transfer = listed[1]
            assert "operator, sales" in (transfer.description or "")
            assert transfer.input_schema["properties"]["target"]["enum"] == ["operator", "sales"]
            info = json.loads(text(await client.call_tool("get_call_info", {})))
            assert info == {"id": "a", "caller": "+4930123", "dtmf_received": "42"}
            assert text(await client.call_tool("transfer_call", {"target": "sales"})) == \
                "transferred to sales"
            refused = await client.call_tool("transfer_call", {"target": "premium"})
            assert refused.is_error and "not a transfer target" in text(refused)
            bad = await client.call_tool("send_dtmf", {"digits": "12x"})
            assert bad.is_error
            assert not (await client.call_tool("send_dtmf", {"digits": "1#"})).is_error
            assert not (await client.call_tool("hang_up", {"reason": "done"})).is_error
        assert a.asked == [("transfer", "sales"), ("dtmf", "1#"),
                           ("hang_up", (Actor.AGENT, "done"))]
        assert b.asked == []
        async with Client(grant_b.url) as client:
            listed = (await client.list_tools()).tools
            assert "none are configured" in (listed[1].description or "")


@pytest.mark.parametrize("path", ["/mcp/", "/mcp/wrong-secret", "/mcp/{secret}x",
                                  "/mcp/{secret}/extra"])
async def test_wrong_or_revoked_secret_gets_nothing(path: str) -> None:
    async with served() as tools:
        call = FakeCall("a", ["operator"])
        grant = tools.grant(call)
        init = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "hang_up", "arguments": {}}}
        headers = {"Accept": "application/json, text/event-stream"}
        async with httpx.AsyncClient(base_url=tools.public_url) as http:
            r = await http.post(path.format(secret=grant.secret), json=init, headers=headers)
            assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
            grant.revoke()
            r = await http.post(f"/mcp/{grant.secret}", json=init, headers=headers)
            assert r.status_code == 404
        assert tools.live == 0 and call.asked == []
        with pytest.raises(Exception):  # noqa: B017 - the SDK's own error for an HTTP 404
            async with Client(grant.url) as client:
                await client.list_tools()

"""Agent tools on a real call: the gateway, the emulator and a hand-written SIP caller, with the
MCP SDK's client in the role of Orga's cloud."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import httpx
from mcp import Client

from gateway.config import Config, McpConfig
from gateway.emulator.server import Emulator
from gateway.media.dtmf import TelephoneEventReceiver
from gateway.media.rtp import parse_rtp
from tests.edge.harness import (
    Caller,
    emulator_config,
    make_config,
    place_call,
    running,
)

QUIET_ULAW = frozenset(b"\x7f\xff\x7e\xfe\x7d\xfd")  # μ-law codes within ±3 of zero


def is_speech(payload: bytes) -> bool:
    return sum(b not in QUIET_ULAW for b in payload) > len(payload) // 2


async def test_tools_on_a_live_call_and_the_secret_dies_with_it() -> None:
    # Short replies leave the agent quiet between them, as after a goodbye.
    def config(emu: Emulator) -> Config:
        return replace(make_config(emu), mcp=McpConfig(public_url="http://127.0.0.1:9"))

    async with running(config, emulator_config(reply_seconds=0.5)) as rig:
        tools = rig.gateway.registry.ctx.mcp  # type: ignore[union-attr]
        assert tools is not None
        tools.public_url = f"http://127.0.0.1:{rig.http_port}"
        caller = Caller(rig.udp)
        await caller.start()
        call = await place_call(caller, user="200")
        packets: list[bytes] = []
        proto = call.rtp._proto
        assert proto is not None
        on_data = proto.on_data
        loop = asyncio.get_running_loop()
        speech_at: list[float] = []

        def capture(data: bytes, addr: tuple[str, int]) -> None:
            packets.append(data)
            if data[1] & 0x7F == 0 and is_speech(data[12:]):
                speech_at.append(loop.time())
            on_data(data, addr)

        proto.on_data = capture
        gw_call = call.gateway_call(rig)
        grant = gw_call._grant
        assert grant is not None and grant.url.startswith(tools.public_url + "/mcp/")
        async with Client(grant.url) as client:
            names = [t.name for t in (await client.list_tools()).tools]
            assert names == ["hang_up", "transfer_call", "send_dtmf", "get_call_info"]
            info = json.loads((await client.call_tool("get_call_info", {})).content[0].text)
            assert info["callee"] == "200" and info["caller"] == "caller"
            assert info["id"] == gw_call.control_id and info["dtmf_received"] == ""
            result = await client.call_tool("send_dtmf", {"digits": "5#"})
            assert not result.is_error, result
            await asyncio.sleep(0.6)
            receiver = TelephoneEventReceiver()
            heard = [d.digit for p in map(parse_rtp, packets) if p.payload_type == 101
                     for d in receiver.receive(p.ssrc, p.timestamp, p.payload)]
            assert heard == ["5", "#"]
            # Hang up while the agent is talking: its reply must finish first.
            for _ in range(500):
                if speech_at and loop.time() - speech_at[-1] < 0.05:
                    break
                await asyncio.sleep(0.01)
            asked_at = loop.time()
            result = await client.call_tool("hang_up", {"reason": "caller said bye"})
            assert not result.is_error
            again = await client.call_tool("hang_up", {})
            assert again.is_error and "already ending" in again.content[0].text
        for _ in range(400):
            if any(req.startswith(b"BYE ") for req in caller.requests):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("no BYE after the agent's hang_up")
        bye_at = loop.time()
        # The goodbye played out: the BYE follows the agent's last audio by the quiet time,
        # and did not wait for the 15 s cap.
        assert max(speech_at) > asked_at + 0.1  # it went on talking after the request
        assert bye_at - max(speech_at) >= 0.7, (bye_at - asked_at, bye_at - max(speech_at))
        assert bye_at - asked_at < 5.0
        await call.rtp.stop()
        await rig.idle()
        assert tools.live == 0
        async with httpx.AsyncClient() as http:
            r = await http.post(grant.url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                                headers={"Accept": "application/json, text/event-stream"})
            assert r.status_code == 404
        metrics = (await rig.http_get("/metrics")).decode()
        assert 'calls_ended_total{result="agent_hangup",route="*",trunk="local"} 1.0' in metrics
        caller.close()


async def test_emulator_plays_orgas_cloud() -> None:
    """The whole chain without a test-side MCP client: the emulator got params.mcp_server in
    /calls, and its control endpoint (then a scripted --agent-tool) calls the tools."""
    from gateway.emulator.tool_caller import ScriptedTool
    from tests.edge.harness import API_KEY

    def config(emu: Emulator) -> Config:
        return replace(make_config(emu), mcp=McpConfig(public_url="http://127.0.0.1:9"))

    # Short replies: the agent's hang_up acts once its audio has been quiet for a moment.
    async with running(config, emulator_config(reply_seconds=0.5)) as rig:
        tools = rig.gateway.registry.ctx.mcp  # type: ignore[union-attr]
        assert tools is not None
        tools.public_url = f"http://127.0.0.1:{rig.http_port}"
        caller = Caller(rig.udp)
        await caller.start()
        call = await place_call(caller, user="300")
        async with httpx.AsyncClient(base_url=rig.emulator.base_url,
                                     headers={"Authorization": f"Bearer {API_KEY}"}) as emu:
            r = await emu.post("/_emulator/tools", json={"name": "get_call_info"})
            assert r.status_code == 200 and not r.json()["is_error"], r.text
            assert json.loads(r.json()["text"])["callee"] == "300"
            r = await emu.post("/_emulator/tools", json={"name": "transfer_call",
                                                         "arguments": {"target": "nobody"}})
            assert r.status_code == 200 and r.json()["is_error"]  # the route allows none
            r = await emu.post("/_emulator/tools", json={"name": "hang_up"})
            assert r.status_code == 200 and not r.json()["is_error"]
            r = await emu.post("/_emulator/tools", json={"nope": 1})
            assert r.status_code == 400
        for _ in range(1000):  # at most GOODBYE_MAX_S after the request
            if any(req.startswith(b"BYE ") for req in caller.requests):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("no BYE after the emulator's hang_up")
        await call.rtp.stop()
        await rig.idle()
        assert [t["tool"] for t in rig.emulator.state()["tool_calls"]] == [
            "get_call_info", "transfer_call", "hang_up"]
        caller.close()

    scripted = replace(emulator_config(reply_seconds=0.5),
                       tool_script=ScriptedTool("hang_up", {}, 0.5))
    async with running(config, scripted) as rig:
        rig.gateway.registry.ctx.mcp.public_url = (  # type: ignore[union-attr]
            f"http://127.0.0.1:{rig.http_port}")
        caller = Caller(rig.udp)
        await caller.start()
        call = await place_call(caller, user="301")
        for _ in range(1000):
            if any(req.startswith(b"BYE ") for req in caller.requests):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("no BYE after the scripted hang_up")
        await call.rtp.stop()
        await rig.idle()
        metrics = (await rig.http_get("/metrics")).decode()
        assert 'calls_ended_total{result="agent_hangup",route="*",trunk="local"} 1.0' in metrics
        caller.close()

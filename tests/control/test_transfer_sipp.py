"""Blind transfer with SIPp as the caller (the transferee): asked by the operator API, by the
caller's DTMF and by the agent's MCP tool. SIPp checks the dialog (REFER answered 202, each
NOTIFY answered 200, our BYE after a 2xx sipfrag); its message trace shows what the REFER
carried; the API and metrics show the outcome."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client

from gateway.config import McpConfig, Route, Secret
from tests.edge.harness import Rig, make_config, running
from tests.integration.sipp import SCENARIOS, SIPP, SippRun, run_sipp

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SIPP is None, reason="sipp is not installed (apt-get install sip-tester)"),
]

TOKEN = secrets.token_urlsafe(16)
OPERATOR = "sip:operator@127.0.0.1:5999"
SALES = "tel:+4930555123"


def config(emu: Any) -> Any:
    route = Route(match="*", transfer_targets=(("operator", OPERATOR), ("sales", SALES)),
                  dtmf_transfer=(("0", "operator"),))
    return replace(make_config(emu), routes=(route,), api_token=Secret(TOKEN),
                   mcp=McpConfig(public_url="http://127.0.0.1:9"))


@asynccontextmanager
async def gateway() -> AsyncIterator[tuple[Rig, httpx.AsyncClient]]:
    async with running(config) as rig:
        tools = rig.gateway.registry.ctx.mcp  # type: ignore[union-attr]
        assert tools is not None
        tools.public_url = f"http://127.0.0.1:{rig.http_port}"
        async with httpx.AsyncClient(base_url=tools.public_url, timeout=5,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as api:
            yield rig, api


def caller(rig: Rig, scenario: str, tmp_path: Path, *, digit: str = "5",
           frag: str = "200 OK") -> asyncio.Task[SippRun]:
    return asyncio.create_task(run_sipp(scenario, rig.udp[1], tmp_path, timeout=30, extra=(
        "-set", "digit", digit, "-set", "frag", frag)))


async def answered_call(api: httpx.AsyncClient, sipp: asyncio.Task[SippRun]) -> dict[str, Any]:
    for _ in range(300):
        calls = (await api.get("/v1/calls")).json()["calls"]
        if calls and calls[0]["state"] == "answered":
            # SIPp's ACK and DTMF INFO follow at once: a REFER while SIPp still waits for its
            # INFO's 200 would be an unexpected message in its scenario.
            await asyncio.sleep(0.3)
            return calls[0]  # type: ignore[no-any-return]
        assert not sipp.done(), sipp.result().stderr if sipp.done() else ""
        await asyncio.sleep(0.05)
    raise AssertionError("the call was not answered")


def refer_sent(tmp_path: Path) -> str:
    """The REFER as SIPp received it, from its message trace."""
    text = (tmp_path / "messages.log").read_text(errors="replace")
    match = re.search(r"REFER sip:.*?(?:\r?\n\r?\n)", text, re.S)
    assert match, text[-2000:]
    return match.group(0)


async def metric(rig: Rig, line: str) -> bool:
    return line in (await rig.http_get("/metrics")).decode()


async def test_api_transfer_succeeds(tmp_path: Path) -> None:
    async with gateway() as (rig, api):
        sipp = caller(rig, "uac_transferee.xml", tmp_path)
        call = await answered_call(api, sipp)
        r = await api.post(f"/v1/calls/{call['id']}/transfer", json={"target": "premium"})
        assert r.status_code == 422 and "operator, sales" in r.json()["detail"]
        r = await api.post(f"/v1/calls/{call['id']}/transfer", json={"target": "operator"})
        assert r.status_code == 202, r.text
        assert r.json()["transfer"]["target"] == "operator"
        run = await sipp
        assert run.returncode == 0 and (run.successful, run.failed) == (1, 0), run.stderr
        refer = refer_sent(tmp_path)
        assert re.search(rf"^Refer-To:\s*<{re.escape(OPERATOR)}>", refer, re.M), refer
        assert re.search(r"^Referred-By:\s*<sip:\+4930123@", refer, re.M), refer
        await rig.idle()
        assert await metric(rig, 'calls_ended_total{result="transferred",route="*",'
                                 'trunk="local"} 1.0')
        assert await metric(rig, 'transfers_total{requested_by="api",result="transferred"} 1.0')


async def test_dtmf_transfer_succeeds(tmp_path: Path) -> None:
    async with gateway() as (rig, _):
        run = await caller(rig, "uac_transferee.xml", tmp_path, digit="0")
        assert run.returncode == 0 and run.successful == 1, run.stderr
        assert f"<{OPERATOR}>" in refer_sent(tmp_path)
        await rig.idle()
        assert await metric(rig, 'transfers_total{requested_by="dtmf",result="transferred"} 1.0')


async def test_failed_transfer_keeps_the_call(tmp_path: Path) -> None:
    async with gateway() as (rig, api):
        sipp = caller(rig, "uac_transferee_fails.xml", tmp_path, frag="486 Busy Here")
        call = await answered_call(api, sipp)
        assert (await api.post(f"/v1/calls/{call['id']}/transfer",
                               json={"target": "sales"})).status_code == 202
        for _ in range(100):
            seen = (await api.get(f"/v1/calls/{call['id']}")).json()
            if seen["transfer"]["state"] == "failed":
                break
            await asyncio.sleep(0.05)
        assert seen["state"] == "answered"  # still with the agent
        (gw_call,) = rig.gateway.registry.calls.values()  # type: ignore[union-attr]
        (attempt,) = gw_call.record.snapshot()["transfers"]
        assert (attempt["target"], attempt["outcome"], attempt["sip_status"]) == (
            "sales", "failed", 486)
        assert seen["transfer"] == {"target": "sales", "state": "failed", "sip_status": 486,
                                    "requested_by": "api", "result": "failed"}
        run = await sipp  # the caller hangs up itself 1.5 s later
        assert run.returncode == 0 and run.successful == 1, run.stderr
        assert f"<{SALES}>" in refer_sent(tmp_path)
        await rig.idle()
        assert await metric(rig, 'calls_ended_total{result="caller_bye",route="*",'
                                 'trunk="local"} 1.0')
        assert await metric(rig, 'transfers_total{requested_by="api",result="failed"} 1.0')


@pytest.mark.parametrize(("frag", "outcome"), [("200 OK", "transferred"),
                                               ("486 Busy Here", "still with you")])
async def test_agent_transfer_tool(tmp_path: Path, frag: str, outcome: str) -> None:
    scenario = "uac_transferee.xml" if frag.startswith("2") else "uac_transferee_fails.xml"
    async with gateway() as (rig, api):
        sipp = caller(rig, scenario, tmp_path, frag=frag)
        await answered_call(api, sipp)
        (gw_call,) = rig.gateway.registry.calls.values()  # type: ignore[union-attr]
        assert gw_call._grant is not None
        async with Client(gw_call._grant.url) as client:
            # Listed first, as Orga's cloud does when it connects: after a successful transfer
            # the call (and its URL) is gone, so the SDK could not look the tool up afterwards.
            assert "operator" in str((await client.list_tools()).tools[1].input_schema)
            result = await client.call_tool("transfer_call", {"target": "operator"})
        assert outcome in result.content[0].text, result
        assert result.is_error is False
        run = await sipp
        assert run.returncode == 0 and run.successful == 1, run.stderr
        await rig.idle()
        result_label = "transferred" if frag.startswith("2") else "failed"
        assert await metric(rig, f'transfers_total{{requested_by="agent",result="{result_label}"}}'
                                 ' 1.0')


async def test_refused_refer_keeps_the_call(tmp_path: Path) -> None:
    """The transferee answers the REFER itself with 403: no NOTIFY, the call stays with the
    agent, and the API shows the REFER's own status."""
    text = (SCENARIOS / "uac_transferee_fails.xml").read_text()
    head, _, rest = text.partition("      SIP/2.0 202 Accepted")
    after_202 = rest.split("  </send>\n", 1)[1]
    bye = after_202[after_202.index('  <pause milliseconds="1500"/>'):]
    scenario = tmp_path / "refuses_refer.xml"
    scenario.write_text((head + "      SIP/2.0 403 Forbidden" + rest.split("  </send>\n", 1)[0]
                         + "  </send>\n" + bye).replace('variables="digit,frag"',
                                                        'variables="digit"'))
    async with gateway() as (rig, api):
        sipp = asyncio.create_task(run_sipp(str(scenario), rig.udp[1], tmp_path, timeout=30,
                                            extra=("-set", "digit", "5")))
        call = await answered_call(api, sipp)
        r = await api.post(f"/v1/calls/{call['id']}/transfer", json={"target": "operator"})
        assert r.status_code == 202, r.text
        for _ in range(100):
            seen = (await api.get(f"/v1/calls/{call['id']}")).json()
            if seen["transfer"]["state"] == "failed":
                break
            await asyncio.sleep(0.05)
        assert seen["state"] == "answered"
        assert seen["transfer"]["result"] == "rejected" and seen["transfer"]["sip_status"] == 403
        run = await sipp
        assert run.returncode == 0 and run.successful == 1, run.stderr
        await rig.idle()
        assert await metric(rig, 'transfers_total{requested_by="api",result="rejected"} 1.0')

"""The operator API against a real gateway, emulator and a hand-written SIP caller: bearer
token, listing, JSON errors, and hang-up before and after the answer."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import httpx

from gateway.config import Config, Secret
from gateway.control.api import API_OFF
from gateway.emulator.server import Emulator
from tests.edge.harness import (
    Caller,
    Rig,
    final_for,
    make_config,
    place_call,
    running,
    sdp_offer,
)

TOKEN = "op-" + secrets.token_urlsafe(16)


@asynccontextmanager
async def rig_with_api(token: str | None = TOKEN) -> AsyncIterator[tuple[Rig, httpx.AsyncClient]]:
    def config(emu: Emulator) -> Config:
        return replace(make_config(emu), api_token=Secret(token) if token else None)

    async with running(config) as rig:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{rig.http_port}",
                                     headers=headers, timeout=5) as client:
            yield rig, client


async def test_without_a_token_the_api_is_off_and_health_stays_open() -> None:
    async with rig_with_api(None) as (_, client):
        r = await client.get("/v1/calls")
        assert r.status_code == 404 and r.json() == {"detail": API_OFF}
        assert (await client.post("/v1/calls/x/hangup")).status_code == 404
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200


async def test_token_is_required() -> None:
    async with rig_with_api() as (_, client):
        for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"},
                        {"Authorization": f"Basic {TOKEN}"}):
            r = await client.get("/v1/calls", headers=headers)
            assert r.status_code == 401, headers
            assert r.json()["detail"] and r.headers["www-authenticate"] == "Bearer"
        assert (await client.get("/v1/calls")).json() == {"calls": []}
        assert (await client.get("/metrics", headers={"Authorization": ""})).status_code == 200
        schema = (await client.get("/v1/openapi.json")).json()
        assert "/v1/calls/{call_id}/hangup" in schema["paths"]


async def test_list_get_errors_and_hang_up_after_answer() -> None:
    async with rig_with_api() as (rig, client):
        caller = Caller(rig.udp)
        await caller.start()
        call = await place_call(caller, user="4711")
        (listed,) = (await client.get("/v1/calls")).json()["calls"]
        assert listed["sip_call_id"] == call.call_id and listed["direction"] == "inbound"
        assert listed["callee"] == "4711" and listed["caller"] == "caller"
        assert listed["state"] == "answered" and listed["trunk"] == "local"
        assert listed["conversation_id"] and listed["route"] == "*"
        call_id = listed["id"]
        assert call_id.replace("-", "").replace("_", "").isalnum() and len(call_id) >= 16
        assert (await client.get(f"/v1/calls/{call_id}")).json()["id"] == call_id
        r = await client.get("/v1/calls/nope")
        assert r.status_code == 404 and "no active call" in r.json()["detail"]
        r = await client.post(f"/v1/calls/{call_id}/transfer", json={"target": ""})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "target"]
        r = await client.post(f"/v1/calls/{call_id}/hangup")
        assert r.status_code == 202 and r.json()["state"] == "ending"
        r = await client.post(f"/v1/calls/{call_id}/hangup")
        assert r.status_code in (404, 409)  # ending, or already gone
        for _ in range(100):
            if any(req.startswith(b"BYE ") for req in caller.requests):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("no BYE after the API hang-up")
        await call.rtp.stop()
        await rig.idle()
        metrics = (await client.get("/metrics")).text
        assert 'orga_gateway_calls_ended_total{result="api_hangup",route="*",trunk="local"} 1.0' \
            in metrics
        assert (await client.get("/v1/calls")).json() == {"calls": []}
        caller.close()


async def test_hang_up_while_ringing_declines_the_call() -> None:
    async with rig_with_api() as (rig, client):
        rig.emulator.faults.delay_s = 1.0  # keep the call in setup while we ask
        caller = Caller(rig.udp)
        await caller.start()
        uri = f"sip:100@{rig.udp[0]}:{rig.udp[1]}"
        data, _ = caller.request("INVITE", uri, call_id="ring-1@test", cseq=1, from_tag="f1",
                                 body=sdp_offer("127.0.0.1", 40000))
        caller.send(data)
        await caller.wait(lambda r: r.status == 180, 5)
        (listed,) = (await client.get("/v1/calls")).json()["calls"]
        assert listed["state"] == "ringing"
        assert (await client.post(f"/v1/calls/{listed['id']}/hangup")).status_code == 202
        final = await caller.wait(final_for("ring-1@test", 1), 5)
        assert final.status == 603
        await rig.idle()
        metrics = (await client.get("/metrics")).text
        assert 'calls_ended_total{result="api_hangup",route="*",trunk="local"} 1.0' in metrics
        caller.close()

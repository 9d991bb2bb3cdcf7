"""Outbound calls (`POST /v1/calls`) with SIPp as the callee: answered with audio (the
callee's 440 Hz reaches the AI, judged by the emulator's own analysis), busy, declined, and no
answer (our CANCEL after ring_timeout_s). SIPp checks our side of each dialog."""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import Secret
from tests.edge.harness import Rig, emulator_config, make_config, running, trunk
from tests.integration.pcap import speech_pcap
from tests.integration.sipp import SCENARIOS, SIPP, SippRun, free_port_block, run_sipp
from tests.probe.uas import ToneUas, UasBehaviour

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SIPP is None, reason="sipp is not installed (apt-get install sip-tester)"),
]

TOKEN = secrets.token_urlsafe(16)


@asynccontextmanager
async def gateway(sipp_port: int) -> AsyncIterator[tuple[Rig, httpx.AsyncClient]]:
    def config(emu: Any) -> Any:
        carrier = replace(trunk("carrier", "127.0.0.0/8"),
                          outbound_proxy=f"sip:127.0.0.1:{sipp_port};transport=udp",
                          from_user="+4930999")
        return replace(make_config(emu, trunks=(carrier, trunk("pbx", "10.0.0.0/8"))),
                       api_token=Secret(TOKEN))

    async with running(config) as rig, httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{rig.http_port}", timeout=5,
            headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        yield rig, api


def sipp_port() -> int:
    """A free block at a random place: other test runs on this machine take the first free
    blocks, and our INVITE must reach our SIPp, not theirs."""
    start = 20000 + secrets.randbelow(1500) * 6
    return free_port_block(6, start=start, stop=start + 600)


def callee(scenario: str, tmp_path: Path, base: int, *extra: str) -> asyncio.Task[SippRun]:
    return asyncio.create_task(run_sipp(scenario, 9, tmp_path, timeout=30, base=base,
                                        extra=extra))


async def listening(sipp: asyncio.Task[SippRun], port: int) -> None:
    """Wait until SIPp holds its SIP port (bind fails for us), or fail with its error."""
    for _ in range(300):
        if sipp.done():
            raise AssertionError(f"SIPp ended early: {sipp.result().stderr}")
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return
        finally:
            probe.close()
        await asyncio.sleep(0.01)
    raise AssertionError("SIPp did not bind its port")


async def ended(rig: Rig, result: str) -> None:
    await rig.idle(10)
    metrics = (await rig.http_get("/metrics")).decode()
    line = f'calls_ended_total{{result="{result}",route="outbound",trunk="carrier"}} 1.0'
    assert line in metrics, [m for m in metrics.splitlines() if "calls_ended" in m]


async def test_answered_call_bridges_audio(tmp_path: Path) -> None:
    speech_pcap(tmp_path / "audio.pcap", "PCMU", freq_hz=440.0, talk_s=1.0, quiet_s=2.0)
    base = sipp_port()
    async with gateway(base) as (rig, api):
        sipp = callee("uas_answer.xml", tmp_path, base)
        await listening(sipp, base)
        r = await api.post("/v1/calls", json={"to": "+4930123456", "trunk": "carrier",
                                              "instructions": "Remind them of the dentist."})
        assert r.status_code == 201, r.text
        call = r.json()
        assert call["direction"] == "outbound" and call["callee"] == "+4930123456"
        assert call["caller"] == "+4930999" and call["trunk"] == "carrier"
        for _ in range(200):
            state = (await api.get(f"/v1/calls/{call['id']}")).json()
            if state["state"] == "answered":
                break
            await asyncio.sleep(0.05)
        assert state["state"] == "answered" and state["sip_call_id"]
        # The callee's pcap utterance reaches the AI: the emulator hears 440 Hz.
        for _ in range(150):
            sessions = rig.emulator.state()["sessions"]
            if sessions and sessions[0]["utterances"]:
                break
            await asyncio.sleep(0.05)
        (session,) = rig.emulator.state()["sessions"]
        assert session["params"]["instructions"] == "Remind them of the dentist."
        (utterance,) = session["utterances"]
        assert utterance["dominant_hz"] == pytest.approx(440, abs=10)
        assert (await api.post(f"/v1/calls/{call['id']}/hangup")).status_code == 202
        run = await sipp
        assert run.returncode == 0 and (run.successful, run.failed) == (1, 0), run.stderr
        gw_rtp = [m.first_line for m in run.messages]
        assert gw_rtp[0].startswith("INVITE sip:+4930123456@127.0.0.1"), gw_rtp
        await ended(rig, "api_hangup")


@pytest.mark.parametrize(("status", "reason", "result"), [
    ("486", "Busy Here", "busy"), ("603", "Decline", "declined"),
    ("404", "Not Found", "outbound_failed")])
async def test_refused(tmp_path: Path, status: str, reason: str, result: str) -> None:
    base = sipp_port()
    async with gateway(base) as (rig, api):
        template = (SCENARIOS / "uas_refuse.xml").read_text()
        scenario = tmp_path / "refuse.xml"
        scenario.write_text(template.replace("STATUS REASON", f"{status} {reason}"))
        sipp = callee(str(scenario), tmp_path, base)
        await listening(sipp, base)
        r = await api.post("/v1/calls", json={"to": "sip:bob@127.0.0.1", "trunk": "carrier"})
        assert r.status_code == 201, r.text
        run = await sipp
        assert run.returncode == 0 and run.successful == 1, run.stderr
        await ended(rig, result)


async def test_no_answer_is_cancelled(tmp_path: Path) -> None:
    base = sipp_port()
    async with gateway(base) as (rig, api):
        sipp = callee("uas_no_answer.xml", tmp_path, base)
        await listening(sipp, base)
        r = await api.post("/v1/calls", json={"to": "+4930123456", "trunk": "carrier",
                                              "ring_timeout_s": 1.5})
        assert r.status_code == 201, r.text
        for _ in range(200):
            if (await api.get(f"/v1/calls/{r.json()['id']}")).json()["state"] == "ringing":
                break
            await asyncio.sleep(0.02)
        assert (await api.get(f"/v1/calls/{r.json()['id']}")).json()["state"] == "ringing"
        run = await sipp
        assert run.returncode == 0 and run.successful == 1, run.stderr
        assert any(m.first_line.startswith("CANCEL ") for m in run.messages)
        await ended(rig, "no_answer")


async def test_bad_requests() -> None:
    async with gateway(9) as (_, api):
        r = await api.post("/v1/calls", json={"to": "0301234", "trunk": "carrier"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "to"]
        r = await api.post("/v1/calls", json={"to": "+4930123456", "trunk": "nope"})
        assert r.status_code == 422 and "no trunk is named 'nope'" in r.json()["detail"]
        r = await api.post("/v1/calls", json={"to": "+4930123456", "trunk": "pbx"})
        assert r.status_code == 422 and "outbound_proxy" in r.json()["detail"]
        r = await api.post("/v1/calls", json={"to": "+4930123456", "trunk": "carrier",
                                              "temperature": 3})
        assert r.status_code == 422
        assert (await api.post("/v1/calls", headers={"Authorization": ""},
                               json={"to": "+4930123456", "trunk": "carrier"})).status_code == 401


async def test_ai_audio_reaches_the_callee() -> None:
    """The other direction by content: a callee that answers, hears the AI's greeting as an
    utterance (the emulator's own rule) and only then plays a 1 kHz tone, which the AI hears."""
    phone = ToneUas(UasBehaviour(tone_hz=1000.0, tone_s=1.0, max_replies=1))
    await phone.start()
    try:
        port = int(phone.uri().rsplit(":", 1)[1])
        async with running(lambda emu: _callee_config(emu, port),
                           emulator_config(greeting="Hello, this is your reminder.")) as rig, \
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{rig.http_port}",
                                  headers={"Authorization": f"Bearer {TOKEN}"}) as api:
            r = await api.post("/v1/calls", json={"to": "sip:uas@127.0.0.1", "trunk": "carrier"})
            assert r.status_code == 201, r.text
            for _ in range(300):
                sessions = rig.emulator.state()["sessions"]
                if phone.log.utterances and sessions and sessions[0]["utterances"]:
                    break
                await asyncio.sleep(0.05)
            assert phone.log.utterances, "the callee heard nothing from the AI"
            (heard,) = rig.emulator.state()["sessions"][0]["utterances"]
            assert heard["dominant_hz"] == pytest.approx(1000, abs=15)
            assert (await api.post(f"/v1/calls/{r.json()['id']}/hangup")).status_code == 202
            await rig.idle(10)
        assert phone.log.byes == 1
    finally:
        await phone.stop()


def _callee_config(emu: Any, port: int) -> Any:
    carrier = replace(trunk("carrier", "127.0.0.0/8"),
                      outbound_proxy=f"sip:127.0.0.1:{port};transport=udp")
    return replace(make_config(emu, trunks=(carrier,)), api_token=Secret(TOKEN))


@pytest.mark.parametrize(("password", "answered"), [("pw-secret", True), ("wrong", False)])
async def test_digest_challenge_is_answered(tmp_path: Path, password: str, answered: bool
                                            ) -> None:
    """A far end that challenges our INVITE (401): we retry once with Authorization, which
    SIPp verifies; a wrong password gets 403 and the call ends as outbound_failed."""
    base = sipp_port()

    def config(emu: Any) -> Any:
        carrier = replace(trunk("carrier", "127.0.0.0/8"),
                          outbound_proxy=f"sip:127.0.0.1:{base};transport=udp",
                          outbound_username="gw", outbound_password=Secret(password))
        return replace(make_config(emu, trunks=(carrier,)), api_token=Secret(TOKEN))

    async with running(config) as rig, httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{rig.http_port}", timeout=5,
            headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        sipp = callee("uas_digest.xml", tmp_path, base)
        await listening(sipp, base)
        r = await api.post("/v1/calls", json={"to": "+4930123456", "trunk": "carrier"})
        assert r.status_code == 201, r.text
        if answered:
            for _ in range(200):
                if (await api.get(f"/v1/calls/{r.json()['id']}")).json().get("state") == "answered":
                    break
                await asyncio.sleep(0.05)
            assert (await api.post(f"/v1/calls/{r.json()['id']}/hangup")).status_code == 202
        run = await sipp
        assert run.returncode == 0 and run.successful == 1, run.stderr
        sent = [m.first_line for m in run.messages if m.direction == "sent"]
        assert sent[0].startswith("SIP/2.0 401")
        assert sent[1].startswith("SIP/2.0 200" if answered else "SIP/2.0 403"), sent
        await ended(rig, "api_hangup" if answered else "outbound_failed")


async def test_api_hangup_while_ringing_cancels(tmp_path: Path) -> None:
    base = sipp_port()
    async with gateway(base) as (rig, api):
        sipp = callee("uas_no_answer.xml", tmp_path, base)
        await listening(sipp, base)
        r = await api.post("/v1/calls", json={"to": "+4930123456", "trunk": "carrier"})
        assert r.status_code == 201, r.text
        for _ in range(100):
            if (await api.get(f"/v1/calls/{r.json()['id']}")).json().get("state") == "ringing":
                break
            await asyncio.sleep(0.05)
        assert (await api.post(f"/v1/calls/{r.json()['id']}/hangup")).status_code == 202
        run = await sipp
        assert run.returncode == 0 and run.successful == 1, run.stderr
        assert any(m.first_line.startswith("CANCEL ") for m in run.messages)
        await ended(rig, "api_hangup")

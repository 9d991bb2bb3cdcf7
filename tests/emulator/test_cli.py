"""The `emulator` subcommand as a real process on 127.0.0.1 with a system-chosen port."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import httpx

KEY = "sk_orga_ai_cli_test"


async def test_emulator_process_serves_and_applies_fault_flags() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "emulator", "--listen", "127.0.0.1:0",
        "--api-key", KEY, "--fail-calls", "1", "--fail-status", "502", "--token-ttl", "60",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": "."},
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert line.startswith("orga emulator listening on http://127.0.0.1:")
        base = line.split()[-1]
        async with httpx.AsyncClient(base_url=base) as client:
            headers = {"Authorization": f"Bearer {KEY}"}
            secret = (await client.post("/v1/realtime/client-secrets", headers=headers)).json()
            assert "ephemeral_token" in secret
            state = (await client.get("/_emulator/state", headers=headers)).json()
            assert state["faults"]["fail_calls"] == 1 and state["faults"]["fail_status"] == 502
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, stderr.decode()
    assert KEY not in stderr.decode()


async def test_emulator_requires_a_key() -> None:
    env = {k: v for k, v in os.environ.items() if k != "ORGA_API_KEY"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "emulator", "--listen", "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**env, "PYTHONPATH": "."},
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode != 0 and b"--api-key" in stderr

"""The operator's path: emulator and gateway as real processes started by the CLI, one SIPp call.

`orga-sip-gateway emulator --listen 127.0.0.1:0` and `orga-sip-gateway run --config FILE` (a TOML
file written here; the API key only in `ORGA_API_KEY`), then a SIPp call with a 440 Hz
utterance. Checked from outside only, as an operator would: SIPp's view, `/metrics` and `/calls`
during and after the call, the emulator's control endpoint, the daemon's log lines (per-call
context, no secrets), and a clean exit 0 on SIGTERM (drain) with nothing active.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
from pathlib import Path

import pytest

from tests.integration.pcap import speech_pcap
from tests.integration.sipp import SIPP, run_sipp
from tests.integration.stack import (
    API_KEY,
    free_sip_port,
    free_udp_range,
    http_get,
    parse_metrics,
    value_of,
    wait_until,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SIPP is None, reason="sipp is not installed (apt-get install sip-tester)"),
]

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """\
[sip]
bind = "127.0.0.1"
port = {sip_port}
transports = ["udp", "tcp"]

[rtp]
bind = "127.0.0.1"
port_min = {rtp_min}
port_max = {rtp_max}
inactivity_timeout_s = 10.0

[orga]
base_url = "{orga_url}"
ice_addresses = ["127.0.0.1"]
setup_timeout_s = 10.0
instructions = "Answer {{caller}}."

[http]
listen = "127.0.0.1:0"

[limits]
max_calls = 4
max_call_duration_s = 60.0
drain_timeout_s = 5.0
overload_loop_lag_ms = 1000.0
overload_cpu_percent = 0.0

[[trunks]]
name = "loopback"
allow = ["127.0.0.0/8"]

[[routes]]
match = "+4930*"
"""


class Process:
    """A child process whose stderr (or stdout) lines are collected as they come."""

    def __init__(self, proc: asyncio.subprocess.Process, stream: asyncio.StreamReader) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read(stream))

    @classmethod
    async def start(cls, *args: str, env: dict[str, str] | None = None,
                    watch: str = "stderr") -> Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", *args, cwd=ROOT, env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE if watch == "stderr" else asyncio.subprocess.STDOUT,
        )
        stream = proc.stderr if watch == "stderr" else proc.stdout
        assert stream is not None
        return cls(proc, stream)

    async def _read(self, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def find(self, pattern: str) -> re.Match[str] | None:
        regex = re.compile(pattern)
        return next((m for m in map(regex.search, self.lines) if m), None)

    async def wait_for_line(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        await wait_until(lambda: self.find(pattern) is not None or self.proc.returncode
                         is not None, timeout, f"a line matching {pattern!r}")
        match = self.find(pattern)
        assert match is not None, "\n".join(self.lines[-30:])
        return match

    async def stop(self, sig: int, timeout: float = 15.0) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        return code


async def test_cli_processes_carry_a_call(tmp_path: Path) -> None:
    import os

    emulator = await Process.start("emulator", "--listen", "127.0.0.1:0", "--api-key", API_KEY,
                                   watch="stdout")
    gateway: Process | None = None
    try:
        orga_url = (await emulator.wait_for_line(r"listening on (http://\S+)")).group(1)
        sip_port = free_sip_port()
        rtp_min, rtp_max = free_udp_range(10)
        config = tmp_path / "gateway.toml"
        config.write_text(CONFIG.format(sip_port=sip_port, rtp_min=rtp_min, rtp_max=rtp_max,
                                        orga_url=orga_url))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ORGA_", "NOTIFY_"))}
        gateway = await Process.start("run", "--config", str(config),
                                      env={**env, "ORGA_API_KEY": API_KEY})
        http_port = int((await gateway.wait_for_line(r"HTTP endpoint on [\d.]+:(\d+)")).group(1))
        await gateway.wait_for_line(r"gateway ready")
        assert (await http_get(http_port, "/ready"))[0] == 200

        speech_pcap(tmp_path / "audio.pcap")
        sipp = asyncio.create_task(run_sipp(
            "uac_pcap_call.xml", sip_port, tmp_path,
            extra=("-set", "pt", "0", "-set", "codec", "PCMU", "-d", "4500")))
        await wait_until(lambda: gateway.find("assistant text received") is not None
                         or sipp.done(), 10, "the assistant's reply in the gateway's log")
        _, body = await http_get(http_port, "/metrics")
        during = parse_metrics(body.decode())
        _, calls = await http_get(http_port, "/calls")
        run = await sipp
        assert run.returncode == 0, run.stderr
        assert (run.successful, run.failed) == (1, 0)

        # During the call: the call and its conversation series, under the route's pattern.
        (call,) = json.loads(calls)
        cid = call["conversation_id"]
        assert call["route"] == "+4930*" and call["packets_in"] > 0 and call["packets_out"] > 0
        assert value_of(during, "orga_gateway_active_calls") == 1
        assert value_of(during, "orga_gateway_conversation_turns_total", conversation_id=cid,
                        route="+4930*") == 1

        # The emulator (its control endpoint, the key as Bearer) heard 440 Hz.
        reader, writer = await asyncio.open_connection("127.0.0.1", int(orga_url.rsplit(":", 1)[1]))
        writer.write(f"GET /_emulator/state HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     f"{API_KEY}\r\nConnection: close\r\n\r\n".encode())
        raw = await reader.read()
        writer.close()
        state = json.loads(raw.partition(b"\r\n\r\n")[2])
        (session,) = state["sessions"]
        assert session["conversation_id"] == cid
        assert [round(u["dominant_hz"] / 10) * 10 for u in session["utterances"]] == [440]
        assert session["params"]["instructions"] == "Answer +4930111."

        # After it: aggregates only.
        await wait_until(lambda: gateway.find("call ended: caller_bye") is not None, 5,
                         "the call's end in the log")
        _, body = await http_get(http_port, "/metrics")
        after = parse_metrics(body.decode())
        assert value_of(after, "orga_gateway_calls_ended_total", result="caller_bye",
                        route="+4930*", trunk="loopback") == 1
        assert value_of(after, "orga_gateway_active_calls") == 0
        assert not [s for s in after if "conversation_id" in s.labels]

        # SIGTERM: drain (nothing active) and exit 0.
        assert await gateway.stop(signal.SIGTERM) == 0
        log = "\n".join(gateway.lines)
        # Privacy by default: that a transcript came, not what it says (item 9 of issue 13).
        said = gateway.find(r"INFO gateway\.call: caller transcript received \(\d+ characters\).*")
        assert said is not None and f"conversation_id={cid}" in said.group(0), log
        assert "hertz" not in log and "caller said" not in log and "assistant said" not in log
        assert "call_id=" in said.group(0)
        assert "SIGTERM: draining" in log
        assert API_KEY not in log
        assert all(len(line) < 2000 for line in gateway.lines)  # one record, one line
    finally:
        if gateway is not None:
            await gateway.stop(signal.SIGINT)
        assert await emulator.stop(signal.SIGTERM) == 0

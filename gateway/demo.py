"""`orga-sip-gateway demo`: the whole product on loopback in one command (`make demo`).

Starts the built-in Orga emulator and the gateway (with `config/demo.toml`) as separate
processes — exactly as an operator would run them — waits until both are ready, places one call
through the gateway with the built-in test phone, prints the phone's report and the gateway's
own metrics for the call, and stops both (the gateway with SIGTERM, i.e. a drain). The exit code
is the probe's: 0 when the call connected and the agent's reply was heard.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from gateway.config import ConfigError, load_config

READY_TIMEOUT_S = 30.0
DEMO_NUMBER = "800"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="config/demo.toml", metavar="FILE",
                        help="gateway config to run (default: config/demo.toml)")
    parser.add_argument("--seconds", type=float, default=8.0,
                        help="how long the test call lasts (default 8)")


def main(args: argparse.Namespace) -> int:
    api_key = "sk_orga_ai_demo_" + secrets.token_hex(8)
    env = {**os.environ, "ORGA_API_KEY": api_key}
    env.pop("ORGA_API_KEY_FILE", None)
    try:
        config = load_config(args.config, env)
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 2
    base = urlsplit(config.orga.base_url)
    if base.hostname not in ("127.0.0.1", "localhost") or base.port is None:
        print(f"{args.config}: orga.base_url must be a loopback emulator address for the demo",
              file=sys.stderr)
        return 2
    logs = Path(tempfile.mkdtemp(prefix="orga-sip-gateway-demo-"))
    python = [sys.executable, "-m", "gateway"]
    print(f"demo: logs in {logs}")
    emulator = _spawn([*python, "emulator", "--listen", f"127.0.0.1:{base.port}",
                       "--api-key", api_key], env, logs / "emulator.log")
    gateway = None
    try:
        _wait_http(f"http://127.0.0.1:{base.port}/v1/realtime/ice-config", emulator, "emulator")
        print(f"demo: Orga emulator up on 127.0.0.1:{base.port}")
        gateway = _spawn([*python, "run", "--config", args.config], env, logs / "gateway.log")
        _wait_http(f"http://{config.http.listen}/ready", gateway, "gateway")
        print(f"demo: gateway up, SIP on {config.sip.bind}:{config.sip.port}, "
              f"metrics on http://{config.http.listen}/metrics")
        target = f"sip:{DEMO_NUMBER}@{config.sip.bind}:{config.sip.port}"
        print(f"demo: calling {target} with the built-in test phone ...\n")
        code = _call(target, args.seconds)
        print()
        _print_metrics(f"http://{config.http.listen}/metrics")
        return code
    except RuntimeError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        for name in ("emulator.log", "gateway.log"):
            path = logs / name
            if path.exists():
                print(f"--- last lines of {path}", file=sys.stderr)
                print("\n".join(path.read_text().splitlines()[-15:]), file=sys.stderr)
        return 2
    finally:
        for proc in (gateway, emulator):
            _stop(proc)
        print(f"demo: stopped; logs in {logs}")


def _spawn(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log = log_path.open("wb")
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait_http(url: str, proc: subprocess.Popen[bytes], name: str) -> None:
    """Wait until `url` answers at all (any status) while `proc` is alive."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with code {proc.returncode} while starting")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{name} not ready after {READY_TIMEOUT_S:.0f} s")


def _call(target: str, seconds: float) -> int:
    from gateway.probe import ProbeOptions, format_text, place_call

    report = asyncio.run(place_call(target, ProbeOptions(seconds=seconds)))
    print(format_text(report))
    return report.exit_code


def _print_metrics(url: str) -> None:
    wanted = ("orga_gateway_calls_ended_total", "orga_gateway_call_setup_seconds_sum",
              "orga_gateway_turn_latency_seconds_sum", "orga_gateway_rtp_packets_total",
              "orga_gateway_conversation_text_events_total")
    try:
        text = httpx.get(url, timeout=2.0).text
    except httpx.HTTPError as exc:
        print(f"demo: could not read metrics: {exc}")
        return
    print("gateway metrics for the call:")
    for line in text.splitlines():
        if line.startswith(wanted):
            print(f"  {line}")


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)  # the gateway drains (no calls left: it stops at once)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

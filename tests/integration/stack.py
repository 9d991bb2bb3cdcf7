"""The gateway and the Orga emulator running together on loopback, for end-to-end tests.

`Stack` starts the built-in emulator and a `Gateway` in this process, with a config built here:
SIP on a runtime-chosen free port (UDP and TCP), RTP on a small free range, HTTP on an ephemeral
port, `ice_addresses = ["127.0.0.1"]`, short timeouts, the loopback trunk and one `*` route. Tests
read the gateway's own state (registry, port pool, metrics over HTTP) and the emulator's state,
and `assert_clean()` checks that a finished call left nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import random
import re
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from gateway.app import Gateway
from gateway.config import (
    Config,
    HttpConfig,
    LimitsConfig,
    OrgaConfig,
    PrivacyConfig,
    RtpConfig,
    Secret,
    SecurityConfig,
    SipConfig,
    TrunkConfig,
)
from gateway.emulator.agent import AgentSettings
from gateway.emulator.server import Emulator, EmulatorConfig

API_KEY = "sk_orga_ai_e2e_key_0123456789"
# Overload protection refuses calls when this machine is busy, which a test cannot control:
# off in test configs (tests/integration/test_overload.py turns it on on purpose).
NO_OVERLOAD = {"overload_loop_lag_ms": 1000.0, "overload_cpu_percent": 0.0}
NO_OVERLOAD_TOML = "overload_loop_lag_ms = 1000.0\noverload_cpu_percent = 0.0\n"
LOOPBACK = "127.0.0.1"


def free_sip_port() -> int:
    """A port free for both UDP and TCP on loopback (the gateway binds both to one number)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((LOOPBACK, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((LOOPBACK, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both UDP and TCP")


def free_udp_range(count: int, low: int = 30000, high: int = 59000) -> tuple[int, int]:
    """`count` consecutive UDP ports, even first, all bindable now (random start: other test
    runs share this machine)."""
    for _ in range(200):
        base = random.randrange(low, high - count) & ~1
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind((LOOPBACK, port))
            return base, base + count - 1
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free UDP port range")


def e2e_config(orga_url: str, *, max_calls: int = 4, sip_port: int | None = None,
               rtp: dict[str, Any] | None = None, orga: dict[str, Any] | None = None,
               limits: dict[str, Any] | None = None, sip: dict[str, Any] | None = None,
               security: dict[str, Any] | None = None,
               trunks: tuple[TrunkConfig, ...] | None = None,
               privacy: dict[str, Any] | None = None, **whole: Any) -> Config:
    """A loopback config with short timeouts; override sections with keyword dicts, or give
    whole `Config` fields (`webhooks=`, `recording=`, `routes=`, `webhook_secret=`)."""
    port_min, port_max = free_udp_range(2 * max_calls + 2)
    return Config(
        sip=SipConfig(**{"bind": LOOPBACK, "port": sip_port or free_sip_port(),
                         "transports": ("udp", "tcp"), **(sip or {})}),
        rtp=RtpConfig(**{"bind": LOOPBACK, "port_min": port_min, "port_max": port_max,
                         "inactivity_timeout_s": 10.0, **(rtp or {})}),
        orga=OrgaConfig(**{"base_url": orga_url, "ice_addresses": (LOOPBACK,),
                           "request_timeout_s": 5.0, "setup_timeout_s": 10.0,
                           "instructions": "Answer {caller}, who dialed {callee}.",
                           **(orga or {})}),
        http=HttpConfig(listen=f"{LOOPBACK}:0"),
        limits=LimitsConfig(**{"max_calls": max_calls, "max_call_duration_s": 60.0,
                               **NO_OVERLOAD,
                               "drain_timeout_s": 5.0, **(limits or {})}),
        # One source (SIPp on 127.0.0.1) places every call: lift the per-source INVITE limits.
        security=SecurityConfig(**{"invite_rate_per_source": 100.0,
                                   "invite_burst_per_source": 100,
                                   "request_rate_per_source": 1000.0,
                                   "request_burst_per_source": 1000,
                                   "calls_per_second": 100.0, "calls_burst": 100,
                                   **(security or {})}),
        **({"trunks": trunks} if trunks is not None else {}),
        privacy=PrivacyConfig(**(privacy or {})),
        api_key=Secret(API_KEY),
        **whole,
    )


def emulator_config(**agent: Any) -> EmulatorConfig:
    # The audio gate (on by default) makes the emulator ignore caller audio until our
    # session.update arrives, so every call that is heard also proves that update was sent.
    return EmulatorConfig(api_keys=(API_KEY,), agent=AgentSettings(**agent))


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0,
                     what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


async def http_get(port: int, path: str,
                   headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}\r\n{extra}Connection: close\r\n"
                 "\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse_metrics(text: str) -> list[Sample]:
    return [Sample(s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(text) for s in family.samples]


def value_of(samples: list[Sample], name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels` (0 if none)."""
    return sum(s.value for s in samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


class EmulatorProcess:
    """`orga-sip-gateway emulator` in its own process (audio gate on), read over its control
    endpoint: for load, where one event loop for both ends would measure itself."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.base_url = ""

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "emulator", "--listen", f"{LOOPBACK}:0",
            "--api-key", API_KEY,
            "--log-level", os.environ.get("E2E_EMULATOR_LOG", "WARNING"),
            cwd=Path(__file__).resolve().parents[2], stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE)
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        match = re.search(rb"listening on (http://\S+)", line)
        assert match is not None, line
        self.base_url = match.group(1).decode()

    async def state(self) -> dict[str, Any]:
        port = int(self.base_url.rsplit(":", 1)[1])
        status, body = await http_get(port, "/_emulator/state",
                                      headers={"Authorization": f"Bearer {API_KEY}"})
        assert status == 200
        decoded: dict[str, Any] = json.loads(body)
        return decoded

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class Stack:
    """Emulator + gateway in this event loop (or the emulator in its own process with
    `emulator_process=True`). `await start()`, `await stop()`."""

    def __init__(self, *, port_quarantine_s: float = 0.3, emulator: EmulatorConfig | None = None,
                 emulator_process: bool = False, **config: Any) -> None:
        self.emulator = Emulator(emulator or emulator_config())
        self.emulator_proc = EmulatorProcess() if emulator_process else None
        self._config_kwargs = config
        self._quarantine = port_quarantine_s
        self.gateway: Gateway | None = None
        self.baseline_tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> Stack:
        if self.emulator_proc is not None:
            await self.emulator_proc.start()
            orga_url = self.emulator_proc.base_url
        else:
            await self.emulator.start()
            orga_url = self.emulator.base_url
        config = e2e_config(orga_url, **self._config_kwargs)
        self.gateway = Gateway(config, port_quarantine_s=self._quarantine)
        await self.gateway.start()
        self.baseline_tasks = set(asyncio.all_tasks())
        return self

    async def stop(self) -> None:
        if self.gateway is not None:
            await self.gateway.stop()
        if self.emulator_proc is not None:
            await self.emulator_proc.stop()
        else:
            await self.emulator.stop()

    # --- reading state --------------------------------------------------------------------
    @property
    def gw(self) -> Gateway:
        assert self.gateway is not None
        return self.gateway

    @property
    def sip_port(self) -> int:
        return self.gw.config.sip.port

    @property
    def http_port(self) -> int:
        assert self.gw.http is not None
        return self.gw.http.port

    async def metrics(self) -> list[Sample]:
        status, body = await http_get(self.http_port, "/metrics")
        assert status == 200
        return parse_metrics(body.decode())

    async def calls(self) -> list[dict[str, Any]]:
        status, body = await http_get(self.http_port, "/calls")
        assert status == 200
        decoded = json.loads(body)
        assert isinstance(decoded, list)
        return decoded

    def set_faults(self, **faults: Any) -> None:
        self.emulator.faults.update(faults)

    async def emulator_state(self) -> dict[str, Any]:
        if self.emulator_proc is not None:
            return await self.emulator_proc.state()
        return self.emulator.state()

    def emulator_sessions(self) -> list[dict[str, Any]]:
        sessions: list[dict[str, Any]] = self.emulator.state()["sessions"]
        return sessions

    def stray_tasks(self) -> list[asyncio.Task[Any]]:
        """Tasks started since `start()` that are still pending: the calls' own, their RTP
        watchdogs and pumps, aiortc's and aioice's per-peer tasks (ours and the emulator's).
        Not counted: the test's own task. (uvicorn keeps the emulator's idle keep-alive
        connections, which httpx pools across calls on purpose, without a task.)"""
        current = asyncio.current_task()
        return [t for t in asyncio.all_tasks()
                if t not in self.baseline_tasks and t is not current and not t.done()]

    async def assert_clean(self, timeout: float = 5.0) -> None:
        """Nothing of any call is left: registry, ports (after quarantine), tasks, sessions."""
        gw = self.gw
        assert gw.registry is not None
        await wait_until(lambda: not gw.registry.calls, timeout, "the registry to empty")  # type: ignore[union-attr]
        assert gw.ports.in_use_count == 0
        await wait_until(lambda: gw.ports.free_count == gw.ports.capacity, timeout,
                         "the port pool to be full again after quarantine")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (await self.emulator_state())["sessions_active"]:
            assert loop.time() < deadline, "the emulator's sessions did not end"
            await asyncio.sleep(0.05)
        await wait_until(lambda: not self.stray_tasks(), timeout,
                         f"call tasks to finish: {self.stray_tasks()}")
        samples = await self.metrics()
        assert value_of(samples, "orga_gateway_active_calls") == 0
        assert value_of(samples, "orga_gateway_rtp_ports_free") == gw.ports.capacity
        assert not [s for s in samples if "conversation_id" in s.labels]
        assert await self.calls() == []


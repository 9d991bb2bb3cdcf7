"""Several gateway workers behind the real Kamailio, as `deploy/kamailio/` ships it.

`Worker` is `orga-sip-gateway run --config FILE --worker N` in its own process: all workers share
one config file with `[workers] count`, and each derives its own SIP port, RTP slice and HTTP
port from it, as the systemd template `orga-sip-gateway@N` runs them. `Balancer` is
`kamailio -f deploy/kamailio/kamailio.cfg` started with the two defines the file takes
(`LISTEN`, `DISPATCHER_LIST`), in the foreground, logging to stderr.
Tests read the workers from outside, as an operator would: /metrics, /ready, the log, the exit
code.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tomllib
import uuid
from pathlib import Path

from tests.integration.stack import (
    API_KEY,
    LOOPBACK,
    NO_OVERLOAD_TOML,
    Sample,
    free_sip_port,
    free_udp_range,
    http_get,
    parse_metrics,
    value_of,
    wait_until,
)
from tests.integration.test_e2e_cli import Process

ROOT = Path(__file__).resolve().parents[2]
KAMAILIO = shutil.which("kamailio") or next(
    (p for p in ("/usr/sbin/kamailio",) if os.access(p, os.X_OK)), None)
KAMAILIO_CFG = ROOT / "deploy" / "kamailio" / "kamailio.cfg"

WORKER_CONFIG = """\
[sip]
bind = "127.0.0.1"
port = {sip_port}
transports = ["udp"]

[workers]
count = {count}

[rtp]
bind = "127.0.0.1"
port_min = {rtp_min}
port_max = {rtp_max}
inactivity_timeout_s = 15.0

[orga]
base_url = "{orga_url}"
ice_addresses = ["127.0.0.1"]
setup_timeout_s = 15.0

[http]
listen = "127.0.0.1:0"

[limits]
max_calls = {max_calls}
max_call_duration_s = 120.0
drain_timeout_s = 60.0
{no_overload}
[[trunks]]
name = "balancer"
allow = ["127.0.0.0/8"]

[[routes]]
match = "+4930*"
"""


def shared_config(workdir: Path, orga_url: str, count: int, *, max_calls: int = 8) -> Path:
    """One config for `count` workers: `count` consecutive free SIP ports, an RTP range that
    `count` slices of `max_calls` calls fit in, ephemeral HTTP ports."""
    rtp_min, rtp_max = free_udp_range(count * (2 * max_calls + 2))  # from 30000 up
    sip_port = free_udp_range(count, low=20000, high=29000)[0]  # below: never in the RTP range
    path = workdir / "gateway.toml"
    path.write_text(WORKER_CONFIG.format(
        sip_port=sip_port, count=count, rtp_min=rtp_min, rtp_max=rtp_max, orga_url=orga_url,
        max_calls=max_calls, no_overload=NO_OVERLOAD_TOML))
    return path


class Worker:
    """Worker `index` of the shared config; `sip_port` and (after start) `http_port`."""

    def __init__(self, index: int, config: Path) -> None:
        self.index = index
        self.name = f"w{index}"
        self.config = config
        self.sip_port = tomllib.loads(config.read_text())["sip"]["port"] + index - 1
        self.process: Process | None = None
        self.http_port = 0

    async def start(self) -> Worker:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ORGA_", "NOTIFY_"))}
        self.process = await Process.start("run", "--config", str(self.config),
                                           "--worker", str(self.index),
                                           env={**env, "ORGA_API_KEY": API_KEY})
        match = await self.process.wait_for_line(r"HTTP endpoint on [\d.]+:(\d+)", 40)
        self.http_port = int(match.group(1))
        ready = await self.process.wait_for_line(r"gateway ready: SIP [\d.]+:(\d+)", 40)
        assert int(ready.group(1)) == self.sip_port  # the port worker N derives
        return self

    @property
    def proc(self) -> Process:
        assert self.process is not None
        return self.process

    async def metrics(self) -> list[Sample]:
        status, body = await http_get(self.http_port, "/metrics")
        assert status == 200
        return parse_metrics(body.decode())

    async def count(self, name: str, **labels: str) -> float:
        return value_of(await self.metrics(), name, **labels)

    async def stop(self) -> int:
        return await self.proc.stop(signal.SIGINT) if self.process is not None else 0


class Balancer:
    """Kamailio with the shipped config in front of `workers` (dispatcher set 1)."""

    def __init__(self, workdir: Path, workers: list[Worker]) -> None:
        self.workdir = workdir
        self.port = free_sip_port()
        self.dispatcher_list = workdir / "dispatcher.list"
        self.dispatcher_list.write_text("".join(
            f"1 sip:{LOOPBACK}:{w.sip_port} 0 0 duid={w.name}\n" for w in workers))
        self.process: Process | None = None

    async def start(self) -> Balancer:
        assert KAMAILIO is not None
        run = self.workdir / "kamailio-run"
        run.mkdir(exist_ok=True)
        self.process = await Process.run(
            KAMAILIO, "-DD", "-E", "-f", str(KAMAILIO_CFG),
            "-A", f"LISTEN=udp:{LOOPBACK}:{self.port}",
            "-A", f'DISPATCHER_LIST="{self.dispatcher_list}"',
            "-A", "LB_CHILDREN=2", "-m", "32", "-M", "4", "-w", str(self.workdir),
            "-Y", str(run))
        await wait_until(lambda: options_status(self.port) == 200 or self.exited, 20,
                         "Kamailio to answer OPTIONS")
        assert not self.exited, "\n".join(self.lines[-40:])
        return self

    @property
    def lines(self) -> list[str]:
        return self.process.lines if self.process is not None else []

    @property
    def exited(self) -> bool:
        return self.process is None or self.process.proc.returncode is not None

    async def stop(self) -> None:
        if self.process is not None:
            await self.process.stop(signal.SIGTERM, 10)


def options_status(port: int, timeout: float = 0.5) -> int | None:
    """A blocking out-of-dialog OPTIONS to 127.0.0.1:`port`; the status of the answer or None.
    Short and bounded: used from polling loops only."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.settimeout(timeout)
        local = sock.getsockname()[1]
        tag = uuid.uuid4().hex[:8]
        sock.sendto((
            f"OPTIONS sip:{LOOPBACK}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {LOOPBACK}:{local};branch=z9hG4bK{tag};rport\r\n"
            f"From: <sip:monitor@{LOOPBACK}>;tag={tag}\r\nTo: <sip:{LOOPBACK}:{port}>\r\n"
            f"Call-ID: {tag}@{LOOPBACK}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n").encode(), (LOOPBACK, port))
        try:
            data = sock.recv(65535)
        except (TimeoutError, ConnectionRefusedError):
            return None
        try:
            return int(data.split(b" ", 2)[1])
        except (IndexError, ValueError):
            return None

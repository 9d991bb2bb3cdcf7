"""Running SIPp against our test application and reading back what SIPp saw.

SIPp writes its message trace (`-trace_msg`, wall-clock timestamp per message) and its
statistics (`-trace_stat`, one CSV row per dump, the last at exit); we parse both so tests
check SIPp's view: its exit code, its successful/failed call counters, and the times at which
it received each message.
"""

from __future__ import annotations

import asyncio
import csv
import re
import shutil
import socket
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

SIPP = shutil.which("sipp")
SCENARIOS = Path(__file__).parent / "scenarios"
_HEADER = re.compile(
    r"^-{10,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\s*\n(\w+) message (sent|received)", re.M
)


@dataclass(frozen=True, slots=True)
class TracedMessage:
    at: float  # seconds (wall clock; only differences are meaningful)
    direction: str  # "sent" or "received" (SIPp's point of view)
    first_line: str


@dataclass(frozen=True, slots=True)
class SippRun:
    returncode: int
    stats: dict[str, str]
    messages: list[TracedMessage]
    stderr: str

    @property
    def successful(self) -> int:
        return int(self.stats.get("SuccessfulCall(C)", "0"))

    @property
    def failed(self) -> int:
        return int(self.stats.get("FailedCall(C)", "-1"))

    def received(self, prefix: str) -> list[float]:
        return [m.at for m in self.messages if m.direction == "received"
                and m.first_line.startswith(prefix)]

    def sent(self, prefix: str) -> list[float]:
        return [m.at for m in self.messages if m.direction == "sent"
                and m.first_line.startswith(prefix)]


def free_port_block(count: int, start: int = 15060, stop: int = 15999) -> int:
    """A base port in [start, stop) with `count` consecutive free UDP and TCP ports."""
    for base in range(start, stop - count, count):
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    sock = socket.socket(socket.AF_INET, kind)
                    socks.append(sock)
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free port block for SIPp")


def parse_messages(text: str) -> list[TracedMessage]:
    out = []
    for match in _HEADER.finditer(text):
        stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        rest = text[match.end():].split("\n\n", 1)[1] if "\n\n" in text[match.end():] else ""
        out.append(TracedMessage(stamp, match.group(3), rest.lstrip("\r\n").split("\n", 1)[0]))
    return out


async def run_sipp(
    scenario: str, port: int, workdir: Path, *, transport: str = "u1", calls: int = 1,
    rate: float = 10.0, timeout: float = 20.0, extra: tuple[str, ...] = (),
    base: int | None = None,
) -> SippRun:
    """`base`: SIPp's own SIP port (media ports follow); a UAS scenario's caller must know it."""
    assert SIPP is not None
    base = base if base is not None else free_port_block(6)
    messages = workdir / "messages.log"
    stats = workdir / "stats.csv"
    args = [
        SIPP, f"127.0.0.1:{port}", "-sf", str(SCENARIOS / scenario),
        "-t", transport, "-i", "127.0.0.1", "-p", str(base), "-mp", str(base + 2),
        "-m", str(calls), "-r", str(rate), "-nostdin",
        "-timeout", f"{int(timeout)}s", "-timeout_error",
        "-trace_msg", "-message_file", str(messages),
        "-trace_stat", "-stf", str(stats), "-fd", "1",
        *extra,
    ]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        cwd=workdir,
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout + 10)
    rows = list(csv.reader(stats.read_text().splitlines(), delimiter=";")) if stats.exists() else []
    stat = dict(zip(rows[0], rows[-1], strict=False)) if len(rows) > 1 else {}
    text = messages.read_text(errors="replace") if messages.exists() else ""
    return SippRun(proc.returncode or 0, stat, parse_messages(text), err.decode(errors="replace"))

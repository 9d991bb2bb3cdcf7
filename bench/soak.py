"""Soak (issue 11 item 8): many calls through one gateway, then is everything back to idle?

Processes, all on 127.0.0.1: one gateway (`python -m gateway run`, the one measured), one Orga
emulator, and the callers: `gateway.probe` phones placed from this process, `--concurrency` at a
time, each talking for `--seconds` (audio both ways) and then hanging up. Before the first call
and after the last (once `active_calls` is 0, after `--settle` seconds), the gateway's threads
(/proc/<pid>/task, native ones included), open file descriptors (/proc/<pid>/fd, less the
pooled keep-alive connections to the Orga API, which outlive calls on purpose), RSS, and the
asyncio tasks pending on its loop (the `event_loop_tasks` gauge) are read and printed, with
readings every `--every` calls in between. The idle baseline is taken after `--warmup` calls,
because the first calls start process-wide pools that stay (asyncio's default executor, lazily
imported modules, FFmpeg's codec tables).

    nice -n -5 .venv/bin/python bench/soak.py [--calls 1000] [--concurrency 4] [--seconds 1.5]
        [--records]   # every call recorded (Ogg/Opus) and its events sent to a local receiver

Exit code 0 when every call connected and threads, fds and tasks are back to (at most) their idle
values
and RSS is within `--rss-tolerance` (10 %) of it; 1 otherwise; 2 when a process failed to start.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load import (
    KEY,
    NUMBER,
    PAGE,
    BenchError,
    Proc,
    free_port,
    scrape,
    spawn,
    stop,
    wait_http,
    worker_config,
    write_reply_wav,
)
from tests.records.receiver import Receiver


@dataclass(frozen=True, slots=True)
class Reading:
    calls: int
    threads: int
    fds: int
    tasks: int
    rss_mb: float

    def row(self) -> str:
        return (f"{self.calls:>7} {self.threads:>8} {self.fds:>5} {self.tasks:>6} "
                f"{self.rss_mb:>8.1f}")


HEADER = "  calls  threads   fds  tasks   RSS MB"


def orga_connections(pid: int, orga_port: int) -> int:
    """The gateway's TCP connections to the Orga API: its HTTP client keeps a pool of them
    open across calls on purpose, so they are not counted as a call's file descriptors."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    with open(f"/proc/{pid}/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == orga_port and fields[9] in inodes:
                count += 1
    return count


def fd_kinds(pid: int) -> collections.Counter[str]:
    """What the open descriptors are (socket, anon_inode:[eventpoll], a path ...), by kind."""
    kinds: collections.Counter[str] = collections.Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            kinds["socket" if target.startswith("socket:") else target] += 1
    return kinds


def memory_kinds(pid: int) -> collections.Counter[str]:
    """Resident kB by kind of mapping: [heap] (the main malloc arena), anon (other arenas,
    Python's object arenas, big allocations, thread stacks), or the file mapped (libraries)."""
    kinds: collections.Counter[str] = collections.Counter()
    kind = "anon"
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if fields[0].endswith(":"):
                if fields[0] == "Rss:":
                    kinds[kind] += int(fields[1])
            else:  # a mapping's header: address perms offset dev inode [path]
                kind = os.path.basename(fields[5]) if len(fields) > 5 else "anon"
    return kinds


def read(pid: int, http: int, orga_port: int, calls: int) -> Reading:
    with open(f"/proc/{pid}/statm") as f:
        rss = int(f.read().split()[1]) * PAGE / 1e6
    # Counted before the scrape: the server's end of the scrape's own connection may still be
    # open for a moment after it (that was the odd 9th descriptor of earlier soaks).
    fds = len(os.listdir(f"/proc/{pid}/fd")) - orga_connections(pid, orga_port)
    metrics = scrape(f"http://127.0.0.1:{http}/metrics")
    return Reading(calls, len(os.listdir(f"/proc/{pid}/task")), fds,
                   int(metrics.get("orga_gateway_event_loop_tasks", -1)), rss)


def wait_idle(http: int, proc: Proc, settle: float) -> None:
    deadline = time.monotonic() + 30.0
    while scrape(f"http://127.0.0.1:{http}/metrics").get("orga_gateway_active_calls", 0) > 0:
        if time.monotonic() > deadline or not proc.alive():
            raise BenchError("the gateway did not go back to 0 active calls")
        time.sleep(0.2)
    time.sleep(settle)  # port quarantine, aiortc's closing tasks


async def place(target: str, n: int, start_index: int, concurrency: int,
                seconds: float) -> list[str]:
    """Place `n` calls, `concurrency` at a time; return the failures."""
    from gateway.probe import ProbeOptions, place_call

    failures: list[str] = []
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with gate:
            options = ProbeOptions(transport="udp", seconds=seconds, local_ip="127.0.0.1",
                                   from_user=f"soak{index}", answer_timeout_s=20.0)
            try:
                report = await place_call(target, options)
            except Exception as exc:  # a crashed probe is a failed call, with its reason
                failures.append(f"call {index}: {type(exc).__name__}: {exc}")
                return
            if not report.connected or report.packets_received == 0:
                failures.append(f"call {index}: {report.status} {report.reason} "
                                f"{report.error or ''} ({report.packets_received} packets)")

    await asyncio.gather(*(one(start_index + i) for i in range(n)))
    return failures


SOAK_SECRET_ENV, SOAK_SECRET = "SOAK_WEBHOOK_SECRET", "soak-webhook-secret"


def records_config(config: str, url: str, logs: Path) -> str:
    """`--records`: webhooks for every event to `url`, and every call recorded."""
    assert config.endswith('[[routes]]\nmatch = "*"\n')
    return config + f"""record = true

[webhooks]
url = "{url}"
secret_env = "{SOAK_SECRET_ENV}"
events = ["call.started", "call.answered", "transcript", "call.ended"]
spool_dir = "{logs}/spool"

[recording]
directory = "{logs}/recordings"
format = "ogg"
"""


def run(args: argparse.Namespace, logs: Path) -> int:
    py = [sys.executable]
    reply = logs / "reply.wav"
    write_reply_wav(reply)
    procs: list[Proc] = []
    receiver: Receiver | None = None
    try:
        emu_port = free_port(socket.SOCK_STREAM)
        emulator = spawn("emulator", [*py, "-m", "gateway", "emulator", "--listen",
                                      f"127.0.0.1:{emu_port}", "--api-key", KEY, "--reply-wav",
                                      str(reply), "--log-level", "WARNING"], logs)
        procs.append(emulator)
        wait_http(f"http://127.0.0.1:{emu_port}/v1/realtime/ice-config", emulator, True)
        sip, http = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
        base = 31000 + (os.getpid() % 500) * 40
        cfg = logs / "gateway.toml"
        config = worker_config(sip, http, base, base + 8 * args.concurrency + 60, emu_port,
                               2 * args.concurrency + 4)
        if args.records:
            receiver = Receiver(SOAK_SECRET.encode())
            os.environ[SOAK_SECRET_ENV] = SOAK_SECRET  # the gateway inherits it (spawn)
            config = records_config(config, receiver.url, logs)
        cfg.write_text(config)
        gateway = spawn("gateway", [*py, "-m", "gateway", "run", "--config", str(cfg)], logs)
        procs.append(gateway)
        wait_http(f"http://127.0.0.1:{http}/ready", gateway)
        pid, target = gateway.popen.pid, f"sip:{NUMBER}@127.0.0.1:{sip}"
        print(f"soak: {args.calls} calls, {args.concurrency} at a time, {args.seconds} s each; "
              f"logs in {logs}; load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(HEADER)
        start = read(pid, http, emu_port, 0)
        print(start.row(), " (gateway started)")
        failures = asyncio.run(place(target, args.warmup, 0, args.concurrency, args.seconds))
        wait_idle(http, gateway, args.settle)
        idle = read(pid, http, emu_port, args.warmup)
        idle_kinds, idle_memory = fd_kinds(pid), memory_kinds(pid)
        print(idle.row(), " (idle baseline, after warm-up)")
        done = args.warmup
        t0 = time.monotonic()
        while done < args.calls:
            batch = min(args.every, args.calls - done)
            failures += asyncio.run(place(target, batch, done, args.concurrency, args.seconds))
            done += batch
            print(read(pid, http, emu_port, done).row(), flush=True)
        wait_idle(http, gateway, args.settle)
        end = read(pid, http, emu_port, done)
        end_kinds, end_memory = fd_kinds(pid), memory_kinds(pid)
        print(end.row(), f" (idle again; {time.monotonic() - t0:.0f} s; load "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())})")
        stop(gateway)
        if receiver is not None:  # the last events may still be on their way
            deadline = time.monotonic() + 10
            while len(receiver.events) < 4 * done and time.monotonic() < deadline:
                time.sleep(0.1)
            recordings = len(list((logs / "recordings").glob("*.ogg")))
            print(f"records: {len(receiver.events)} events received for {done} calls "
                  f"({receiver.bad_signatures} bad signatures), {recordings} recordings")
            if receiver.bad_signatures or recordings != done:
                failures.append(f"records: {recordings} recordings for {done} calls")
    except BenchError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    finally:
        for proc in reversed(procs):
            stop(proc)
        if receiver is not None:
            receiver.close()
    problems = [f"{len(failures)} failed call(s), e.g. {failures[0]}"] if failures else []
    for what, before, after in (("threads", idle.threads, end.threads),
                                ("fds", idle.fds, end.fds), ("tasks", idle.tasks, end.tasks)):
        if after > before:  # fewer is fine: e.g. an idle keep-alive connection to Orga closed
            problems.append(f"{what}: {before} idle, {after} after the calls")
            if what == "fds":
                problems.append(f"fds by kind: idle {dict(idle_kinds)}, after {dict(end_kinds)}")
    growth = (end.rss_mb - idle.rss_mb) / idle.rss_mb
    if growth > args.rss_tolerance:
        problems.append(f"RSS grew {growth:.0%} ({idle.rss_mb:.1f} -> {end.rss_mb:.1f} MB)")
    print(f"RSS {idle.rss_mb:.1f} -> {end.rss_mb:.1f} MB ({growth:+.1%}); "
          f"threads {idle.threads} -> {end.threads}; fds {idle.fds} -> {end.fds}; "
          f"tasks {idle.tasks} -> {end.tasks}")
    grown = sorted(((end_memory[k] - idle_memory[k], k) for k in end_memory | idle_memory),
                   reverse=True)
    print("RSS change by mapping: " + ", ".join(f"{k} {kb / 1024:+.1f} MB"
                                                for kb, k in grown if abs(kb) >= 100))
    for problem in problems:
        print(f"  FAILED: {problem}")
    return 1 if problems else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--seconds", type=float, default=1.5, help="each call's length after answer")
    p.add_argument("--warmup", type=int, default=5, help="calls before the idle baseline")
    p.add_argument("--every", type=int, default=100, help="print a reading every N calls")
    p.add_argument("--settle", type=float, default=2.0,
                   help="seconds to wait once idle before reading")
    p.add_argument("--rss-tolerance", type=float, default=0.10)
    p.add_argument("--records", action="store_true",
                   help="record every call and send its events to a local webhook receiver")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    return run(args, Path(tempfile.mkdtemp(prefix="orga-soak-")))


if __name__ == "__main__":
    sys.exit(main())

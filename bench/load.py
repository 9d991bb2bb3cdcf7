"""Load benchmark (issue 6 item 20): N concurrent calls through the gateway, gateway measured alone.

Processes, all on 127.0.0.1 (loopback only):
  gateway workers  `python -m gateway run --config W.toml`, each with its own SIP port, HTTP
                   port and disjoint RTP port range; the ONLY processes measured;
  emulators        `python -m gateway emulator`, the Orga stand-in; its agent replies to every
                   utterance with a speech-like 1.5 s WAV (bench/media_path.speech_like), not a
                   tone (Opus codes tones in a cheaper mode, field notes §3);
  callers          `python bench/load.py --role caller`, each running many `gateway.probe`
                   phones concurrently on one asyncio loop. Each phone says the probe's
                   spoken-like phrase, waits for the agent's reply, and says it again (`turns`),
                   so speech flows both ways for the whole call.
Calls start at `--rate` per second, spread round-robin over the workers. The steady window is
from the moment the last call was answered to the moment the first call ended (times from the
callers' reports; CLOCK_MONOTONIC is system-wide, so it compares across processes), trimmed by
`--margin` on each side. Over it, /proc/<pid>/stat utime+stime and RSS of every worker are
sampled; RSS per call is RSS above the idle baseline (sampled before the first call) divided by
the calls. Underruns and dropped backlog come from each worker's /metrics after the calls ended
(the gateway records them when a call ends). The transcoding floor (bench/media_path.py
`transcoding_floor`) is measured in this process before each N, with nothing else running here.

    /work/venv/bin/python bench/load.py [--calls 10 30 60] [--seconds 30] [--workers W] [--rate 10]

Exit code: 0 when every call connected, carried audio both ways and was ended by its caller;
1 otherwise (what failed is printed); 2 when a process could not be started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import numpy as np

from bench.load_report import Layout, print_row, print_summary

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk_orga_ai_loadbench_" + os.urandom(6).hex()
NUMBER = "800"
READY_TIMEOUT_S = 40.0
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


class BenchError(Exception):
    """A process could not be started or died; the run cannot be measured."""


# --------------------------------------------------------------------------------- caller role


async def caller_main(spec: dict[str, Any]) -> None:
    """Place this process's share of calls on schedule; print one JSON line per call."""
    from gateway.probe import ProbeOptions, place_call

    start = float(spec["start"])

    async def one(index: int, target: str) -> dict[str, Any]:
        await asyncio.sleep(max(0.0, start + index / spec["rate"] - time.monotonic()))
        options = ProbeOptions(transport="udp", seconds=spec["seconds"], turns=10_000,
                               local_ip="127.0.0.1", from_user=f"load{index}",
                               answer_timeout_s=spec["answer_timeout_s"])
        t0 = time.monotonic()
        try:
            r = await place_call(target, options)
        except Exception as exc:  # a probe that crashed is a failed call, with its reason
            return {"index": index, "target": target, "t0": t0, "connected": False,
                    "error": f"{type(exc).__name__}: {exc}"}
        return {"index": index, "target": target, "t0": t0, "t_end": time.monotonic(),
                "connected": r.connected, "status": r.status, "reason": r.reason,
                "error": r.error, "setup_s": r.setup_s, "duration_s": r.duration_s,
                "turns": r.turns, "turns_answered": r.turns_answered,
                "turn_latencies_s": list(r.turn_latencies_s), "ended_by": r.ended_by,
                "packets_sent": r.packets_sent, "packets_received": r.packets_received,
                "packets_lost": r.packets_lost, "max_gap_s": r.max_gap_s,
                "onset_delays_s": list(r.onset_delays_s)}

    results = await asyncio.gather(*(one(i, t) for i, t in spec["calls"]))
    for result in results:
        print(json.dumps(result), flush=True)


# ------------------------------------------------------------------------------- processes


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 12) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def spawn(name: str, argv: list[str], logs: Path, stdout: Path | None = None,
          nice: int = 0) -> Proc:
    log = logs / f"{name}.log"
    if nice > 0:  # only ever lowers the priority of our own stand-ins
        argv = ["nice", "-n", str(nice), *argv]
    env = {**os.environ, "ORGA_API_KEY": KEY, "PYTHONPATH": str(ROOT)}
    env.pop("ORGA_API_KEY_FILE", None)
    with log.open("wb") as err, (stdout or log).open("ab") as out:
        # Own session: Ctrl-C reaches only this script, which then stops every child in order.
        popen = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=err,
                                 start_new_session=True)
    return Proc(name, popen, log)


def stop(proc: Proc, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    if not proc.alive():
        return
    with contextlib.suppress(ProcessLookupError):
        proc.popen.send_signal(sig)
    try:
        proc.popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.popen.kill()
        proc.popen.wait()


def wait_http(url: str, proc: Proc, any_status: bool = False) -> None:
    """Wait until `url` answers 200 (or anything, with `any_status`) while `proc` lives."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if not proc.alive():
            raise BenchError(f"{proc.name} exited ({proc.popen.returncode}) while starting:\n"
                             f"{proc.tail()}")
        try:
            status = httpx.get(url, timeout=1.0).status_code
            if any_status or status == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise BenchError(f"{proc.name} not ready after {READY_TIMEOUT_S:.0f} s:\n{proc.tail()}")


def write_reply_wav(path: Path) -> None:
    from bench.media_path import speech_like

    pcm = speech_like(48000, 1.5, seed=11)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(48000)
        wav.writeframes(pcm.astype("<i2").tobytes())


def worker_config(sip: int, http: int, rtp_min: int, rtp_max: int, orga_port: int,
                  max_calls: int) -> str:
    return f"""# written by bench/load.py
[sip]
bind = "127.0.0.1"
port = {sip}
transports = ["udp"]

[rtp]
bind = "127.0.0.1"
port_min = {rtp_min}
port_max = {rtp_max}

[orga]
base_url = "http://127.0.0.1:{orga_port}"
ice_addresses = ["127.0.0.1"]
instructions = "Load test agent."

[http]
listen = "127.0.0.1:{http}"

[limits]
max_calls = {max_calls}
max_call_duration_s = 600.0
drain_timeout_s = 5.0
# Overload protection off: the bench measures where quality fails (and the loop lag there),
# which is what sets the protection's defaults.
overload_loop_lag_ms = 1000.0
overload_cpu_percent = 0.0

[security]
invite_rate_per_source = 1000.0
invite_burst_per_source = 1000
request_rate_per_source = 10000.0
request_burst_per_source = 10000
calls_per_second = 1000.0
calls_burst = 1000

[[trunks]]
name = "loopback"
allow = ["127.0.0.0/8"]

[[routes]]
match = "*"
"""


def start_balancer(port: int, worker_ports: list[int], logs: Path) -> Proc:
    """Kamailio with deploy/kamailio/kamailio.cfg in front of the workers; returns once it
    answers OPTIONS and has probed the workers (its dispatcher pings every second)."""
    kamailio = shutil.which("kamailio") or "/usr/sbin/kamailio"
    dispatcher = logs / "dispatcher.list"
    dispatcher.write_text("".join(f"1 sip:127.0.0.1:{p} 0 0\n" for p in worker_ports))
    (logs / "kamailio-run").mkdir(exist_ok=True)
    proc = spawn("balancer", [kamailio, "-DD", "-E", "-f",
                              str(ROOT / "deploy" / "kamailio" / "kamailio.cfg"),
                              "-A", f"LISTEN=udp:127.0.0.1:{port}",
                              "-A", f'DISPATCHER_LIST="{dispatcher}"', "-m", "64", "-M", "8",
                              "-w", str(logs), "-Y", str(logs / "kamailio-run")], logs)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while sip_options(port) != 200:
        if not proc.alive() or time.monotonic() > deadline:
            raise BenchError(f"kamailio did not start:\n{proc.tail()}")
        time.sleep(0.2)
    time.sleep(2.5)  # two probe rounds: every worker answered 200
    return proc


def sip_options(port: int) -> int | None:
    """Status of one OPTIONS to 127.0.0.1:port, or None after 0.5 s."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.5)
        local, tag = sock.getsockname()[1], os.urandom(4).hex()
        sock.sendto((f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
                     f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{tag};rport\r\n"
                     f"From: <sip:bench@127.0.0.1>;tag={tag}\r\nTo: <sip:127.0.0.1:{port}>\r\n"
                     f"Call-ID: {tag}@bench\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                     "Content-Length: 0\r\n\r\n").encode(), ("127.0.0.1", port))
        try:
            return int(sock.recv(65535).split(b" ", 2)[1])
        except (OSError, IndexError, ValueError):
            return None


# ------------------------------------------------------------------------------- sampling


def proc_sample(pid: int) -> tuple[float, float, float]:
    """(CPU seconds user+system of all threads, RSS MB, seconds the main thread - the event
    loop - spent runnable but waiting for a CPU) of one process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    with open(f"/proc/{pid}/schedstat") as f:
        wait = int(f.read().split()[1]) / 1e9
    # after "(comm)": fields[0] is field 3 (state); utime 14, stime 15, rss 24
    cpu = (int(fields[11]) + int(fields[12])) / TICK
    return cpu, int(fields[21]) * PAGE / 1e6, wait


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat: how saturated the machine was."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


@dataclass
class Samples:
    times: list[float] = field(default_factory=list)
    rows: list[dict[str, tuple[float, float, float]]] = field(default_factory=list)
    machine: list[tuple[int, int]] = field(default_factory=list)

    def take(self, procs: dict[str, Proc]) -> None:
        self.machine.append(machine_jiffies())
        row = {}
        for name, proc in procs.items():
            with contextlib.suppress(OSError, ValueError, IndexError):
                row[name] = proc_sample(proc.popen.pid)
        self.times.append(time.monotonic())
        self.rows.append(row)

    def window(self, t0: float, t1: float) -> tuple[int, int] | None:
        idx = [i for i, t in enumerate(self.times) if t0 <= t <= t1]
        return (idx[0], idx[-1]) if len(idx) >= 2 else None

    def cpu_pct(self, names: list[str], a: int, b: int) -> dict[str, float]:
        span = self.times[b] - self.times[a]
        return {n: (self.rows[b][n][0] - self.rows[a][n][0]) / span * 100 for n in names
                if n in self.rows[a] and n in self.rows[b]}

    def wait_pct(self, names: list[str], a: int, b: int) -> dict[str, float]:
        span = self.times[b] - self.times[a]
        return {n: (self.rows[b][n][2] - self.rows[a][n][2]) / span * 100 for n in names
                if n in self.rows[a] and n in self.rows[b]}

    def machine_busy_pct(self, a: int, b: int) -> float:
        (busy0, total0), (busy1, total1) = self.machine[a], self.machine[b]
        return (busy1 - busy0) / max(1, total1 - total0) * 100

    def mean_rss(self, names: list[str], a: int, b: int) -> dict[str, float]:
        return {n: float(np.mean([self.rows[i][n][1] for i in range(a, b + 1)
                                  if n in self.rows[i]])) for n in names}


def scrape(url: str) -> dict[str, float]:
    """Sum of each sample name (labels dropped) from a Prometheus text page."""
    out: dict[str, float] = {}
    for line in httpx.get(url, timeout=5.0).text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        key = name
        if name == "orga_gateway_calls_ended_total" and 'result="' in name_labels:
            result = name_labels.split('result="', 1)[1].split('"', 1)[0]
            key = f"{name}:{result}"
        elif name.endswith("_bucket") and 'le="' in name_labels:
            le = name_labels.split('le="', 1)[1].split('"', 1)[0]
            key = f"{name}:{le}"
        with contextlib.suppress(ValueError):
            out[key] = out.get(key, 0.0) + float(value)
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# ------------------------------------------------------------------------------------ one N


def layout(args: argparse.Namespace, n: int) -> Layout:
    workers = args.workers or (1 if n <= 30 else math.ceil(n / 20))
    emulators = args.emulators or math.ceil(n / 20)
    callers = args.caller_procs or math.ceil(n / 30)
    return Layout(n, workers, emulators, callers)


def run_one(args: argparse.Namespace, lay: Layout, logs: Path) -> tuple[dict[str, Any], list[str]]:
    from bench.media_path import transcoding_floor

    n = lay.calls
    # The floor first, in this process, while none of the run's processes exist yet.
    floor_ref = transcoding_floor(fast=False, seconds=args.floor_seconds)
    floor_fast = transcoding_floor(fast=True, seconds=args.floor_seconds)
    load_before = os.getloadavg()
    py = [sys.executable]
    reply = logs / "reply.wav"
    write_reply_wav(reply)
    procs: list[Proc] = []
    failures: list[str] = []
    try:
        emu_ports = []
        for e in range(lay.emulators):
            port = free_port(socket.SOCK_STREAM)
            if getattr(args, "far_end", False):  # bench/far_end.py: echoes, decodes nothing
                argv = [*py, str(ROOT / "bench" / "far_end.py"), "--listen",
                        f"127.0.0.1:{port}", "--api-key", KEY]
            else:
                argv = [*py, "-m", "gateway", "emulator", "--listen", f"127.0.0.1:{port}",
                        "--api-key", KEY, "--reply-wav", str(reply), "--log-level", "WARNING"]
            procs.append(spawn(f"emulator{e}", argv, logs, nice=args.stand_in_nice))
            emu_ports.append(port)
        for e, port in enumerate(emu_ports):
            wait_http(f"http://127.0.0.1:{port}/v1/realtime/ice-config", procs[e], True)
        workers: list[tuple[Proc, int, int]] = []
        per_worker = math.ceil(n / lay.workers)
        span = 4 * per_worker + 100  # even ports only, plus quarantine headroom
        rtp_base = random.randrange(22000, 30000 - span * lay.workers, 2)
        for w in range(lay.workers):
            sip, http = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
            lo = rtp_base + w * span
            cfg = logs / f"worker{w}.toml"
            cfg.write_text(worker_config(sip, http, lo, lo + span - 1,
                                         emu_ports[w % lay.emulators], per_worker + 5))
            proc = spawn(f"worker{w}", [*py, "-m", "gateway", "run", "--config", str(cfg),
                                        "--event-loop", args.event_loop], logs)
            procs.append(proc)
            workers.append((proc, sip, http))
        for proc, _, http in workers:
            wait_http(f"http://127.0.0.1:{http}/ready", proc)
        balancer_port = None
        if getattr(args, "balancer", False):  # deploy/kamailio in front of the workers
            balancer_port = free_port(socket.SOCK_DGRAM)
            procs.append(start_balancer(balancer_port, [sip for _, sip, _ in workers], logs))
        gw = {p.name: p for p, _, _ in workers}
        others = {p.name: p for p in procs if p.name not in gw}
        samples = Samples()
        for _ in range(5):  # idle baseline: 2 s, nothing in flight
            samples.take(gw)
            time.sleep(0.5)
        idle_cpu = samples.cpu_pct(list(gw), 0, len(samples.times) - 1)
        idle_rss = samples.mean_rss(list(gw), 0, len(samples.times) - 1)
        # Calls: round-robin over workers; caller process c gets every callers-th call.
        start = time.monotonic() + 1.0
        targets = [(i, f"sip:{NUMBER}@127.0.0.1:"
                    f"{balancer_port or workers[i % lay.workers][1]}") for i in range(n)]
        outputs: list[Path] = []
        for c in range(lay.callers):
            spec = {"start": start, "rate": args.rate, "seconds": args.seconds,
                    "answer_timeout_s": 30.0, "calls": targets[c::lay.callers]}
            out = logs / f"caller{c}.jsonl"
            out.write_bytes(b"")
            proc = spawn(f"caller{c}", [*py, str(Path(__file__).resolve()), "--role", "caller",
                                        "--spec", json.dumps(spec)], logs, stdout=out,
                         nice=args.stand_in_nice)
            procs.append(proc)
            others[proc.name] = proc
            outputs.append(out)
        watched = {**gw, **others}
        load_during: tuple[float, ...] = ()
        # A caller that outlives every call's schedule, answer timeout and hang-up is stuck.
        give_up = start + n / args.rate + args.seconds + 30.0 + 60.0
        while any(others[f"caller{c}"].alive() for c in range(lay.callers)):
            if time.monotonic() > give_up:
                raise BenchError("caller processes still running long after their last call "
                                 f"should have ended; see {logs}")
            samples.take(watched)
            dead = [p.name for p in gw.values() if not p.alive()]
            if dead:
                raise BenchError(f"gateway {', '.join(dead)} died during the run:\n"
                                 + "\n".join(gw[d].tail() for d in dead))
            if not load_during and time.monotonic() > start + n / args.rate + args.seconds / 2:
                load_during = os.getloadavg()
            time.sleep(args.sample_interval)
        for c in range(lay.callers):
            if others[f"caller{c}"].popen.returncode != 0:
                failures.append(f"caller{c} exited {others[f'caller{c}'].popen.returncode}: "
                                f"{others[f'caller{c}'].tail(5)}")
        results = [json.loads(line) for out in outputs
                   for line in out.read_text().splitlines() if line.strip()]
        # Metrics: each call is recorded when it ends; wait until every worker is idle.
        metrics: dict[str, float] = {}
        deadline = time.monotonic() + 15.0
        for _proc, _, http in workers:
            page = scrape(f"http://127.0.0.1:{http}/metrics")
            while page.get("orga_gateway_active_calls", 0) > 0 and time.monotonic() < deadline:
                time.sleep(0.3)
                page = scrape(f"http://127.0.0.1:{http}/metrics")
            for k, v in page.items():
                metrics[k] = metrics.get(k, 0.0) + v
        for proc, _, _ in workers:
            stop(proc)
            if proc.popen.returncode not in (0, -signal.SIGTERM):
                failures.append(f"{proc.name} exited {proc.popen.returncode} on SIGTERM")
    except BaseException:
        for proc in reversed(procs):  # gateways stop fast (SIGINT), the rest SIGTERM
            stop(proc, signal.SIGINT if proc.name.startswith("worker") else signal.SIGTERM)
        raise
    finally:
        for proc in reversed(procs):
            stop(proc)

    # ---------------------------------------------------------------------- analysis
    connected = [r for r in results if r.get("connected")]
    missing = n - len(results)
    if missing:
        failures.append(f"{missing} calls have no report (caller process failed)")
    grouped: dict[str, list[int]] = {}
    for r in results:
        why = None
        if not r.get("connected"):
            why = f"not connected: {r.get('status')} {r.get('reason')} {r.get('error') or ''}"
        elif getattr(args, "far_end", False):
            if not r.get("onset_delays_s"):  # an echo is heard during the phrase, not after
                why = "no echo of our phrases heard"
        elif r["turns_answered"] < 1 or r["turns_answered"] < r["turns"] - 1:
            why = f"replies heard for {r['turns_answered']} of {r['turns']} phrases"
        elif r.get("ended_by") != "probe":
            why = f"ended by {r.get('ended_by')} after {r.get('duration_s'):.1f} s"
        if why:
            grouped.setdefault(why.strip(), []).append(r["index"])
    for why, ids in sorted(grouped.items(), key=lambda item: -len(item[1])):
        failures.append(f"{len(ids)} call(s) {_ids(sorted(ids))}: {why}")
    answered_at = [r["t0"] + r["setup_s"] for r in connected]
    ended_at = [r["t0"] + r["setup_s"] + r["duration_s"] for r in connected]
    row: dict[str, Any] = {"calls": n, "layout": lay, "load_before": load_before,
                           "load_during": load_during, "connected": len(connected),
                           "floor_ref": floor_ref, "floor_fast": floor_fast,
                           "idle_cpu": idle_cpu, "idle_rss": idle_rss, "metrics": metrics}
    row["with_replies"] = sum(1 for r in connected
                              if r["turns_answered"] >= max(1, r["turns"] - 1))
    row["turns"] = sum(r["turns"] for r in connected)
    row["turns_answered"] = sum(r["turns_answered"] for r in connected)
    setups = [r["setup_s"] for r in connected]
    turns = [t for r in connected for t in r["turn_latencies_s"]]
    row["setup"] = (pct(setups, 50), pct(setups, 95), max(setups, default=float("nan")))
    row["turn"] = (pct(turns, 50), pct(turns, 95), len(turns))
    sent = sum(r["packets_sent"] for r in connected)
    lost = sum(r["packets_lost"] for r in connected)
    recv = sum(r["packets_received"] for r in connected)
    row["packets"] = (sent, recv, lost)
    gaps = [r["max_gap_s"] for r in connected if r.get("max_gap_s") is not None]
    row["max_gap"] = max(gaps, default=float("nan"))
    row["gaps_over_40ms"] = sum(1 for g in gaps if g > 0.040)
    onsets = [d for r in connected for d in r.get("onset_delays_s", [])]
    row["onset"] = (pct(onsets, 50), pct(onsets, 99), len(onsets))
    expected = sum(r["duration_s"] for r in connected) * 50  # 20 ms packets
    row["delivered"] = recv / expected * 100 if expected else float("nan")
    window = None
    if connected:
        t0, t1 = max(answered_at) + args.margin, min(ended_at) - args.margin
        row["window_s"] = t1 - t0
        window = samples.window(t0, t1)
    if window is None:
        failures.append("no steady-state window (all calls were never up at once for "
                        f"> {2 * args.margin:.0f} s): lower --rate or raise --seconds")
    else:
        a, b = window
        row["window_s"] = samples.times[b] - samples.times[a]
        row["cpu"] = samples.cpu_pct(list(gw), a, b)
        row["rss"] = samples.mean_rss(list(gw), a, b)
        row["emu_cpu"] = sum(samples.cpu_pct([k for k in others if k.startswith("emu")],
                                             a, b).values())
        row["machine_busy"] = samples.machine_busy_pct(a, b)
        row["wait"] = samples.wait_pct(list(gw), a, b)
        row["caller_cpu"] = sum(samples.cpu_pct([k for k in others if k.startswith("caller")],
                                                a, b).values())
    return row, failures


# ------------------------------------------------------------------------------------ main


def _ids(ids: list[int]) -> str:
    shown = ",".join(map(str, ids[:12]))
    return f"#{shown}" + (f",... ({len(ids) - 12} more)" if len(ids) > 12 else "")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, nargs="+", default=[10, 30, 60])
    p.add_argument("--seconds", type=float, default=30.0, help="call length after answer")
    p.add_argument("--workers", type=int, default=None,
                   help="gateway processes (default 1 up to 30 calls, else ceil(N/20))")
    p.add_argument("--emulators", type=int, default=None, help="default ceil(N/20)")
    p.add_argument("--caller-procs", type=int, default=None, help="default ceil(N/30)")
    p.add_argument("--rate", type=float, default=5.0, help="new calls per second")
    p.add_argument("--margin", type=float, default=2.0,
                   help="seconds trimmed from each end of the steady window")
    p.add_argument("--stand-in-nice", type=int, default=0, metavar="N",
                   help="run emulators and callers at this nice level (e.g. 10) so the "
                   "gateway gets the CPU first; default 0")
    p.add_argument("--event-loop", choices=["auto", "uvloop", "asyncio"], default="asyncio",
                   help="the gateways' event loop (gateway run --event-loop)")
    p.add_argument("--sample-interval", type=float, default=0.5)
    p.add_argument("--floor-seconds", type=float, default=5.0)
    p.add_argument("--role", choices=["bench", "caller"], default="bench", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role == "caller":
        import logging

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        asyncio.run(caller_main(json.loads(args.spec)))
        return 0

    # SIGTERM ends the run like Ctrl-C does: the finally blocks stop every child.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    logs = Path(tempfile.mkdtemp(prefix="orga-load-"))
    print(f"load bench: event loop {args.event_loop}; logs and configs in {logs}; load average now "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    rows, all_failures = [], []
    try:
        for n in args.calls:
            lay = layout(args, n)
            run_logs = logs / f"n{n}"
            run_logs.mkdir()
            row, failures = run_one(args, lay, run_logs)
            rows.append(row)
            print_row(row, args)
            for f in failures:
                print(f"  FAILED: {f}")
            all_failures += [f"N={n}: {f}" for f in failures]
            sys.stdout.flush()
    except BenchError as exc:
        print(f"load bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("load bench: interrupted; every process stopped", file=sys.stderr)
        return 130
    if rows:
        print_summary(rows)
    if all_failures:
        print(f"\n{len(all_failures)} failure(s):")
        for f in all_failures:
            print(f"  {f}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

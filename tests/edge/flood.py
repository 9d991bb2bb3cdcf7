"""The INVITE flood scenario (issue 7 item 11), shared by `tests/edge/test_flood.py` (which
asserts its functional properties) and `bench/flood.py` (which prints its figures).

A real gateway serves `legit` calls from 127.0.0.1 (an unauthenticated trunk, 127.0.0.1/32)
with RTP both ways. Then a separate process sends new INVITEs at `rate` per second for
`seconds` from 127.0.0.9, a trunk that requires digest auth (a known peer with a wrong or no
password: the hardest case, its INVITEs pass the ACL and reach the rate limiter and digest
check). Halfway through, one more legitimate call is placed. We record the legitimate calls'
largest RTP gaps during the flood (both directions), whether they stayed connected, what the
flood got back, the gateway's memory (RSS) and tracked state before and after.
"""

from __future__ import annotations

import asyncio
import gc
import resource
import time
from dataclasses import dataclass, field

from gateway.config import Config, LimitsConfig
from gateway.emulator.server import Emulator
from tests.edge.harness import (
    Blaster,
    Call,
    Caller,
    make_config,
    max_gap,
    place_call,
    running,
    trunk,
)
from tests.integration.stack import NO_OVERLOAD


def udp_receive_errors() -> int:
    """Datagrams the kernel dropped for a full socket buffer (all sockets of this host)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return int(dict(zip(rows[0], rows[1], strict=True))["RcvbufErrors"])


def runqueue_wait_s() -> float:
    """Seconds this process's main thread spent runnable but waiting for a CPU (schedstat)."""
    with open("/proc/self/schedstat") as f:
        return int(f.read().split()[1]) / 1e9


async def watch_loop(lags: list[float]) -> None:
    """Record how late a 10 ms sleep wakes: the event loop's lag, whatever its cause."""
    loop = asyncio.get_running_loop()
    while True:
        t = loop.time()
        await asyncio.sleep(0.01)
        lags.append(loop.time() - t - 0.01)


class GcPauses:
    """The longest garbage collection while installed (a pause the loop cannot avoid)."""

    def __init__(self) -> None:
        self.longest_s = 0.0
        self._start = 0.0
        gc.collect()  # start the measured window with nothing old left to collect
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._start = now
        else:
            self.longest_s = max(self.longest_s, now - self._start)

    def close(self) -> None:
        gc.callbacks.remove(self._on_gc)


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@dataclass
class FloodReport:
    rate_asked: float
    seconds: float
    invites_sent: int = 0
    send_errors: int = 0  # sendto() failures in the flood process (its own buffer full)
    send_rate: float = 0.0
    responses: dict[str, int] = field(default_factory=dict)
    legit_calls: int = 0
    legit_connected_after: int = 0
    mid_flood_call_ok: bool = False
    max_gap_from_gateway_s: float = 0.0  # the gateway's RTP as the legitimate callers hear it
    max_gap_to_gateway_s: float = 0.0  # the callers' own sending schedule (same loop)
    gateway_rtp_shortfall: int = 0  # packets the callers sent that the gateway did not count
    kernel_drops: int = 0  # RcvbufErrors during the flood (host-wide)
    cpu_s: float = 0.0  # CPU seconds the gateway's process used during the flood
    runqueue_wait_s: float = 0.0  # seconds the loop's thread waited for a CPU (host contention)
    max_loop_lag_s: float = 0.0  # the event loop's largest lateness during the flood
    longest_gc_s: float = 0.0  # the longest garbage collection during the flood
    rss_before_kib: int = 0
    rss_after_kib: int = 0
    rss_peak_kib: int = 0
    tracked_sources: int = 0
    tables_after: dict[str, int] = field(default_factory=dict)
    rejections: dict[str, float] = field(default_factory=dict)
    orga_sessions: int = 0

    @property
    def unanswered(self) -> int:
        answered = sum(self.responses.get(k, 0) for k in ("503", "401", "403"))
        return max(0, self.invites_sent - answered)


def config(emu: Emulator) -> Config:
    return make_config(emu, trunks=(trunk("office", "127.0.0.1/32"),
                                    trunk("pbx", "127.0.0.9/32", auth=True)),
                       limits=LimitsConfig(max_calls=20, **NO_OVERLOAD))


async def run_flood(rate: float = 2000, seconds: float = 10, legit: int = 5) -> FloodReport:
    report = FloodReport(rate, seconds, legit_calls=legit)
    async with running(config) as rig:
        caller = Caller(rig.udp)
        await caller.start()
        calls: list[Call] = [await place_call(caller, user=f"20{n}") for n in range(legit)]
        await asyncio.sleep(0.5)
        blaster = Blaster("invite", "--target", f"{rig.udp[0]}:{rig.udp[1]}", "--source",
                          "127.0.0.9", "--rate", str(rate), "--seconds", str(seconds))
        await blaster.start()
        report.rss_before_kib = rss_kib()
        drops0, cpu0, wait0 = udp_receive_errors(), time.process_time(), runqueue_wait_s()
        lags: list[float] = []
        pauses = GcPauses()
        watcher = asyncio.create_task(watch_loop(lags))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        blaster.go()
        await asyncio.sleep(seconds / 2)
        try:
            extra = await place_call(caller, user="299", timeout=15)
            report.mid_flood_call_ok = extra.final.status == 200
            calls.append(extra)
        except (AssertionError, TimeoutError):
            report.mid_flood_call_ok = False
        result = await blaster.result(timeout=seconds + 30)
        report.kernel_drops = udp_receive_errors() - drops0
        report.cpu_s = time.process_time() - cpu0
        report.runqueue_wait_s = runqueue_wait_s() - wait0
        watcher.cancel()
        report.max_loop_lag_s = max(lags, default=0.0)
        pauses.close()
        report.longest_gc_s = pauses.longest_s
        t1 = t0 + float(result["elapsed_s"])  # type: ignore[arg-type]
        report.invites_sent = int(result["sent"])  # type: ignore[call-overload]
        report.send_errors = int(result["send_errors"])  # type: ignore[call-overload]
        report.send_rate = float(result["rate"])  # type: ignore[arg-type]
        report.responses = dict(result["responses"])  # type: ignore[call-overload]
        report.rss_after_kib = rss_kib()
        report.rss_peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        report.tracked_sources = rig.gateway.screen.tracked_sources
        assert rig.gateway.driver is not None
        report.tables_after = rig.gateway.driver.endpoint.table_sizes()

        gaps_in, gaps_out, shortfall = [], [], 0
        for call in calls[:legit]:
            gaps_in.append(max_gap(call.rtp.received_at, t0, t1))
            gaps_out.append(max_gap(call.rtp.sent_at, t0, t1))
            rtp = call.gateway_call(rig)._rtp
            assert rtp is not None
            shortfall += max(0, len(call.rtp.sent_at) - rtp.stats.received.packets)
        report.max_gap_from_gateway_s = max(gaps_in)
        report.max_gap_to_gateway_s = max(gaps_out)
        report.gateway_rtp_shortfall = shortfall
        connected = 0
        gateway_byes = [r for r in caller.requests if r.startswith(b"BYE")]
        for call in calls:
            if (await call.hang_up()).status == 200:
                connected += 1
        report.legit_connected_after = connected - (1 if report.mid_flood_call_ok else 0)
        if gateway_byes:
            report.legit_connected_after = min(report.legit_connected_after,
                                               legit - len(gateway_byes))
        await rig.idle()
        text = (await rig.http_get("/metrics")).decode()
        report.rejections = {
            line.split('"')[1]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("orga_gateway_security_rejections_total{")}
        report.orga_sessions = rig.emulator.stats.client_secrets_requests
        caller.close()
    return report

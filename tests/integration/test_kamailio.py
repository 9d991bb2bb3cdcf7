"""Two gateway workers behind the real Kamailio with the shipped `deploy/kamailio/kamailio.cfg`.

The whole path an operator builds (issue 12 item 6), checked from outside: two workers from one
config (`run --worker 1` and `--worker 2`, as the systemd template runs them); SIPp calls the
balancer; Kamailio picks a worker by Call-ID hash, record-routes, and probes the workers with
OPTIONS every second; the workers and the Orga emulator are real processes.

- A handful of calls, spread over both workers, each answered with audio both ways (the
  emulator heard the caller's 440 Hz; the worker sent the agent's audio and answered a turn),
  ACK and BYE through the route set (SIPp sends them to Kamailio with the Route it learned,
  each call ends `caller_bye` on its worker — not `no_ack` — and SIPp counts it successful).
- SIGTERM on one worker: its calls finish normally, its OPTIONS answer 503, new calls go to the
  other worker and succeed, and it exits 0 when its last call has ended.
- SIGKILL on one worker: new calls fail over to the other one (Kamailio's fr_timer, 2 s, or its
  probing, 1 s) and succeed.

Few calls and no timing assertions tighter than the protocol timers: a busy 2-core machine
carries them. Call-IDs are fixed (`-cid_str`) so the Call-ID hash splits them the same way
every run.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.cluster import (
    KAMAILIO,
    Balancer,
    Worker,
    options_status,
    shared_config,
)
from tests.integration.pcap import speech_pcap
from tests.integration.sipp import SIPP, SippRun, run_sipp
from tests.integration.stack import EmulatorProcess, Sample, value_of

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SIPP is None, reason="sipp is not installed (apt-get install sip-tester)"),
    pytest.mark.skipif(KAMAILIO is None, reason="kamailio is not installed (apt-get install "
                       "kamailio)"),
]

CALLS = 6
ENDED = "orga_gateway_calls_ended_total"
STARTED = "orga_gateway_calls_started_total"


class Cluster:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.emulator = EmulatorProcess()
        self.workers: list[Worker] = []
        self.balancer: Balancer | None = None

    async def start(self) -> Cluster:
        await self.emulator.start()
        config = shared_config(self.workdir, self.emulator.base_url, 2)
        self.workers = [Worker(i, config) for i in (1, 2)]
        await asyncio.gather(*(w.start() for w in self.workers))
        self.balancer = await Balancer(self.workdir, self.workers).start()
        return self

    async def stop(self) -> None:
        if self.balancer is not None:
            await self.balancer.stop()
        for worker in self.workers:
            await worker.stop()
        await self.emulator.stop()

    @property
    def lb(self) -> Balancer:
        assert self.balancer is not None
        return self.balancer

    async def call(self, tag: str, calls: int, hold_ms: int, *, rate: float = 2.0) -> SippRun:
        """`calls` SIPp calls through the balancer, each playing speech for `hold_ms`."""
        workdir = self.workdir / tag
        workdir.mkdir()
        speech_pcap(workdir / "audio.pcap")
        return await run_sipp(
            "uac_pcap_call_proxied.xml", self.lb.port, workdir, calls=calls, rate=rate,
            timeout=hold_ms / 1000 + 40,
            extra=("-l", str(calls), "-set", "pt", "0", "-set", "codec", "PCMU",
                   "-d", str(hold_ms), "-cid_str", f"{tag}-%u@kamailio-test"))


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    running = Cluster(tmp_path)
    try:
        yield await running.start()
    finally:
        lines = list(running.balancer.lines) if running.balancer else []
        for worker in running.workers:  # overload changes, as the workers logged them
            if worker.process is not None:
                lines += [f"{worker.name}: {line}" for line in worker.proc.lines
                          if "overloaded" in line]
        await running.stop()
        print("\n".join(lines[-60:]))  # shown by pytest only when the test failed


async def test_calls_spread_over_two_workers_with_audio_and_route_set(cluster: Cluster) -> None:
    run = await cluster.call("spread", CALLS, 6000)
    assert run.returncode == 0, run.stderr
    assert (run.successful, run.failed) == (CALLS, 0)
    # SIPp sent its ACKs and BYEs to the balancer with the learned route set ...
    assert len(run.sent("ACK")) == CALLS and len(run.sent("BYE")) == CALLS
    assert len(run.received("SIP/2.0 200")) >= 2 * CALLS  # 200 to INVITE and to BYE

    for worker in cluster.workers:  # a call's end is recorded just after its BYE's 200
        await wait_until_count(worker, 1)
    await wait_until_sum(cluster.workers, CALLS)
    per_worker = [await w.count(ENDED, result="caller_bye") for w in cluster.workers]
    # ... and each worker saw them: every call ended by the caller's BYE, none by a missing ACK.
    assert sum(per_worker) == CALLS and all(n >= 1 for n in per_worker), per_worker
    for worker in cluster.workers:
        samples = await worker.metrics()
        assert worker_count(samples, ENDED) == worker_count(samples, ENDED, result="caller_bye")
        # The agent's audio reached the phone side of every call on this worker.
        assert worker_count(samples, "orga_gateway_rtp_packets_total", direction="out") > 0
        assert worker_count(samples, "orga_gateway_turn_latency_seconds_count") >= (
            worker_count(samples, ENDED))

    sessions = (await cluster.emulator.state())["sessions"]
    assert len(sessions) == CALLS
    for session in sessions:  # the emulator heard every caller's 440 Hz
        assert session["utterances"], session
        assert all(abs(u["dominant_hz"] - 440) < 15 for u in session["utterances"]), session


async def test_sigterm_drains_one_worker_while_the_other_takes_new_calls(
        cluster: Cluster) -> None:
    draining, other = cluster.workers
    first = asyncio.create_task(cluster.call("before", CALLS, 12000, rate=3.0))
    # Wait until every call of the first batch is up (both workers carry some), then drain one.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 40
    while (started := [await w.count(STARTED) for w in cluster.workers])[0] + started[1] < CALLS:
        assert loop.time() < deadline and not first.done(), (started, first)
        await asyncio.sleep(0.2)
    assert min(started) >= 1, started
    draining.proc.proc.send_signal(signal.SIGTERM)
    await draining.proc.wait_for_line(r"SIGTERM: draining", 10)
    assert options_status(draining.sip_port, 2.0) == 503

    # Kamailio's probing (every 1 s) takes the draining worker out; new calls go to the other.
    await asyncio.sleep(3.0)
    second = await cluster.call("after", 2, 3000)
    assert (second.successful, second.failed) == (2, 0), second.stderr
    assert await draining.count(STARTED) == started[0]
    run = await first
    assert (run.successful, run.failed) == (CALLS, 0), run.stderr

    # The draining worker exits 0 once its last call has ended, every call ended by its caller.
    code = await asyncio.wait_for(draining.proc.proc.wait(), 30)
    assert code == 0
    ended = [line for line in draining.proc.lines if "call ended: " in line]
    assert len(ended) == started[0] and all("call ended: caller_bye" in e for e in ended), ended
    expected = started[1] + 2
    deadline = loop.time() + 10
    while await other.count(ENDED, result="caller_bye") < expected:
        assert loop.time() < deadline, "the other worker's calls did not all end cleanly"
        await asyncio.sleep(0.2)


async def test_sigkill_fails_new_calls_over_to_the_other_worker(cluster: Cluster) -> None:
    killed, survivor = cluster.workers
    killed.proc.proc.send_signal(signal.SIGKILL)
    await killed.proc.proc.wait()
    # At once, before probing noticed: calls hashed to the dead worker wait for fr_timer (2 s)
    # and go to the survivor.
    run = await cluster.call("failover", 4, 2000)
    assert (run.successful, run.failed) == (4, 0), run.stderr
    await wait_until_count(survivor, 4)


def worker_count(samples: list[Sample], name: str, **labels: str) -> float:
    return value_of(samples, name, **labels)


async def wait_until_count(worker: Worker, n: int, timeout: float = 10.0) -> None:
    """Until `worker` has recorded at least `n` calls ended by their caller's BYE."""
    await wait_until_sum([worker], n, timeout)


async def wait_until_sum(workers: list[Worker], n: int, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while sum([await w.count(ENDED, result="caller_bye") for w in workers]) < n:
        assert loop.time() < deadline, f"fewer than {n} calls ended with caller_bye"
        await asyncio.sleep(0.2)

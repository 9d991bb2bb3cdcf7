"""Orga session setup time against the local emulator: N sequential sessions, per-step figures.

Starts `orga-sip-gateway emulator` as a separate process on 127.0.0.1 (system-chosen port) so
the answerer does not share our event loop, then opens N sessions one after another with
`open_session` (client-secrets → ice-config → offer → /calls → ICE+DTLS connected → data
channel open), closes each, and prints p50/p95/max of every step and of the total.

    /work/venv/bin/python bench/orga_setup.py [--sessions 50] [--in-process]

Loopback only: ICE gathers on 127.0.0.1, no ICE servers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiortc.mediastreams import AudioStreamTrack

from gateway.orga.api import OrgaApi
from gateway.orga.peer import OrgaPeer
from gateway.orga.session import STEPS, open_session
from gateway.orga.settings import OrgaClientSettings, PeerSettings, SessionParams

KEY = "sk_orga_ai_bench_key"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


async def start_emulator_process() -> tuple[asyncio.subprocess.Process, str]:
    root = Path(__file__).resolve().parent.parent
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "emulator", "--listen", "127.0.0.1:0",
        "--api-key", KEY, "--log-level", "WARNING",
        stdout=asyncio.subprocess.PIPE, cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
    if not line.startswith("orga emulator listening on "):
        raise RuntimeError(f"emulator did not start: {line!r}")
    return proc, line.split()[-1]


async def run(sessions: int, in_process: bool) -> None:
    emulator = None
    proc = None
    if in_process:
        from gateway.emulator.server import Emulator, EmulatorConfig

        emulator = Emulator(EmulatorConfig(api_keys=(KEY,)))
        await emulator.start()
        base_url = emulator.base_url
    else:
        proc, base_url = await start_emulator_process()

    api = OrgaApi(OrgaClientSettings(base_url=base_url, api_key=KEY))
    params = SessionParams()
    peer_settings = PeerSettings(ice_addresses=("127.0.0.1",))
    track = AudioStreamTrack()
    samples: dict[str, list[float]] = {name: [] for name in (*STEPS, "total")}
    attempts = 0
    wall = time.perf_counter()
    try:
        for _ in range(sessions):
            session = await open_session(
                api, lambda servers: OrgaPeer(track, peer_settings, params, servers), params
            )
            attempts += session.attempts
            for name in samples:
                samples[name].append(session.timings[name] * 1000)
            await session.peer.close()
    finally:
        await api.aclose()
        if emulator is not None:
            await emulator.stop()
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
    wall = time.perf_counter() - wall

    where = "in-process" if in_process else "separate process"
    print(f"orga session setup: {sessions} sequential sessions against the local emulator "
          f"({where}), loopback ICE, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print(f"{'step':<18}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
    labels = {"client_secrets": "client-secrets", "ice_config": "ice-config",
              "offer": "offer creation", "calls": "/calls", "connected": "ICE+DTLS connected",
              "datachannel_open": "data channel open", "total": "total"}
    for name, values in samples.items():
        print(f"{labels[name]:<18}{statistics.median(values):>10.1f}"
              f"{percentile(values, 95):>10.1f}{max(values):>10.1f}")
    print(f"/calls attempts: {attempts} for {sessions} sessions; wall time {wall:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--in-process", action="store_true",
                        help="run the emulator in this process (shares the event loop)")
    args = parser.parse_args()
    asyncio.run(run(args.sessions, args.in_process))


if __name__ == "__main__":
    main()

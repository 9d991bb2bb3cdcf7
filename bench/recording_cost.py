"""What call recording costs the media path (issue 16): loop time per packet, thread CPU.

The recording taps the phone leg's RTP (`RtpSession.tap`): on the event loop each received or
sent packet costs one tuple appended to a list (and every 50 packets one hand-off to the
recording thread); decoding, placing and encoding run on that thread. This bench measures:

- loop time per packet: `RtpSession.datagram_received` (receive side) and `send_audio` (send
  side, to a real loopback socket) without a tap, with a tap whose thread is held back until
  the round ends ("tap only": the append itself), and with recording as it runs ("on": the
  thread decodes and encodes meanwhile and competes for the GIL); interleaved rounds, median
  of rounds — the differences are what recording adds to the media path per packet;
- recording thread CPU per recorded call: one minute of stereo audio (both directions,
  50 packets/s each) decoded, placed and encoded, as % of one core per call, Ogg/Opus and WAV.

    .venv/bin/python bench/recording_cost.py [--packets 20000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.clock import LoopClock
from gateway.config import RecordingConfig
from gateway.media.rtp import build_rtp
from gateway.media.rtp_session import RtpSession
from gateway.media.transcode import G711Codec
from gateway.records import recording as recording_module
from gateway.records.recording import Recorder
from gateway.sdp import Direction, MediaParams


def _speech(n_packets: int) -> list[bytes]:
    rng = np.random.default_rng(7)
    t = np.arange(160 * n_packets) / 8000
    pcm = (np.sin(2 * np.pi * 220 * t) * 6000 + rng.normal(0, 500, t.size)).astype(np.int16)
    codec = G711Codec("PCMU")
    return [codec.encode(pcm[i * 160:(i + 1) * 160]) for i in range(n_packets)]


async def loop_cost(packets: int, rounds: int) -> dict[str, list[float]]:
    """µs of loop time per packet, per round, receive and send, without and with a tap."""
    sink = await asyncio.get_running_loop().create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    sink_port = sink[0].get_extra_info("sockname")[1]
    params = MediaParams("127.0.0.1", sink_port, "PCMU", 0, 8000, 20, None, Direction.SENDRECV,
                         False)
    payloads = _speech(packets)
    datagrams = [build_rtp(0, i % 65536, i * 160, 1234, p) for i, p in enumerate(payloads)]
    variants = ("off", "tap only", "on")
    out: dict[str, list[float]] = {f"{side} {v}": [] for side in ("rx", "tx") for v in variants}
    recorder = Recorder(RecordingConfig(directory=tempfile.mkdtemp(prefix="bench-rec-"),
                                        format="ogg"))
    recorder.prepare()
    default_batch = recording_module.BATCH
    for _ in range(rounds):
        for label in variants:
            session = await RtpSession.open("127.0.0.1", 0, params, clock=LoopClock(),
                                            max_packet_rate=10 * packets)
            recording_module.BATCH = 10 * packets if label == "tap only" else default_batch
            recording = recorder.open("bench", asyncio.get_running_loop().time())
            session.tap = recording if label != "off" else None
            addr = ("127.0.0.1", sink_port)
            t0 = time.perf_counter()
            for d in datagrams:
                session.datagram_received(d, addr)
                session.jitter.pop()  # the caller track's tick, so the buffer stays small
            t1 = time.perf_counter()
            for p in payloads:
                session.send_audio(p, 160)
            t2 = time.perf_counter()
            out[f"rx {label}"].append((t1 - t0) / packets * 1e6)
            out[f"tx {label}"].append((t2 - t1) / packets * 1e6)
            session.tap = None
            await recording.close()
            await session.close()
    recording_module.BATCH = default_batch
    recorder.close()
    sink[0].close()
    return out


async def thread_cost(fmt: str, seconds: float = 60.0) -> tuple[float, list[float]]:
    """% of one core the recording thread spends per recorded call (both directions), and
    how late a 1 ms sleep on the loop wakes while the thread works (its GIL holds)."""
    recorder = Recorder(RecordingConfig(directory=tempfile.mkdtemp(prefix="bench-rec-"),
                                        format=fmt))
    recorder.prepare()
    n = int(seconds * 50)
    payloads = _speech(n)
    loop = asyncio.get_running_loop()
    recording = recorder.open("bench", 0.0)
    c0, t0 = time.process_time(), time.thread_time()
    for i, p in enumerate(payloads):
        recording.received(p, "PCMU", i * 160, i * 0.02)
        recording.sent(p, "PCMU", 1000 + i * 160, i * 0.02 + 0.001)
    closing = asyncio.ensure_future(recording.close())
    lags: list[float] = []
    while not closing.done():  # the loop's view while the thread works through the backlog
        t = loop.time()
        await asyncio.sleep(0.001)
        lags.append((loop.time() - t - 0.001) * 1000)
    path = await closing
    cpu = time.process_time() - c0 - (time.thread_time() - t0)  # the other threads' CPU
    recorder.close()
    assert path is not None
    size = os.path.getsize(path)
    print(f"  {fmt}: {seconds:.0f} s recorded in {cpu * 1000:.0f} ms of thread CPU, "
          f"file {size / 1024:.0f} KiB ({size / seconds / 1024:.1f} KiB/s)")
    return cpu / seconds * 100, lags


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    print(f"cpus={os.cpu_count()} python={sys.version.split()[0]} "
          f"load={os.getloadavg()[0]:.2f}")
    res = asyncio.run(loop_cost(args.packets, args.rounds))
    med = {k: statistics.median(v) for k, v in res.items()}
    print(f"loop time per packet, median of {args.rounds} rounds of {args.packets} (µs):")
    for side in ("rx", "tx"):
        off, tap, on = med[f"{side} off"], med[f"{side} tap only"], med[f"{side} on"]
        print(f"  {side}: without recording {off:6.2f}, tap only {tap:6.2f} ({tap - off:+5.2f}), "
              f"recording {on:6.2f} ({on - off:+5.2f}, {on / off:4.2f}x)")
    added = (med["rx on"] - med["rx off"]) + (med["tx on"] - med["tx off"])
    print(f"  per recorded call: {added * 100:.0f} µs of loop time per second "
          f"(100 packets/s), {added * 100 / 1e4:.3f} % of one core")
    print("recording thread CPU per recorded call; loop wake-up lateness meanwhile:")
    for fmt in ("ogg", "wav"):
        pct, lags = asyncio.run(thread_cost(fmt))
        print(f"  {fmt}: {pct:.2f} % of one core; a 1 ms sleep woke late by p50 "
              f"{statistics.median(lags):.2f}, p99 {np.percentile(lags, 99):.2f}, "
              f"max {max(lags):.2f} ms ({len(lags)} samples)")
    print(f"load={os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

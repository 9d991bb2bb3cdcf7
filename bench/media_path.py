"""Media-path benchmark (issue 5 item 14): per-call CPU, RSS and added latency per direction.

Three processes, all on 127.0.0.1:
  gateway (this process, the only one measured): per call an RtpSession, a CallerAudioTrack,
      an aiortc peer with the low-delay receiver (tune_receiver) and an AiAudioPump;
  phone   (--role phone): per call a UDP socket sending speech-like PCMU talkspurts every 20 ms
      and detecting talkspurt onsets in the RTP it gets back;
  orga    (--role orga): per call an aiortc peer standing in for Orga: sends its own speech-like
      talkspurts, detects onsets in what it hears, and drops --loss of the RTP on the WebRTC
      leg in both directions. Its receivers also use tune_receiver, so its own buffering does
      not count against the gateway (Orga's real server has its own).
Latency = onset detected at the far end − onset sent at the near end (CLOCK_MONOTONIC is
system-wide, so times from different processes compare). It includes the WebRTC leg's Opus
encode/decode, which the gateway cannot avoid. The signal is speech-like (harmonics with a
gliding pitch, formant-ish shaping, noise, 4 Hz syllable envelope), not a tone: Opus encodes
tones in a cheaper mode. The transcoding floor (G.711 decode + resample + aiortc's Opus
encoder, and back: Opus decode + resample + G.711 encode) runs first in this same process.

    /work/venv/bin/python bench/media_path.py [--calls 1 10 30] [--loss 0 0.01] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.media.transcode import (
    AiResampler,
    CallerResampler,
    G711Codec,
    frame_to_mono_s16,
    make_frame,
)

CYCLE_S = 1.0  # one talkspurt per second: 0.5 s speech, 0.5 s silence
SPEECH_S = 0.5
ON_DBFS, OFF_DBFS = -40.0, -50.0


# ------------------------------------------------------------------------------- signal


def speech_like(rate: int, seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    t = np.arange(n) / rate
    f0 = 140 + 30 * np.sin(2 * np.pi * 1.3 * t) + 10 * np.sin(2 * np.pi * 3.1 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = np.zeros(n)
    for h in range(1, 25):
        fh = h * 140
        if fh > min(3400, rate / 2 - 200):
            break
        # formant-ish weights around 500, 1500, 2500 Hz
        w = sum(np.exp(-((fh - f) / 250) ** 2) for f in (500, 1500, 2500)) + 0.05
        x += w * np.sin(h * phase + rng.uniform(0, 2 * np.pi))
    x += 0.15 * rng.standard_normal(n) * np.abs(np.sin(2 * np.pi * 2 * t))
    envelope = 0.55 + 0.45 * np.abs(np.sin(2 * np.pi * 2 * t))  # ~4 syllables/s
    x *= envelope
    return np.round(x / np.abs(x).max() * 16000).astype(np.int16)


def talkspurt_source(rate: int, seed: int) -> Any:
    """frame index -> 20 ms of samples: speech for SPEECH_S, then silence, every CYCLE_S."""
    per = rate // 50
    speech = speech_like(rate, SPEECH_S, seed)
    frames_per_cycle = int(CYCLE_S * 50)
    speech_frames = int(SPEECH_S * 50)
    silence = np.zeros(per, dtype=np.int16)

    def source(i: int) -> np.ndarray:
        k = i % frames_per_cycle
        if k < speech_frames:
            return speech[k * per : (k + 1) * per]
        return silence

    def is_onset(i: int) -> bool:
        return i % frames_per_cycle == 0

    return source, is_onset


class OnsetDetector:
    def __init__(self) -> None:
        self.quiet = 100
        self.onsets: list[float] = []

    def feed(self, pcm: np.ndarray, now: float) -> None:
        power = float(np.mean(np.square(pcm, dtype=np.float64))) if pcm.size else 0.0
        db = 10 * np.log10(max(power, 1e-9)) - 90.31
        if db > ON_DBFS:
            if self.quiet >= 10:
                self.onsets.append(now)
            self.quiet = 0
        elif db < OFF_DBFS:
            self.quiet += 1


# ------------------------------------------------------------------ control connection


async def send_msg(writer: asyncio.StreamWriter, msg: dict[str, Any]) -> None:
    writer.write((json.dumps(msg) + "\n").encode())
    await writer.drain()


async def recv_msg(reader: asyncio.StreamReader) -> dict[str, Any]:
    line = await reader.readline()
    if not line:
        raise ConnectionError("control connection closed")
    return dict(json.loads(line))


# ------------------------------------------------------------------------------ phone


async def phone_main(port: int) -> None:
    from gateway.media.rtp import RtpSenderState, parse_rtp

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await send_msg(writer, {"role": "phone"})
    hello = await recv_msg(reader)
    calls = int(hello["calls"])
    loop = asyncio.get_running_loop()
    codec = G711Codec("PCMU")
    source, is_onset = talkspurt_source(8000, seed=7)

    class Rx(asyncio.DatagramProtocol):
        def __init__(self) -> None:
            self.det = OnsetDetector()

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            now = time.monotonic()
            self.det.feed(codec.decode(parse_rtp(data).payload), now)

    endpoints = []
    for _ in range(calls):
        tr, proto = await loop.create_datagram_endpoint(Rx, local_addr=("127.0.0.1", 0))
        endpoints.append((tr, proto))
    await send_msg(writer, {"ports": [tr.get_extra_info("sockname")[1] for tr, _ in endpoints]})
    msg = await recv_msg(reader)
    targets = [("127.0.0.1", p) for p in msg["gateway_ports"]]
    sent_onsets: list[list[float]] = [[] for _ in range(calls)]
    senders = [RtpSenderState(0, 1000 + i, i * 100, 0) for i in range(calls)]
    payloads = [codec.encode(source(i)) for i in range(int(CYCLE_S * 50))]
    stop = asyncio.Event()

    async def pace() -> None:
        start = loop.time() + 0.05
        i = 0
        while not stop.is_set():
            await asyncio.sleep(max(0.0, start + i * 0.02 - loop.time()))
            payload = payloads[i % len(payloads)]
            onset = is_onset(i)
            for c, (tr, _) in enumerate(endpoints):
                tr.sendto(senders[c].next_packet(payload, 160), targets[c])
                if onset:
                    sent_onsets[c].append(time.monotonic())
            i += 1

    task = asyncio.create_task(pace())
    mark = (cpu_s(), time.monotonic())
    while not (await recv_msg(reader)).get("stop", False):  # "mark" starts the measurement
        mark = (cpu_s(), time.monotonic())
    cpu_pct = (cpu_s() - mark[0]) / (time.monotonic() - mark[1]) * 100
    stop.set()
    await task
    await send_msg(writer, {
        "sent": sent_onsets, "received": [proto.det.onsets for _, proto in endpoints],
        "cpu_pct": cpu_pct})
    for tr, _ in endpoints:
        tr.close()
    writer.close()


# ------------------------------------------------------------------------------- orga


def install_loss(loss: float, seed: int) -> None:
    """Drop `loss` of RTP on this process's WebRTC leg, both directions."""
    from aiortc.rtcdtlstransport import RTCDtlsTransport
    from aiortc.rtcrtpreceiver import RTCRtpReceiver
    from aiortc.rtp import is_rtcp

    rng = random.Random(seed)
    send_rtp = RTCDtlsTransport._send_rtp
    handle = RTCRtpReceiver._handle_rtp_packet

    async def lossy_send(self: Any, data: bytes) -> None:
        if not is_rtcp(data) and rng.random() < loss:
            return
        await send_rtp(self, data)

    async def lossy_handle(self: Any, packet: Any, arrival_time_ms: int) -> None:
        if rng.random() < loss:
            return
        await handle(self, packet, arrival_time_ms)

    RTCDtlsTransport._send_rtp = lossy_send  # type: ignore[method-assign]
    RTCRtpReceiver._handle_rtp_packet = lossy_handle  # type: ignore[method-assign]


def cycle_packets() -> list[bytes]:
    """One talkspurt cycle of Opus packets as aiortc would send them (48 kHz stereo, 96 kb/s),
    encoded once so the stand-in replays them instead of encoding per call."""
    from aiortc.codecs.opus import OpusEncoder

    source, _ = talkspurt_source(48000, seed=3)
    enc = OpusEncoder()
    n = int(CYCLE_S * 50)
    packets: list[bytes] = []
    for i in range(2 * n):  # the second cycle: the encoder is past its start-up
        frame = make_frame(np.repeat(source(i), 2), 48000, i * 960, "stereo")
        data, _ = enc.encode(frame)
        packets += data
    return packets[-n:]


class ReplayTrack:
    """Stand-in for Orga's outgoing audio: pre-encoded Opus packets paced at 20 ms."""

    def __new__(cls, packets: list[bytes]) -> Any:
        import fractions

        import av
        from aiortc.mediastreams import MediaStreamTrack

        class _Replay(MediaStreamTrack):
            kind = "audio"

            def __init__(self) -> None:
                super().__init__()
                self.i = 0
                self.start: float | None = None
                self.sent_at: list[float] = []

            async def recv(self) -> Any:
                loop = asyncio.get_running_loop()
                if self.start is None:
                    self.start = loop.time()
                await asyncio.sleep(max(0.0, self.start + self.i * 0.02 - loop.time()))
                packet = av.Packet(packets[self.i % len(packets)])
                packet.pts = self.i * 960
                packet.time_base = fractions.Fraction(1, 48000)
                self.sent_at.append(time.monotonic())
                self.i += 1
                return packet

        return _Replay()


async def orga_main(port: int, loss: float) -> None:
    from aiortc import RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

    from gateway.media.aiortc_receiver import tune_receiver
    from tests.media.loopback import loopback_only_ice, new_peer

    if loss > 0:
        install_loss(loss, seed=11)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await send_msg(writer, {"role": "orga"})
    _, is_onset = talkspurt_source(48000, seed=3)
    packets = cycle_packets()
    peers, detectors, tracks, tasks = [], [], [], []

    async def listen(track: MediaStreamTrack, det: OnsetDetector) -> None:
        try:
            while True:
                frame = await track.recv()
                det.feed(frame_to_mono_s16(frame), time.monotonic())
        except MediaStreamError:
            pass

    mark = (cpu_s(), time.monotonic())
    with loopback_only_ice():
        while True:
            msg = await recv_msg(reader)
            if msg.get("stop"):
                break
            if msg.get("mark"):
                mark = (cpu_s(), time.monotonic())
                continue
            pc = new_peer()
            det = OnsetDetector()
            detectors.append(det)
            peers.append(pc)

            def on_track(track: MediaStreamTrack, det: OnsetDetector = det) -> None:
                tasks.append(asyncio.ensure_future(listen(track, det)))

            pc.on("track", on_track)
            await pc.setRemoteDescription(RTCSessionDescription(msg["offer"], "offer"))
            track = ReplayTrack(packets)
            tracks.append(track)
            pc.addTrack(track)
            for t in pc.getTransceivers():
                tune_receiver(t.receiver)
            await pc.setLocalDescription(await pc.createAnswer())
            await send_msg(writer, {"answer": pc.localDescription.sdp})
    # onset send times: the moment the onset frame left the track (before encode)
    sent = [[t for i, t in enumerate(tr.sent_at) if is_onset(i)] for tr in tracks]
    cpu_pct = (cpu_s() - mark[0]) / (time.monotonic() - mark[1]) * 100
    await send_msg(writer, {"sent": sent, "received": [d.onsets for d in detectors],
                            "cpu_pct": cpu_pct})
    for pc in peers:
        await pc.close()
    writer.close()


# ---------------------------------------------------------------------------- gateway


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def transcoding_floor(fast: bool, seconds: float = 10.0) -> float:
    """% of one core per call for the codec work alone (both directions, no networking).

    fast=True: the path the gateway uses with CallerAudioTrack(opus=True) and
    tune_receiver(decode_on_loop=True): G.711 decode → Opus NB encode at 8 kHz; Opus decode
    (48 kHz mono) → resample → G.711 encode.
    fast=False: aiortc's own codec path: G.711 decode → resample to 48 kHz → aiortc's
    OpusEncoder (stereo 96 kb/s); aiortc's OpusDecoder (48 kHz stereo) → resample → G.711.
    """
    from aiortc.codecs.opus import OpusDecoder, OpusEncoder
    from aiortc.jitterbuffer import JitterFrame

    from gateway.media.transcode import OpusMonoDecoder, OpusPhoneEncoder

    codec = G711Codec("PCMU")
    speech8 = speech_like(8000, seconds, seed=5)
    speech48 = speech_like(48000, seconds, seed=6)
    payloads = [codec.encode(speech8[i : i + 160]) for i in range(0, len(speech8), 160)]
    enc_back = OpusEncoder()  # the AI side's packets, encoded outside the measurement
    back_packets: list[bytes] = []
    for i in range(len(payloads)):
        frame = make_frame(np.repeat(speech48[i * 960 : (i + 1) * 960], 2), 48000, i * 960,
                           "stereo")
        data, _ = enc_back.encode(frame)
        back_packets += data
    down = AiResampler()
    if fast:
        enc_fast, dec_fast = OpusPhoneEncoder(), OpusMonoDecoder()
    else:
        enc_up, dec_back, up = OpusEncoder(), OpusDecoder(), CallerResampler()
    t0 = cpu_s()
    for i, payload in enumerate(payloads):
        pcm = codec.decode(payload)  # caller -> AI
        if fast:
            enc_fast.encode(pcm)
        else:
            enc_up.encode(up.process(pcm))
        if i < len(back_packets):  # AI -> caller
            if fast:
                frames = dec_fast.decode(back_packets[i])
            else:
                frames = dec_back.decode(JitterFrame(back_packets[i], i * 960))
            for frame in frames:
                down.push(frame)
            while (out := down.pop()) is not None:
                codec.encode(out)
    return (cpu_s() - t0) / seconds * 100


async def loop_lag(samples: list[float], stop: asyncio.Event) -> None:
    """How late a 10 ms sleep wakes up: the gateway loop's own scheduling delay."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t = loop.time()
        await asyncio.sleep(0.01)
        samples.append((loop.time() - t - 0.01) * 1000)


async def gateway_run(calls: int, loss: float, seconds: float, warmup: float,
                      fast: bool, tune: bool) -> dict[str, Any]:
    from aiortc import RTCRtpSender, RTCSessionDescription

    from gateway.media.aiortc_receiver import tune_receiver
    from gateway.media.rtp_session import RtpSession
    from gateway.media.tracks import AiAudioPump, CallerAudioTrack
    from gateway.sdp import Direction, MediaParams
    from tests.media.loopback import loopback_only_ice, new_peer

    conns: dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
    ready = asyncio.Event()

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        role = (await recv_msg(reader))["role"]
        conns[role] = (reader, writer)
        if len(conns) == 2:
            ready.set()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    script = str(Path(__file__).resolve())
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, script, "--role", role, "--control", str(port), "--loss", str(loss))
        for role in ("phone", "orga")
    ]
    await asyncio.wait_for(ready.wait(), 30)
    (p_r, p_w), (o_r, o_w) = conns["phone"], conns["orga"]
    rss0 = rss_mb()
    await send_msg(p_w, {"calls": calls})
    phone_ports = (await recv_msg(p_r))["ports"]
    sessions, peers, pumps = [], [], []
    with loopback_only_ice():
        for c in range(calls):
            params = MediaParams("127.0.0.1", phone_ports[c], "PCMU", 0, 8000, 20, None,
                                 Direction.SENDRECV, False)
            session = await RtpSession.open("127.0.0.1", 0, params)
            sessions.append(session)
            pc = new_peer()
            peers.append(pc)
            tr = pc.addTransceiver(CallerAudioTrack(session, opus=fast), direction="sendrecv")
            if fast:
                caps = RTCRtpSender.getCapabilities("audio")
                tr.setCodecPreferences([c for c in caps.codecs if c.name == "opus"])
            if tune:
                tune_receiver(tr.receiver, decode_on_loop=fast)

            def on_track(track: Any, session: RtpSession = session) -> None:
                pump = AiAudioPump(track, session)
                pump.start()
                pumps.append(pump)

            pc.on("track", on_track)
            await pc.setLocalDescription(await pc.createOffer())
            await send_msg(o_w, {"offer": pc.localDescription.sdp})
            answer = (await recv_msg(o_r))["answer"]
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    await send_msg(p_w, {"gateway_ports": [s.local_address[1] for s in sessions]})
    await asyncio.sleep(warmup)
    lags: list[float] = []
    lag_stop = asyncio.Event()
    lag_task = asyncio.create_task(loop_lag(lags, lag_stop))
    c0, w0 = cpu_s(), time.monotonic()
    await send_msg(p_w, {"mark": True})
    await send_msg(o_w, {"mark": True})
    await asyncio.sleep(seconds)
    wall = time.monotonic() - w0
    cpu = (cpu_s() - c0) / wall * 100
    lag_stop.set()
    await lag_task
    rss = rss_mb()
    await send_msg(p_w, {"stop": True})
    await send_msg(o_w, {"stop": True})
    phone = await recv_msg(p_r)
    orga = await recv_msg(o_r)
    underruns = sum(p.stats.underruns_speech for p in pumps)
    for pump in pumps:
        await pump.stop()
    for pc in peers:
        await pc.close()
    for s in sessions:
        await s.close()
    for proc in procs:
        await proc.wait()
    server.close()
    lat_up = match(phone["sent"], orga["received"], w0 + 0.5, w0 + seconds)
    lat_down = match(orga["sent"], phone["received"], w0 + 0.5, w0 + seconds)
    return {
        "calls": calls, "loss": loss, "cpu_pct": cpu, "rss_per_call": (rss - rss0) / calls,
        "up": lat_up, "down": lat_down, "underruns_speech": underruns,
        "loop_lag_p99": float(np.percentile(lags, 99)) if lags else float("nan"),
        # the other processes' CPU over the same window, % of one core
        "phone_cpu": phone["cpu_pct"],
        "orga_cpu": orga["cpu_pct"],
    }


def match(sent: list[list[float]], received: list[list[float]], t_from: float,
          t_to: float) -> list[float]:
    """Latency (ms) per onset: received onset − the latest sent onset before it."""
    out = []
    for s_list, r_list in zip(sent, received, strict=True):
        s_arr = np.array(s_list)
        for r in r_list:
            if not t_from <= r <= t_to:
                continue
            before = s_arr[s_arr <= r]
            if before.size and r - before[-1] < CYCLE_S / 2:
                out.append((r - before[-1]) * 1000)
    return out


def pct(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q):6.1f}" if values else "   n/a"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", choices=["gateway", "phone", "orga"], default="gateway")
    ap.add_argument("--control", type=int, default=0)
    ap.add_argument("--calls", type=int, nargs="+", default=[1, 10, 30])
    ap.add_argument("--loss", type=float, nargs="+", default=[0.0, 0.01])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--receiver", choices=["tuned", "aiortc"], default="tuned",
                    help="aiortc: leave aiortc's own receive jitter buffer (for comparison)")
    ap.add_argument("--mode", choices=["fast", "aiortc"], default="fast",
                    help="fast: Opus encoded/decoded by the gateway on the loop; "
                    "aiortc: aiortc's own codec path (thread pool, 48 kHz stereo)")
    args = ap.parse_args()
    if args.role == "phone":
        asyncio.run(phone_main(args.control))
        return 0
    if args.role == "orga":
        asyncio.run(orga_main(args.control, args.loss[0]))
        return 0
    fast = args.mode == "fast"
    floor_ref = transcoding_floor(fast=False)
    floor_fast = transcoding_floor(fast=True)
    floor = floor_fast if fast else floor_ref
    print(f"cpus={os.cpu_count()} python={sys.version.split()[0]} signal=speech-like "
          f"mode={args.mode} receiver={args.receiver} load={os.getloadavg()[0]:.2f}")
    print(f"transcoding floor, no network, % of one core per call: aiortc codec path "
          f"{floor_ref:.2f}, gateway fast path {floor_fast:.2f} (ratio below uses "
          f"{'fast' if fast else 'aiortc'})")
    print("calls loss  cpu%/call  x floor  RSS MB/call | caller->AI ms p50   p99 "
          "| AI->caller ms p50   p99 | n_up n_down underruns | loop lag p99 ms | "
          "other processes % core: phone orga")
    for calls in args.calls:
        for loss in args.loss:
            r = asyncio.run(gateway_run(calls, loss, args.seconds, args.warmup, fast,
                                        args.receiver == "tuned"))
            per_call = r["cpu_pct"] / calls
            print(f"{calls:5d} {loss * 100:3.0f}%  {per_call:9.2f}  {per_call / floor:7.2f}  "
                  f"{r['rss_per_call']:11.2f} |            {pct(r['up'], 50)} {pct(r['up'], 99)} "
                  f"|            {pct(r['down'], 50)} {pct(r['down'], 99)} "
                  f"| {len(r['up']):4d} {len(r['down']):6d} {r['underruns_speech']:9d} "
                  f"| {r['loop_lag_p99']:15.1f} | {r['phone_cpu']:5.0f} {r['orga_cpu']:4.0f} "
                  f"load={os.getloadavg()[0]:.2f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

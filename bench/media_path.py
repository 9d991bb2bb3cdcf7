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
        [--record off ogg wav]   # each run without and with call recording (issue 16)
        [--floor-beside]         # also the speech floor measured beside the run, same minutes
        [--repeat 8]             # each configuration 8 times, then the pooled ratio
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from media_peers import orga_main, phone_main
from media_signal import CYCLE_S, cpu_s, recv_msg, send_msg, speech_like

from gateway import eventloop
from gateway.media.transcode import (
    AiResampler,
    CallerResampler,
    G711Codec,
    make_frame,
)

# ---------------------------------------------------------------------------- gateway


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class FloorWork:
    """The codec work of one call, one 20 ms frame each way per `step()`, nothing else.

    fast=True: the path the gateway uses with CallerAudioTrack(opus=True) and
    aiortc_patches.tune_receiver: G.711 decode → Opus NB encode at 8 kHz; Opus decode
    straight to 8 kHz → G.711 encode.
    fast=False: the speech floor of issue 11, aiortc's own codec path: G.711 decode → resample
    to 48 kHz → aiortc's OpusEncoder (stereo 96 kb/s, complexity 10); aiortc's OpusDecoder
    (48 kHz stereo) → resample → G.711.
    """

    def __init__(self, fast: bool, seconds: float = 10.0) -> None:
        from aiortc.codecs.opus import OpusDecoder, OpusEncoder

        from gateway.media.transcode import OpusMonoDecoder, OpusPhoneEncoder

        self.fast = fast
        self.codec = codec = G711Codec("PCMU")
        speech8 = speech_like(8000, seconds, seed=5)
        speech48 = speech_like(48000, seconds, seed=6)
        self.payloads = [codec.encode(speech8[i : i + 160]) for i in range(0, len(speech8), 160)]
        enc_back = OpusEncoder()  # the AI side's packets, encoded outside the measurement
        self.back: list[bytes] = []
        for i in range(len(self.payloads)):
            frame = make_frame(np.repeat(speech48[i * 960 : (i + 1) * 960], 2), 48000, i * 960,
                               "stereo")
            data, _ = enc_back.encode(frame)
            self.back += data
        self.down = AiResampler()
        if fast:
            self.enc_fast, self.dec_fast = OpusPhoneEncoder(), OpusMonoDecoder()
        else:
            self.enc_up, self.dec_back, self.up = OpusEncoder(), OpusDecoder(), CallerResampler()
        self.i = 0

    def step(self) -> None:
        from aiortc.jitterbuffer import JitterFrame

        i, codec = self.i % len(self.payloads), self.codec
        self.i += 1
        pcm = codec.decode(self.payloads[i])  # caller -> AI
        if self.fast:
            self.enc_fast.encode(pcm)
        else:
            self.enc_up.encode(self.up.process(pcm))
        if i < len(self.back):  # AI -> caller
            if self.fast:
                if (pcm8 := self.dec_fast.decode(self.back[i])) is not None:
                    self.down.push_pcm(pcm8)
            else:
                for frame in self.dec_back.decode(JitterFrame(self.back[i], self.i * 960)):
                    self.down.push(frame)
            while (out := self.down.pop()) is not None:
                codec.encode(out)


def transcoding_floor(fast: bool, seconds: float = 10.0) -> float:
    """% of one core per call for the codec work alone (both directions, no networking)."""
    work = FloorWork(fast, seconds)
    t0 = cpu_s()
    for _ in range(len(work.payloads)):
        work.step()
    return (cpu_s() - t0) / seconds * 100


async def floor_main(port: int) -> None:
    """The speech floor measured beside the run, by a process of its own (--role floor).

    This VM's speed drifts by up to a third within minutes, so a floor measured before and
    after a run can differ from the one the run saw. This process runs the floor in slices of
    250 frames (~5 s of audio, tens of ms of CPU) with 0.5 s pauses from the gateway's mark to
    its stop, at nice 10 so the gateway and the stand-ins go first; it reports the CPU of one
    frame each way per 20 ms, the floor over the same minutes as the run.
    """
    os.nice(10)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await send_msg(writer, {"role": "floor"})
    work = FloorWork(fast=False)
    for _ in range(100):
        work.step()  # warm
    await recv_msg(reader)  # the mark
    stop = asyncio.ensure_future(recv_msg(reader))
    spent, frames = 0.0, 0
    while not stop.done():
        t0 = cpu_s()
        for _ in range(250):
            work.step()
        spent += cpu_s() - t0
        frames += 250
        await asyncio.wait([stop], timeout=0.5)
    await send_msg(writer, {"floor_pct": spent / max(1, frames) / 0.02 * 100})


async def loop_lag(samples: list[float], stop: asyncio.Event) -> None:
    """How late a 10 ms sleep wakes up: the gateway loop's own scheduling delay."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t = loop.time()
        await asyncio.sleep(0.01)
        samples.append((loop.time() - t - 0.01) * 1000)


async def gateway_run(calls: int, loss: float, seconds: float, warmup: float,
                      fast: bool, tune: bool, record: str = "off",
                      floor_beside: bool = False) -> dict[str, Any]:
    from aiortc import RTCRtpSender, RTCSessionDescription

    from gateway.aiortc_patches import tune_receiver, tune_sender
    from gateway.clock import LoopClock
    from gateway.media.downlink import AiAudioPump
    from gateway.media.rtp_session import RtpSession
    from gateway.media.uplink import CallerAudioTrack
    from gateway.sdp import Direction, MediaParams
    from tests.media.loopback import loopback_only_ice, new_peer

    conns: dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
    ready = asyncio.Event()

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        role = (await recv_msg(reader))["role"]
        conns[role] = (reader, writer)
        if len(conns) == (3 if floor_beside else 2):
            ready.set()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    script = str(Path(__file__).resolve())
    roles = ("phone", "orga", "floor") if floor_beside else ("phone", "orga")
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, script, "--role", role, "--control", str(port), "--loss", str(loss))
        for role in roles
    ]
    await asyncio.wait_for(ready.wait(), 30)
    (p_r, p_w), (o_r, o_w) = conns["phone"], conns["orga"]
    # As the daemon does before it takes calls (app.py): the start-up heap is left out of
    # every full garbage collection from here on.
    gc.collect()
    gc.freeze()
    rss0 = rss_mb()
    await send_msg(p_w, {"calls": calls})
    phone_ports = (await recv_msg(p_r))["ports"]
    sessions, peers, pumps = [], [], []
    clock = LoopClock()
    with loopback_only_ice():
        for c in range(calls):
            params = MediaParams("127.0.0.1", phone_ports[c], "PCMU", 0, 8000, 20, None,
                                 Direction.SENDRECV, False)
            session = await RtpSession.open("127.0.0.1", 0, params, clock=clock)
            sessions.append(session)
            pc = new_peer()
            peers.append(pc)
            tr = pc.addTransceiver(CallerAudioTrack(session, clock, opus=fast),
                                   direction="sendrecv")
            if fast:
                caps = RTCRtpSender.getCapabilities("audio")
                tr.setCodecPreferences([c for c in caps.codecs if c.name == "opus"])
            pump = AiAudioPump(session, clock)
            pumps.append(pump)
            if tune:  # AI audio straight from the receiver into the pump
                tune_receiver(tr.receiver, deliver=pump.feed_pcm, on_loss=pump.lost)
            if fast:  # the caller's Opus packets straight to the network, as OrgaPeer does
                tune_sender(tr.sender)

            def on_track(track: Any, pump: AiAudioPump = pump) -> None:
                pump.start(track)

            pc.on("track", on_track)
            await pc.setLocalDescription(await pc.createOffer())
            await send_msg(o_w, {"offer": pc.localDescription.sdp})
            answer = (await recv_msg(o_r))["answer"]
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    recorder = recordings = None
    if record != "off":  # every call recorded, as with `record = true` on its route
        import tempfile

        from gateway.config import RecordingConfig
        from gateway.records.recording import Recorder

        recorder = Recorder(RecordingConfig(directory=tempfile.mkdtemp(prefix="bench-rec-"),
                                            format=record))
        recorder.prepare()
        now = asyncio.get_running_loop().time()
        recordings = [recorder.open(f"call{c}", now) for c in range(calls)]
        for session, recording in zip(sessions, recordings, strict=True):
            session.tap = recording
    await send_msg(p_w, {"gateway_ports": [s.local_address[1] for s in sessions]})
    await asyncio.sleep(warmup)
    lags: list[float] = []
    lag_stop = asyncio.Event()
    lag_task = asyncio.create_task(loop_lag(lags, lag_stop))
    c0, w0 = cpu_s(), time.monotonic()
    await send_msg(p_w, {"mark": True})
    await send_msg(o_w, {"mark": True})
    if floor_beside:
        await send_msg(conns["floor"][1], {"mark": True})
    await asyncio.sleep(seconds)
    wall = time.monotonic() - w0
    cpu = (cpu_s() - c0) / wall * 100
    floor_pct = float("nan")
    if floor_beside:
        await send_msg(conns["floor"][1], {"stop": True})
        floor_pct = (await recv_msg(conns["floor"][0]))["floor_pct"]
    lag_stop.set()
    await lag_task
    rss = rss_mb()
    await send_msg(p_w, {"stop": True})
    await send_msg(o_w, {"stop": True})
    phone = await recv_msg(p_r)
    orga = await recv_msg(o_r)
    underruns = sum(p.stats.underruns_speech for p in pumps)
    lost_speech = sum(p.stats.lost_speech for p in pumps)  # AI-leg losses, not underruns
    if recorder is not None and recordings is not None:
        written = [await r.close() for r in recordings]
        recorder.close()
        assert all(written), "a recording failed"
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
    # The same, leaving out onsets that lost a packet on the simulated network: the onset
    # frame (or the one after it, where the decoder recovers) never arrived, so the far end
    # heard it one or two frames later — the network's loss, not delay the gateway added.
    up_kept = match(phone["sent"], orga["received"], w0 + 0.5, w0 + seconds,
                    drops=orga["dropped_in"], before=True)
    down_kept = match(orga["sent"], phone["received"], w0 + 0.5, w0 + seconds,
                      drops=orga["dropped_out"], before=False)
    return {
        "calls": calls, "loss": loss, "cpu_pct": cpu, "floor_during": floor_pct,
        "rss_per_call": (rss - rss0) / calls,
        "up": lat_up, "down": lat_down, "underruns_speech": underruns,
        "up_kept": up_kept, "down_kept": down_kept,
        "lost_speech": lost_speech,
        "loop_lag_p99": float(np.percentile(lags, 99)) if lags else float("nan"),
        # the other processes' CPU over the same window, % of one core
        "phone_cpu": phone["cpu_pct"],
        "gap": (phone["gap_p99"], phone["gap_max"], phone["gaps_over_30"], phone["packets"]),
        "orga_cpu": orga["cpu_pct"],
    }


LOSS_WINDOW_S = 0.045  # an onset frame and the next: what a drop there delays


def match(sent: list[list[float]], received: list[list[float]], t_from: float,
          t_to: float, drops: list[list[float]] | None = None,
          before: bool = False) -> list[float]:
    """Latency (ms) per onset: received onset − the latest sent onset before it.

    With `drops` (per call, times the stand-in dropped a packet): leave out onsets with a drop
    within LOSS_WINDOW_S after it was sent (before=False: the stand-in dropped on sending) or
    before it was detected (before=True: the stand-in dropped on receiving)."""
    out = []
    for c, (s_list, r_list) in enumerate(zip(sent, received, strict=True)):
        s_arr = np.array(s_list)
        d_arr = np.array(drops[c]) if drops is not None else np.array([])
        for r in r_list:
            if not t_from <= r <= t_to:
                continue
            earlier = s_arr[s_arr <= r]
            if not (earlier.size and r - earlier[-1] < CYCLE_S / 2):
                continue
            s = earlier[-1]
            lo, hi = (r - LOSS_WINDOW_S, r) if before else (s, s + LOSS_WINDOW_S)
            if d_arr.size and ((d_arr >= lo) & (d_arr <= hi)).any():
                continue
            out.append((r - s) * 1000)
    return out


def pct(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q):6.1f}" if values else "   n/a"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", choices=["gateway", "phone", "orga", "floor"], default="gateway")
    ap.add_argument("--control", type=int, default=0)
    ap.add_argument("--calls", type=int, nargs="+", default=[1, 10, 30])
    ap.add_argument("--loss", type=float, nargs="+", default=[0.0, 0.01])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--receiver", choices=["tuned", "aiortc"], default="tuned",
                    help="aiortc: leave aiortc's own receive jitter buffer (for comparison)")
    ap.add_argument("--record", choices=["off", "ogg", "wav"], nargs="+", default=["off"],
                    help="record every call (issue 16); several values compare in one run")
    ap.add_argument("--mode", choices=["fast", "aiortc"], default="fast",
                    help="fast: Opus encoded/decoded by the gateway on the loop; "
                    "aiortc: aiortc's own codec path (thread pool, 48 kHz stereo)")
    ap.add_argument("--floor-beside", action="store_true",
                    help="also measure the speech floor in a process of its own during the run "
                    "(it competes for the CPU: the delay and underrun figures are for runs "
                    "without it)")
    ap.add_argument("--loop", choices=eventloop.CHOICES, default="auto",
                    help="the gateway's event loop (auto, the daemon's default: uvloop if "
                    "installed)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run each configuration this many times and print the pooled ratio "
                    "(mean CPU over mean floor): one run on a VM whose speed drifts reads "
                    "±15 %%")
    args = ap.parse_args()
    if args.role == "phone":
        asyncio.run(phone_main(args.control))
        return 0
    if args.role == "orga":
        asyncio.run(orga_main(args.control, args.loss[0]))
        return 0
    if args.role == "floor":
        asyncio.run(floor_main(args.control))
        return 0
    fast = args.mode == "fast"
    print(f"cpus={os.cpu_count()} python={sys.version.split()[0]} signal=speech-like "
          f"mode={args.mode} receiver={args.receiver} loop={args.loop} "
          f"load={os.getloadavg()[0]:.2f}")
    print("floor: % of one core per call for the codec work alone, no network, measured in this "
          "process right before and right after each run (this machine's speed drifts by up "
          "to a third over minutes; the ratio uses the mean). speech = the speech floor of "
          "issue 11 (G.711 <-> 48 kHz Opus at complexity 10 both ways, aiortc's codecs); own = "
          "the gateway's own codec path alone")
    print("x floor (during the run, --floor-beside) = cpu%/call / the speech floor measured by "
          "a process of its own (nice 10) in slices throughout the run: the same minutes, but "
          "beside the run (on this 2-vCPU VM it reads 10-20 % higher than alone, so the "
          "before/after ratio is the conservative one)")
    print("x floor before/after = cpu%/call / speech floor; x own = cpu%/call / own codec "
          "path. underruns: AI frames late for their phone packet slot mid-speech (% of frames "
          "sent); lost: slots of AI packets lost on the WebRTC leg (concealed, not underruns)")
    print("rec   calls loss  cpu%/call  x floor (floor during the run)  x floor before/after  "
          "x own  RSS MB/call | caller->AI ms p50   p99 "
          "| AI->caller ms p50   p99 | p99 up/down without onsets that lost a packet "
          "(how many left out) | n_up n_down underruns (%)  lost | loop lag p99 ms | "
          "other processes % core: phone orga | RTP to phone: gap p99 max ms, >30 ms of n")
    runs = [(c, loss, rec) for c in args.calls for loss in args.loss for rec in args.record
            for _ in range(args.repeat)]
    pooled: dict[tuple[int, float, str], list[tuple[float, float]]] = {}
    for calls, loss, record in runs:
        before = (transcoding_floor(fast=False, seconds=5), transcoding_floor(True, seconds=5))
        r = eventloop.run(gateway_run(calls, loss, args.seconds, args.warmup, fast,
                                      args.receiver == "tuned", record, args.floor_beside),
                          args.loop)
        after = (transcoding_floor(fast=False, seconds=5), transcoding_floor(True, seconds=5))
        floor_ref, floor_fast = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
        per_call = r["cpu_pct"] / calls
        under_pct = 100 * r["underruns_speech"] / max(1, r["gap"][3])
        print(f"{record:5s} {calls:5d} {loss * 100:3.0f}%  {per_call:9.2f}  "
              f"{per_call / r['floor_during']:7.2f} ({r['floor_during']:.2f})  "
              f"{per_call / floor_ref:7.2f}  {per_call / floor_fast:5.2f}  "
              f"{r['rss_per_call']:11.2f} |            {pct(r['up'], 50)} {pct(r['up'], 99)} "
              f"|            {pct(r['down'], 50)} {pct(r['down'], 99)} "
              f"| {pct(r['up_kept'], 99)} {pct(r['down_kept'], 99)} "
              f"({len(r['up']) - len(r['up_kept'])}/{len(r['down']) - len(r['down_kept'])}) "
              f"| {len(r['up']):4d} {len(r['down']):6d} {r['underruns_speech']:9d} "
              f"({under_pct:.2f}) {r['lost_speech']:5d} "
              f"| {r['loop_lag_p99']:15.1f} | {r['phone_cpu']:5.0f} {r['orga_cpu']:4.0f} "
              f"| {r['gap'][0]:5.1f} {r['gap'][1]:5.1f} {r['gap'][2]} of {r['gap'][3]} "
              f"load={os.getloadavg()[0]:.2f} | floor speech {before[0]:.2f}/{after[0]:.2f} "
              f"own {before[1]:.2f}/{after[1]:.2f} (before/after)",
              flush=True)
        pooled.setdefault((calls, loss, record), []).append((per_call, floor_ref))
    if args.repeat > 1:
        for (calls, loss, record), got in pooled.items():
            cpu, floor = np.mean([c for c, _ in got]), np.mean([f for _, f in got])
            ratios = [c / f for c, f in got]
            print(f"pooled {record} {calls} calls {loss * 100:.0f}% loss, {len(got)} runs: "
                  f"cpu%/call {cpu:.2f} ({min(c for c, _ in got):.2f}-"
                  f"{max(c for c, _ in got):.2f}), speech floor {floor:.2f}, x floor "
                  f"{cpu / floor:.2f} "
                  f"(runs {min(ratios):.2f}-{max(ratios):.2f}, {sum(r <= 1.0 for r in ratios)} "
                  f"of {len(ratios)} at or below 1.0)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

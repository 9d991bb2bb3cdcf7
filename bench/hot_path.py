"""Hot-path overhead (issue 11 item 5): the gateway's own per-call media code against the
transcoding floor, both measured in this process, in CPU time (so a busy machine slows the run
but hardly moves the figures).

For `--seconds` of speech-like audio each way, one call's media code runs exactly as in a call,
minus the sockets and aiortc: caller → AI, PCMU RTP packets go into an `RtpSession`'s receive
path (parse, latch, stats, jitter buffer) and `CallerAudioTrack`, in push mode as the tuned
sender drives it, turns them into Opus packets in that same call; AI → caller, Opus packets go
through the low-delay reorder buffer and our decoder into `AiAudioPump.feed`, and
`AiAudioPump.tick` sends one RTP packet per ptime through the same `RtpSession` (its socket
replaced by a counter). The floors (bench/media_path.py `transcoding_floor`) are the codec work
alone: `fast`, the codecs the gateway runs (Opus NB 8 kHz encode, Opus decode + resample);
`aiortc`, µ-law ⇄ 48 kHz stereo Opus at complexity 10 as aiortc would do it. What the gateway
spends above the fast floor is its own Python per packet.

    nice -n -5 .venv/bin/python bench/hot_path.py [--seconds 20] [--ptime 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from media_path import transcoding_floor
from media_signal import cpu_s, speech_like

from gateway.clock import FakeClock, LoopClock
from gateway.media.downlink import AiAudioPump
from gateway.media.reorder import LowDelayReorderBuffer
from gateway.media.rtp import RtpSenderState
from gateway.media.rtp_session import RtpSession
from gateway.media.transcode import OpusMonoDecoder, OpusPhoneEncoder, g711
from gateway.media.uplink import CallerAudioTrack
from gateway.sdp import Direction, MediaParams
from tests.media.vclock import virtual_time_loop

PHONE = ("127.0.0.1", 40000)


class _CountingTransport:
    """Stands in for the UDP socket: counts what the session would send."""

    def __init__(self) -> None:
        self.sent = 0

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent += 1

    def close(self) -> None:
        pass


async def one_call(seconds: float, ptime: int) -> tuple[float, float, int]:
    """CPU seconds (uplink, downlink) for `seconds` of audio each way; packets sent."""
    clock = LoopClock()
    # The phone side's time, stepped 20 ms per frame by hand (its packets pass the rate cap
    # as they would in real time; no timer of the track's fires in between).
    phone_clock = FakeClock()
    params = MediaParams(PHONE[0], PHONE[1], "PCMU", 0, 8000, ptime, None,
                         Direction.SENDRECV, False)
    session = RtpSession(params, clock=phone_clock)
    transport = _CountingTransport()
    session._transport = transport  # type: ignore[assignment]
    codec = g711("PCMU")
    speech8 = speech_like(8000, seconds, seed=5)
    phone = RtpSenderState(0, 0x1234, 1, 1)
    samples = 8 * ptime
    packets = [phone.next_packet(codec.encode(speech8[i:i + samples]), samples)
               for i in range(0, len(speech8) - samples + 1, samples)]
    # The AI's Opus packets, encoded outside the measurement.
    enc = OpusPhoneEncoder()
    speech_ai = speech_like(8000, seconds, seed=6)
    opus = [bytes(enc.encode(speech_ai[i:i + 160]))
            for i in range(0, len(speech_ai) - 159, 160)]
    enc.close()
    loop = asyncio.get_running_loop()

    track = CallerAudioTrack(session, phone_clock, opus=True)
    pushed = 0

    def send(packet: Any) -> None:  # where tune_sender's send would protect and send it
        nonlocal pushed
        pushed += 1

    frames = int(seconds * 50)
    per_tick = max(1, 20 // ptime) if ptime <= 20 else 0
    sent_packets = 0
    t0 = cpu_s()
    track.push_to(send)
    for n in range(frames):
        # The phone's packets for this 20 ms (ptime 30/40: one every few ticks); each frame
        # they complete is pushed from the packet's receive callback, as in a call.
        due = (n + 1) * 20 // ptime if ptime > 20 else (n + 1) * per_tick
        while sent_packets < min(due, len(packets)):
            session.datagram_received(packets[sent_packets], PHONE)
            sent_packets += 1
        phone_clock.advance(0.020)
    up = cpu_s() - t0
    track.stop()
    assert pushed >= frames - 1, (pushed, frames)  # the last packet may end mid-frame

    pump = AiAudioPump(session, clock)
    reorder, decoder = LowDelayReorderBuffer(), OpusMonoDecoder()
    ticks_per_frame = 20 / ptime
    ticks = 0.0
    t0 = cpu_s()
    for seq, payload in enumerate(opus):
        for _, data in reorder.add(seq, seq * 960, payload):
            if (pcm := decoder.decode(data)) is not None:
                pump.feed_pcm(pcm)
        ticks += ticks_per_frame
        while ticks >= 1.0:
            pump.tick(loop.time())
            ticks -= 1.0
    down = cpu_s() - t0
    await pump.stop()
    return up, down, transport.sent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--ptime", type=int, default=20, choices=[10, 20, 30, 40])
    p.add_argument("--rounds", type=int, default=3, help="best of N for each figure")
    args = p.parse_args()
    floor_fast = min(transcoding_floor(fast=True, seconds=args.seconds)
                     for _ in range(args.rounds))
    floor_ref = min(transcoding_floor(fast=False, seconds=args.seconds)
                    for _ in range(args.rounds))
    runs = []
    for _ in range(args.rounds):
        loop = virtual_time_loop()
        try:
            runs.append(loop.run_until_complete(one_call(args.seconds, args.ptime)))
        finally:
            loop.close()
    up = min(r[0] for r in runs) / args.seconds * 100
    down = min(r[1] for r in runs) / args.seconds * 100
    total = up + down
    print(f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.seconds:.0f} s of "
          f"speech each way, ptime {args.ptime} ms, best of {args.rounds}; % of one core per call")
    print(f"  transcoding floor, fast (codecs the gateway runs)   {floor_fast:6.3f}")
    print(f"  transcoding floor, aiortc (48 kHz Opus, cplx 10)   {floor_ref:6.3f}")
    print(f"  gateway media code: caller -> AI                   {up:6.3f}")
    print(f"  gateway media code: AI -> caller                   {down:6.3f}")
    print(f"  gateway media code, both ways                      {total:6.3f}   "
          f"{total / floor_fast:.2f}x fast floor, {total / floor_ref:.2f}x aiortc floor")
    print(f"  above the fast floor (our Python per packet)       {total - floor_fast:6.3f}   "
          f"({runs[0][2]} RTP packets sent)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

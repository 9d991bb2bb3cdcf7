"""The far ends of bench/media_path.py, run as separate processes (not measured): the phone
(RTP talkspurts in, onsets detected in what comes back) and the Orga stand-in (an aiortc peer
per call replaying pre-encoded speech, detecting onsets, dropping --loss of its RTP)."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import numpy as np
from media_signal import (
    CYCLE_S,
    OnsetDetector,
    cpu_s,
    recv_msg,
    send_msg,
    talkspurt_source,
)

from gateway.media.transcode import G711Codec, frame_to_mono_s16, make_frame

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
            self.arrivals: list[float] = []

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            now = time.monotonic()
            self.arrivals.append(now)
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
    # the pump's pacing as the phone sees it: gaps between packets inside the window
    gaps = np.concatenate([
        np.diff([t for t in proto.arrivals if t >= mark[1]]) for _, proto in endpoints
    ]) * 1000
    stop.set()
    await task
    await send_msg(writer, {
        "sent": sent_onsets, "received": [proto.det.onsets for _, proto in endpoints],
        "cpu_pct": cpu_pct, "gap_p99": float(np.percentile(gaps, 99)),
        "gap_max": float(gaps.max()), "gaps_over_30": int((gaps > 30).sum()),
        "packets": int(gaps.size)})
    for tr, _ in endpoints:
        tr.close()
    writer.close()


# ------------------------------------------------------------------------------- orga


DROPS: dict[int, list[float]] = {}  # id(transport or receiver) -> times a packet was dropped


def install_loss(loss: float, seed: int) -> None:
    """Drop `loss` of RTP on this process's WebRTC leg, both directions, noting when (DROPS),
    so the latency match can tell onsets that lost a packet from ones that did not."""
    from aiortc.rtcdtlstransport import RTCDtlsTransport
    from aiortc.rtcrtpreceiver import RTCRtpReceiver
    from aiortc.rtp import is_rtcp

    rng = random.Random(seed)
    send_rtp = RTCDtlsTransport._send_rtp
    handle = RTCRtpReceiver._handle_rtp_packet

    async def lossy_send(self: Any, data: bytes) -> None:
        if not is_rtcp(data) and rng.random() < loss:
            DROPS.setdefault(id(self), []).append(time.monotonic())
            return
        await send_rtp(self, data)

    async def lossy_handle(self: Any, packet: Any, arrival_time_ms: int) -> None:
        if rng.random() < loss:
            DROPS.setdefault(id(self), []).append(time.monotonic())
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

    from gateway.aiortc_patches import tune_receiver
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
                tune_receiver(t.receiver, rate=48000, deliver=lambda pcm, det=det: det.feed(
                    pcm, time.monotonic()))
            await pc.setLocalDescription(await pc.createAnswer())
            await send_msg(writer, {"answer": pc.localDescription.sdp})
    # onset send times: the moment the onset frame left the track (before encode)
    sent = [[t for i, t in enumerate(tr.sent_at) if is_onset(i)] for tr in tracks]
    cpu_pct = (cpu_s() - mark[0]) / (time.monotonic() - mark[1]) * 100
    # Drops per call: on the way out (AI -> gateway) and in (gateway -> AI).
    dropped_out, dropped_in = [], []
    for pc in peers:
        transceiver = pc.getTransceivers()[0]
        dropped_out.append(DROPS.get(id(transceiver.sender.transport), []))
        dropped_in.append(DROPS.get(id(transceiver.receiver), []))
    await send_msg(writer, {"sent": sent, "received": [d.onsets for d in detectors],
                            "cpu_pct": cpu_pct, "dropped_out": dropped_out,
                            "dropped_in": dropped_in})
    for pc in peers:
        await pc.close()
    writer.close()


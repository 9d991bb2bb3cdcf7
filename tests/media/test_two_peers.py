"""Phone RTP ⇄ gateway tracks ⇄ a real aiortc peer on loopback (issue 5 item 13)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtpPacket

from gateway.aiortc_patches import _ice_connections as ice_connections
from gateway.aiortc_patches import receiver_stats, tune_receiver, tune_sender
from gateway.clock import LoopClock
from gateway.media.downlink import AiAudioPump
from gateway.media.rtp import RtpSenderState, parse_rtp
from gateway.media.rtp_session import RtpSession
from gateway.media.transcode import G711Codec, frame_to_mono_s16
from gateway.media.uplink import CallerAudioTrack
from gateway.sdp import Direction, MediaParams
from tests.media.audio import dominant_hz, rms_dbfs, tone
from tests.media.loopback import (
    GeneratedAudioTrack,
    connect,
    loopback_only_ice,
    new_peer,
    tone_source,
)


@pytest.fixture(autouse=True)
def _loopback() -> Iterator[None]:
    with loopback_only_ice():
        yield


class Phone(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[bytes] = []
    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.append(data)


def capture_rtp(pc: RTCPeerConnection) -> list[RtpPacket]:
    """Every RTP packet `pc` receives, as aiortc parsed it (after SRTP)."""
    got: list[RtpPacket] = []
    dtls = pc.getTransceivers()[0].receiver.transport
    handle = dtls._handle_rtp_data

    async def recording(data: bytes, arrival_time_ms: int) -> None:
        got.append(RtpPacket.parse(data, dtls._rtp_header_extensions_map))
        await handle(data, arrival_time_ms)

    dtls._handle_rtp_data = recording
    return got


async def record(track: MediaStreamTrack, into: list[np.ndarray]) -> None:
    try:
        while True:
            frame = await track.recv()
            into.append(frame_to_mono_s16(frame))
    except MediaStreamError:
        pass


@pytest.mark.parametrize("opus", [False, True])
async def test_caller_440_to_ai_peer_and_ai_1000_back_to_rtp(opus: bool) -> None:
    loop = asyncio.get_running_loop()
    phone_transport, phone = await loop.create_datagram_endpoint(
        Phone, local_addr=("127.0.0.1", 0))
    phone_port = phone_transport.get_extra_info("sockname")[1]
    params = MediaParams("127.0.0.1", phone_port, "PCMU", 0, 8000, 20, 101,
                         Direction.SENDRECV, False)
    session = await RtpSession.open("127.0.0.1", 0, params, clock=LoopClock())
    gw, ai = new_peer(), new_peer()
    caller_track = CallerAudioTrack(session, LoopClock(), opus=opus)
    transceiver = gw.addTransceiver(caller_track, direction="sendrecv")
    if opus:  # pre-encoded Opus only makes sense when Opus is what gets negotiated
        caps = RTCRtpSender.getCapabilities("audio")
        transceiver.setCodecPreferences([c for c in caps.codecs if c.name == "opus"])
    # The AI's audio goes from the receiver straight into the pump, as in a call.
    pump = AiAudioPump(session, LoopClock())
    tune_receiver(transceiver.receiver, deliver=pump.feed_pcm)
    if opus:  # and the caller's Opus packets straight to the socket, as OrgaPeer does
        tune_sender(transceiver.sender)
    heard_by_ai: list[np.ndarray] = []
    tasks: list[asyncio.Task[None]] = []

    @ai.on("track")
    def on_ai_track(track: MediaStreamTrack) -> None:
        tasks.append(asyncio.ensure_future(record(track, heard_by_ai)))

    @gw.on("track")
    def on_gw_track(track: MediaStreamTrack) -> None:
        pump.start(track)

    await connect(gw, ai, before_answer=lambda: ai.addTrack(
        GeneratedAudioTrack(tone_source(1000))))
    wire = capture_rtp(ai)

    # The phone: PCMU 440 Hz, one packet per 20 ms, for 3 s.
    codec = G711Codec("PCMU")
    sender = RtpSenderState(0, 0xCAFE, 1, 1)
    src = tone(440, 3.0, 8000, dbfs=-12)
    t0 = loop.time()
    for i in range(150):
        payload = codec.encode(src[i * 160 : (i + 1) * 160])
        phone_transport.sendto(sender.next_packet(payload, 160), session.local_address)
        await asyncio.sleep(max(0.0, t0 + (i + 1) * 0.02 - loop.time()))
    await asyncio.sleep(0.3)

    heard_by_ai = heard_by_ai[:]  # what the caller said; silence follows
    await asyncio.sleep(1.6)  # at least one RTCP report each way (aiortc: every 0.5-1.5 s)
    gw_stats, ai_stats = await gw.getStats(), await ai.getStats()
    sources = transceiver.receiver.getSynchronizationSources()
    direct = [c for c in ice_connections(gw) if "data_received" in vars(c)]
    await pump.stop()
    await gw.close()
    await ai.close()
    for task in tasks:
        task.cancel()
    await session.close()
    phone_transport.close()

    # What the AI peer heard: 440 Hz at about the level we sent.
    assert len(heard_by_ai) > 100
    ai_audio = np.concatenate(heard_by_ai[-100:-10])
    assert abs(dominant_hz(ai_audio, 48000) - 440) <= 5
    assert abs(rms_dbfs(ai_audio) - rms_dbfs(src)) <= 3  # Opus is lossy; G.711 ±1 dB is
    # checked exactly in test_transcode
    # What the phone heard back: 1000 Hz G.711 RTP, paced by the pump.
    pkts = [parse_rtp(d) for d in phone.got]
    assert len(pkts) >= 130 and {p.payload_type for p in pkts} == {0}
    pcm = np.concatenate([codec.decode(p.payload) for p in pkts[-100:-5]])
    assert abs(dominant_hz(pcm, 8000) - 1000) <= 5
    assert session.stats.received.packets == 150
    assert pump.stats.dropped_backlog == 0 and pump.stats.frames_in > 100
    stats = receiver_stats(transceiver.receiver)
    assert stats is not None and stats.released > 100
    # The AI's RTP came the direct way (aioice's callback, not aiortc's queue), and the
    # receiver still kept what its RTCP reports and the dead-leg check read.
    assert len(direct) == 1
    inbound = [s for s in gw_stats.values() if s.type == "inbound-rtp"]
    assert len(inbound) == 1 and inbound[0].packetsReceived > 100
    assert len(sources) == 1
    # What went to the AI: one RTP stream of consecutive packets, aiortc's header either way.
    mid = transceiver.mid
    assert len({p.ssrc for p in wire}) == 1 and len(wire) > 100
    assert {(p.marker, p.extensions.mid) for p in wire} == {(1, mid)}
    assert all((b.sequence_number - a.sequence_number) & 0xFFFF == 1
               for a, b in itertools.pairwise(wire))
    if opus:
        assert all((b.timestamp - a.timestamp) & 0xFFFFFFFF == 960
                   for a, b in itertools.pairwise(wire))
    # Our sender's counters reached the AI in RTCP sender reports.
    remote = [s for s in ai_stats.values() if s.type == "remote-outbound-rtp"]
    assert len(remote) == 1 and remote[0].packetsSent > 50

"""DTMF towards the phone (RFC 4733): the packets a phone receives, decoded by hand, and the
audio that pauses for the event and resumes in time."""

import asyncio

import pytest

from gateway.clock import LoopClock
from gateway.media.dtmf import TelephoneEventReceiver, parse_telephone_event
from gateway.media.dtmf_send import DtmfUnavailable, send_digits
from gateway.media.rtp import parse_rtp
from gateway.media.rtp_session import RtpSession
from tests.media.test_rtp_session import Peer, params


async def test_digits_are_rfc4733_events_in_the_audio_stream() -> None:
    phone = Peer()
    session = await RtpSession.open("127.0.0.1", 0, params(phone.port), clock=LoopClock(),
                                    watchdog_interval_s=3600)
    try:
        session.send_audio(b"\xff" * 160, 160)
        audio_ts = session.send_timestamp
        stop = asyncio.Event()

        async def audio() -> None:  # the AI pump keeps ticking while the event plays
            while not stop.is_set():
                session.send_audio(b"\xff" * 160, 160)
                await asyncio.sleep(0.02)

        pump = asyncio.create_task(audio())
        sent = await send_digits(session, "1#", tone_ms=60, pause_ms=40)
        stop.set()
        await pump
        await asyncio.sleep(0.05)
        packets = [parse_rtp(d) for d in phone.recv_all()]
    finally:
        await session.close()
        phone.sock.close()
    events = [p for p in packets if p.payload_type == 101]
    assert sent == len(events) == 2 * (3 + 3)  # 3 growing + 3 end packets per key
    assert len({p.ssrc for p in packets}) == 1  # one stream: audio and events share the SSRC
    seqs = [p.sequence for p in packets]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap, no reuse
    first = [p for p in events if parse_telephone_event(p.payload).event == 1]
    assert first[0].marker and not any(p.marker for p in first[1:])
    assert {p.timestamp for p in first} == {first[0].timestamp} and first[0].timestamp >= audio_ts
    decoded = [parse_telephone_event(p.payload) for p in first]
    assert [e.duration for e in decoded] == [160, 320, 480, 480, 480, 480]
    assert [e.end for e in decoded] == [False] * 3 + [True] * 3
    receiver = TelephoneEventReceiver()
    digits = [d.digit for p in events for d in receiver.receive(p.ssrc, p.timestamp, p.payload)]
    assert digits == ["1", "#"]
    # No audio between a key's first and last packet; audio timestamps run on across the gap.
    index = packets.index(first[0])
    assert all(p.payload_type == 101 for p in packets[index:index + 6])
    after = next(p for p in packets[index + 6:] if p.payload_type == 0)
    assert after.timestamp - first[0].timestamp >= 480


async def test_without_telephone_event_nothing_is_sent() -> None:
    phone = Peer()
    session = await RtpSession.open("127.0.0.1", 0, params(phone.port, telephone_event_pt=None),
                                    clock=LoopClock(), watchdog_interval_s=3600)
    try:
        with pytest.raises(DtmfUnavailable):
            await send_digits(session, "1")
    finally:
        await session.close()
        phone.sock.close()

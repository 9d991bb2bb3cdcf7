"""RtpSession with SDES-SRTP over real loopback sockets: audio and DTMF both ways through
libsrtp, forged and plain packets dropped and counted without latching us onto their source,
re-keying on a re-INVITE and an SSRC change from the peer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from gateway.clock import FakeClock
from gateway.media.dtmf import DtmfReceived, build_telephone_event
from gateway.media.rtp import build_rtp, parse_rtp
from gateway.media.rtp_session import RtpSession
from gateway.media.srtp import SrtpContext, SrtpKey, SrtpParams, SrtpSuite
from tests.media.test_rtp_session import Peer, params

SUITE = SrtpSuite.AES_CM_128_HMAC_SHA1_80


class SecurePeer(Peer):
    """A phone: its own key protects what it sends; the gateway's key opens what it gets."""

    def __init__(self, ours: SrtpKey, theirs: SrtpKey) -> None:
        super().__init__()
        self.ctx = SrtpContext(SrtpParams(SUITE, 1, theirs, ours))

    def send_srtp(self, dest: tuple[str, int], seq: int, ssrc: int = 0x1111, pt: int = 0,
                  payload: bytes | None = None, ts: int | None = None) -> None:
        body = payload if payload is not None else bytes([seq % 256]) * 160
        ts = ts if ts is not None else seq * 160
        self.sock.sendto(self.ctx.protect(build_rtp(pt, seq, ts, ssrc, body)), dest)


Env = tuple[RtpSession, SecurePeer, Peer, list[str], list[DtmfReceived]]


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    gw_key, phone_key = SrtpKey.generate(SUITE), SrtpKey.generate(SUITE)
    phone, stranger = SecurePeer(gw_key, phone_key), Peer()
    failures: list[str] = []
    dtmf: list[DtmfReceived] = []
    srtp = SrtpParams(SUITE, 1, gw_key, phone_key)
    session = await RtpSession.open("127.0.0.1", 0, params(phone.port, srtp=srtp),
                                    clock=FakeClock(), on_dtmf=dtmf.append,
                                    watchdog_interval_s=3600, on_srtp_failure=failures.append)
    yield session, phone, stranger, failures, dtmf
    await session.close()
    phone.sock.close()
    stranger.sock.close()


async def settle(session: RtpSession, packets: int) -> None:
    for _ in range(300):
        st = session.stats.received
        if st.packets + st.srtp_failures + st.foreign_dropped + st.invalid >= packets:
            return
        await asyncio.sleep(0.001)
    raise AssertionError("datagrams not delivered")


async def test_audio_and_dtmf_both_ways(env: Env) -> None:
    session, phone, _, failures, dtmf = env
    dest = session.local_address
    for seq in range(1, 4):
        phone.send_srtp(dest, seq)
    for ts_seq, end in ((4, False), (5, True)):
        phone.send_srtp(dest, ts_seq, pt=101, payload=build_telephone_event(5, end, 10, 160),
                        ts=640)
    await settle(session, 5)
    st = session.stats.received
    assert st.packets == 5 and st.dtmf_packets == 2 and st.srtp_failures == 0
    assert [d.digit for d in dtmf] == ["5"]
    assert session.send_audio(b"\x55" * 160, 160)
    await asyncio.sleep(0.02)
    (wire,) = phone.recv_all()
    assert wire[12:172] != b"\x55" * 160  # encrypted on the wire
    clear = phone.ctx.unprotect(wire)
    assert clear is not None and parse_rtp(clear).payload == b"\x55" * 160
    assert failures == []


async def test_forged_and_plain_packets_dropped_and_never_latch(env: Env) -> None:
    session, phone, stranger, failures, _ = env
    dest = session.local_address
    stranger.send(dest, 1)  # plain RTP from elsewhere, before any genuine packet
    forged = bytearray(phone.ctx.protect(build_rtp(0, 2, 320, 0x1111, b"\x00" * 160)))
    forged[30] ^= 0xFF
    stranger.sock.sendto(bytes(forged), dest)
    await settle(session, 2)
    assert session.latched is None and session.stats.received.srtp_failures == 2
    phone.send_srtp(dest, 3)
    await settle(session, 3)
    assert session.latched == ("127.0.0.1", phone.port)
    assert failures == ["auth", "auth"] and session.stats.received.packets == 1


async def test_reinvite_rekey_and_ssrc_change(env: Env) -> None:
    session, phone, _, failures, _ = env
    dest = session.local_address
    phone.send_srtp(dest, 1)
    await settle(session, 1)
    # The phone re-keys in a re-INVITE and restarts with a new SSRC; we answer a fresh key.
    new_phone, new_gw = SrtpKey.generate(SUITE), SrtpKey.generate(SUITE)
    old = session.params
    assert old.srtp is not None
    session.update(replace(old, srtp=SrtpParams(SUITE, 1, new_gw, new_phone)))
    phone.ctx = SrtpContext(SrtpParams(SUITE, 1, new_phone, new_gw))
    phone.send_srtp(dest, 500, ssrc=0x2222)
    await settle(session, 2)
    st = session.stats.received
    assert st.packets == 2 and st.ssrc_changes == 1 and st.srtp_failures == 0
    assert session.send_audio(b"\x11" * 160, 160)
    await asyncio.sleep(0.02)
    (wire,) = phone.recv_all()
    assert phone.ctx.unprotect(wire) is not None
    # The peer going plain (policy "optional") turns SRTP off for both directions.
    session.update(replace(old, srtp=None))
    phone.send(dest, 501, ssrc=0x2222)
    await settle(session, 3)
    assert session.stats.received.packets == 3 and failures == []

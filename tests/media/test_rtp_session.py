"""RtpSession over real loopback sockets; protocol timers use a FakeClock."""

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from gateway.clock import FakeClock
from gateway.media.dtmf import DtmfReceived, build_telephone_event
from gateway.media.jitter import Output
from gateway.media.ports import PortPool, PortsExhausted
from gateway.media.rtp import build_rtp, parse_rtp
from gateway.media.rtp_session import RtpSession, open_from_pool
from gateway.sdp import Direction, MediaParams


def params(port: int, **kw: object) -> MediaParams:
    base: dict[str, object] = dict(
        remote_address="127.0.0.1", remote_port=port, codec="PCMU", payload_type=0,
        clock_rate=8000, ptime_ms=20, telephone_event_pt=101, direction=Direction.SENDRECV,
        on_hold=False,
    )
    base.update(kw)
    return MediaParams(**base)  # type: ignore[arg-type]


def udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


class Peer:
    def __init__(self) -> None:
        self.sock = udp()
        self.port = self.sock.getsockname()[1]

    def send(self, dest: tuple[str, int], seq: int, ssrc: int = 0x1111, pt: int = 0,
             payload: bytes | None = None, ts: int | None = None) -> None:
        body = payload if payload is not None else bytes([seq % 256]) * 160
        self.sock.sendto(build_rtp(pt, seq, ts if ts is not None else seq * 160, ssrc, body),
                         dest)

    def recv_all(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(2048))
            except BlockingIOError:
                return out


async def settle(session: RtpSession, packets: int) -> None:
    """Wait until the loop has delivered `packets` datagrams (received or dropped)."""
    for _ in range(200):
        st = session.stats.received
        if st.packets + st.foreign_dropped + st.rate_dropped + st.invalid >= packets:
            return
        await asyncio.sleep(0.001)
    raise AssertionError("datagrams not delivered")


@pytest.fixture
async def env() -> AsyncIterator[tuple[RtpSession, Peer, Peer, FakeClock, list[DtmfReceived]]]:
    clock = FakeClock()
    caller, stranger = Peer(), Peer()
    dtmf: list[DtmfReceived] = []
    session = await RtpSession.open("127.0.0.1", 0, params(caller.port), clock=clock,
                                    on_dtmf=dtmf.append, watchdog_interval_s=3600)
    yield session, caller, stranger, clock, dtmf
    await session.close()
    caller.sock.close()
    stranger.sock.close()


async def test_latching_and_foreign_source_drop(env) -> None:  # type: ignore[no-untyped-def]
    session, caller, stranger, _, _ = env
    dest = session.local_address
    # The caller's NAT changed its port: latch to where packets really come from.
    natted = Peer()
    natted.send(dest, 1)
    await settle(session, 1)
    assert session.latched == ("127.0.0.1", natted.port)
    stranger.send(dest, 2)
    caller.send(dest, 3)
    await settle(session, 3)
    st = session.stats.received
    assert st.packets == 1 and st.foreign_dropped == 2
    # Our audio goes to the latched source, not the SDP address.
    assert session.send_audio(b"\xff" * 160, 160)
    await asyncio.sleep(0.01)
    got = natted.recv_all()
    assert len(got) == 1 and parse_rtp(got[0]).payload_type == 0
    assert caller.recv_all() == []
    natted.sock.close()


async def test_invalid_and_unknown_payloads_are_counted(env) -> None:  # type: ignore[no-untyped-def]
    session, caller, _, _, _ = env
    dest = session.local_address
    caller.sock.sendto(b"garbage", dest)
    caller.send(dest, 1, pt=8)
    caller.sock.sendto(bytes([0x80, 200]) + bytes(6), dest)  # RTCP under rtcp-mux
    caller.send(dest, 2)
    await settle(session, 2)
    st = session.stats.received
    assert st.invalid == 1 and st.unknown_payload_type == 1 and st.packets == 1
    # Invalid and wrong-PT packets do not latch us onto a source.
    assert session.latched == ("127.0.0.1", caller.port)


async def test_reorder_and_loss_through_jitter_buffer(env) -> None:  # type: ignore[no-untyped-def]
    session, caller, _, _, _ = env
    dest = session.local_address
    order = [1, 2, 4, 3, 5, 7, 8]  # 3/4 swapped, 6 lost
    for seq in order:
        caller.send(dest, seq)
    await settle(session, len(order))
    kinds = []
    for _ in range(8):
        o = session.jitter.pop()
        kinds.append((o.kind, o.payload[0] if o.payload else None))
    assert kinds == [
        (Output.AUDIO, 1), (Output.AUDIO, 2), (Output.AUDIO, 3), (Output.AUDIO, 4),
        (Output.AUDIO, 5), (Output.LOSS, None), (Output.AUDIO, 7), (Output.AUDIO, 8),
    ]
    caller.send(dest, 6)  # arrives after its slot was concealed
    caller.send(dest, 8)
    await settle(session, len(order) + 2)
    st = session.stats.received
    assert st.lost == 0  # RFC 3550 counts it received in the end
    assert st.late == 2 and st.packets == 9


async def test_ssrc_change_resets_without_glitch(env) -> None:  # type: ignore[no-untyped-def]
    session, caller, _, _, _ = env
    dest = session.local_address
    for seq in (100, 101, 102):
        caller.send(dest, seq, ssrc=1)
    for seq in (9000, 9001):  # SBC failover: new SSRC and numbering
        caller.send(dest, seq, ssrc=2)
    await settle(session, 5)
    out = [session.jitter.pop() for _ in range(5)]
    assert [o.kind for o in out] == [Output.AUDIO] * 5
    assert [o.payload[0] for o in out] == [100, 101, 102, 9000 % 256, 9001 % 256]
    st = session.stats.received
    assert st.ssrc_changes == 1 and st.lost == 0 and st.late == 0


async def test_dtmf_routed_to_receiver_not_decoder(env) -> None:  # type: ignore[no-untyped-def]
    session, caller, _, _, dtmf = env
    dest = session.local_address
    caller.send(dest, 1)
    caller.send(dest, 2)
    for i, (end, dur) in enumerate([(False, 160), (False, 320), (True, 480), (True, 480)]):
        caller.send(dest, 3 + i, pt=101, ts=999, payload=build_telephone_event(5, end, dur))
    caller.send(dest, 7)
    await settle(session, 7)
    assert [(e.digit, e.duration_ms) for e in dtmf] == [("5", 60)]
    kinds = [session.jitter.pop().kind for _ in range(7)]
    assert kinds.count(Output.AUDIO) == 3 and Output.LOSS not in kinds
    assert session.stats.received.dtmf_packets == 4


async def test_inactivity_timeout_with_fake_clock_and_hold(env) -> None:  # type: ignore[no-untyped-def]
    session, caller, _, clock, _ = env
    caller.send(session.local_address, 1)
    await settle(session, 1)
    clock.advance(29.0)
    assert not session.check_inactivity()
    session.update(params(caller.port, direction=Direction.RECVONLY, on_hold=True))
    clock.advance(600)  # on hold: music may never come
    assert not session.check_inactivity()
    session.update(params(caller.port))  # resumed: the timer starts again
    clock.advance(29.9)
    assert not session.check_inactivity()
    clock.advance(0.2)
    assert session.check_inactivity()
    assert session.timed_out.done()


async def test_update_to_new_address_relatches(env) -> None:  # type: ignore[no-untyped-def]
    session, caller, stranger, _, _ = env
    dest = session.local_address
    caller.send(dest, 1)
    await settle(session, 1)
    session.update(params(stranger.port, codec="PCMA", payload_type=8))
    stranger.send(dest, 2, pt=8)
    await settle(session, 2)
    assert session.latched == ("127.0.0.1", stranger.port)
    session.send_audio(b"\xd5" * 160, 160)
    await asyncio.sleep(0.01)
    assert parse_rtp(stranger.recv_all()[0]).payload_type == 8


async def test_hold_suppresses_sending(env) -> None:  # type: ignore[no-untyped-def]
    session, caller, _, _, _ = env
    session.update(params(caller.port, remote_address="0.0.0.0", on_hold=True))
    assert not session.send_audio(b"\xff" * 160, 160)
    assert session.stats.sent.packets == 0


async def test_packet_rate_cap() -> None:
    clock = FakeClock()
    flooder = Peer()
    session = await RtpSession.open("127.0.0.1", 0, params(flooder.port), clock=clock,
                                    max_packet_rate=50, watchdog_interval_s=3600)
    try:
        for seq in range(80):
            flooder.send(session.local_address, seq)
        await settle(session, 80)
        st = session.stats.received
        assert st.packets == 50 and st.rate_dropped == 30
        clock.advance(0.1)  # refills 5 tokens
        for seq in range(80, 90):
            flooder.send(session.local_address, seq)
        await settle(session, 90)
        assert session.stats.received.packets == 55
    finally:
        await session.close()
        flooder.sock.close()


async def test_session_on_pool_port_and_quarantine() -> None:
    clock = FakeClock()
    pool = PortPool(41000, 41999, quarantine_s=5.0, clock=clock)
    session = await open_from_pool(pool, "127.0.0.1", params(9), clock=clock,
                                   watchdog_interval_s=3600)
    port = session.local_address[1]
    assert 41000 <= port <= 41999 and port % 2 == 0
    await session.close()
    await session.close()  # idempotent
    pool.release(port)
    assert port not in [pool.acquire() for _ in range(pool.free_count)]


async def test_pool_skips_ports_held_by_someone_else() -> None:
    clock = FakeClock()
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for candidate in range(41900, 41998, 2):
            try:
                taken.bind(("127.0.0.1", candidate))
                break
            except OSError:
                continue
        held = taken.getsockname()[1]
        pool = PortPool(held, held + 2, quarantine_s=5.0, clock=clock)
        session = await open_from_pool(pool, "127.0.0.1", params(9), clock=clock,
                                       watchdog_interval_s=3600)
        assert session.local_address[1] == held + 2
        await session.close()
        with pytest.raises(PortsExhausted):
            await open_from_pool(pool, "127.0.0.1", params(9), clock=clock)
    finally:
        taken.close()

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.media.rtp import (
    RtpParseError,
    RtpSenderState,
    SequenceExtender,
    build_rtp,
    is_rtcp,
    parse_rtp,
    seq_delta,
    ts_delta,
)


def test_roundtrip_and_marker() -> None:
    data = build_rtp(0, 65535, 0xFFFFFFFF, 0x12345678, b"\xff" * 160, marker=True)
    p = parse_rtp(data)
    assert (p.payload_type, p.sequence, p.timestamp, p.ssrc, p.marker) == (
        0, 65535, 0xFFFFFFFF, 0x12345678, True)
    assert p.payload == b"\xff" * 160


def test_csrc_extension_and_padding_are_skipped() -> None:
    header = bytes([0x80 | 0x20 | 0x10 | 0x02, 8]) + struct.pack("!HII", 7, 160, 99)
    csrcs = struct.pack("!II", 1, 2)
    ext = struct.pack("!HH", 0xBEDE, 1) + b"\x00" * 4
    data = header + csrcs + ext + b"abc" + b"\x00\x00\x03"
    p = parse_rtp(data)
    assert p.payload == b"abc" and p.payload_type == 8 and p.sequence == 7


@pytest.mark.parametrize(
    "data",
    [b"", b"\x80" * 11, b"\x40" + b"\x00" * 11, bytes([0xA0, 0]) + b"\x00" * 10 + b"\x00",
     bytes([0x90, 0]) + b"\x00" * 10 + b"\x00\x00"],
)
def test_invalid(data: bytes) -> None:
    with pytest.raises(RtpParseError):
        parse_rtp(data)


def test_rtcp_detection() -> None:
    assert is_rtcp(bytes([0x80, 200]) + b"\x00" * 6)
    assert not is_rtcp(build_rtp(0, 1, 1, 1, b""))
    assert not is_rtcp(build_rtp(8, 1, 1, 1, b"", marker=True))


@pytest.mark.parametrize(
    ("a", "b", "d"), [(0, 65535, 1), (65535, 0, -1), (5, 3, 2), (32767, 0, 32767), (100, 200, -100)]
)
def test_seq_delta_wraps(a: int, b: int, d: int) -> None:
    assert seq_delta(a, b) == d


def test_ts_delta_wraps() -> None:
    assert ts_delta(10, 0xFFFFFFF0) == 26
    assert ts_delta(0xFFFFFFF0, 10) == -26


def test_extender_across_wrap_with_reorder() -> None:
    ext = SequenceExtender()
    seqs = [65533, 65534, 0, 65535, 1, 2]
    assert [ext.extend(s) for s in seqs] == [65533, 65534, 65536, 65535, 65537, 65538]
    assert ext.highest == 65538


@given(st.integers(0, 65535), st.integers(1, 3000))
def test_extender_monotonic_for_in_order_streams(start: int, n: int) -> None:
    ext = SequenceExtender()
    out = [ext.extend((start + i) % 65536) for i in range(n)]
    assert out == list(range(start, start + n))


def test_sender_state_wraps() -> None:
    s = RtpSenderState(0, 1, 65535, 0xFFFFFF00)
    p1 = parse_rtp(s.next_packet(b"x", 160))
    p2 = parse_rtp(s.next_packet(b"x", 160))
    assert (p1.sequence, p2.sequence) == (65535, 0)
    assert ts_delta(p2.timestamp, p1.timestamp) == 160

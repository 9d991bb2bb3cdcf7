"""RTP packet parse/build and the sequence/timestamp arithmetic (RFC 3550 §5.1, Appendix A).

Pure functions and small value types; no sockets. Sequence numbers wrap at 2**16 and timestamps
at 2**32, so every comparison goes through `seq_delta`/`ts_delta` (signed shortest distance)
and the receive side keeps an extended (cycle-counted) sequence number (RFC 3550 A.1).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

RTP_VERSION = 2
_HEADER = struct.Struct("!BBHII")
SEQ_MOD = 1 << 16
TS_MOD = 1 << 32


class RtpParseError(ValueError):
    """A datagram that is not a valid RTP packet."""


class RtpPacket(NamedTuple):
    """One parsed packet (a tuple: built per packet, so as cheap to make as Python allows)."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool
    payload: bytes


def is_rtcp(data: bytes) -> bool:
    """RTCP shares the port under rtcp-mux; its packet types 200-204 sit where RTP has M+PT
    (RFC 5761 §4)."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def parse_rtp(data: bytes) -> RtpPacket:
    if len(data) < 12:
        raise RtpParseError("short packet")
    b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
    if b0 >> 6 != RTP_VERSION:
        raise RtpParseError("not RTP version 2")
    offset = 12 + 4 * (b0 & 0x0F)  # CSRC list
    if b0 & 0x10:  # header extension (RFC 3550 §5.3.1)
        if len(data) < offset + 4:
            raise RtpParseError("truncated extension")
        (words,) = struct.unpack_from("!H", data, offset + 2)
        offset += 4 + 4 * words
    end = len(data)
    if b0 & 0x20:  # padding: last octet counts the padding octets
        pad = data[-1]
        if pad == 0 or offset + pad > end:
            raise RtpParseError("bad padding")
        end -= pad
    if offset > end:
        raise RtpParseError("truncated header")
    return RtpPacket(b1 & 0x7F, seq, ts, ssrc, bool(b1 & 0x80), data[offset:end])


def build_rtp(
    payload_type: int, sequence: int, timestamp: int, ssrc: int, payload: bytes,
    marker: bool = False,
) -> bytes:
    return _HEADER.pack(
        RTP_VERSION << 6,
        (0x80 if marker else 0) | (payload_type & 0x7F),
        sequence % SEQ_MOD,
        timestamp % TS_MOD,
        ssrc,
    ) + payload


def seq_delta(a: int, b: int) -> int:
    """Signed shortest distance a - b in 16-bit sequence space."""
    d = (a - b) % SEQ_MOD
    return d - SEQ_MOD if d >= SEQ_MOD // 2 else d


def ts_delta(a: int, b: int) -> int:
    """Signed shortest distance a - b in 32-bit timestamp space."""
    d = (a - b) % TS_MOD
    return d - TS_MOD if d >= TS_MOD // 2 else d


class SequenceExtender:
    """Extends 16-bit sequence numbers to a monotonic integer space (RFC 3550 A.1 cycles)."""

    __slots__ = ("_highest",)

    def __init__(self) -> None:
        self._highest: int | None = None

    def extend(self, seq: int) -> int:
        if self._highest is None:
            self._highest = seq
            return seq
        ext = self._highest + seq_delta(seq, self._highest % SEQ_MOD)
        if ext > self._highest:
            self._highest = ext
        return ext

    @property
    def highest(self) -> int | None:
        return self._highest


class RtpSenderState:
    """Outgoing sequence/timestamp/SSRC counters for one stream (random starts, RFC 3550 §5.1)."""

    __slots__ = ("payload_type", "sequence", "ssrc", "timestamp")

    def __init__(self, payload_type: int, ssrc: int, sequence: int, timestamp: int) -> None:
        self.payload_type = payload_type
        self.ssrc = ssrc
        self.sequence = sequence % SEQ_MOD
        self.timestamp = timestamp % TS_MOD

    def next_packet(self, payload: bytes, samples: int, marker: bool = False) -> bytes:
        data = build_rtp(self.payload_type, self.sequence, self.timestamp, self.ssrc, payload,
                         marker)
        self.sequence = (self.sequence + 1) % SEQ_MOD
        self.timestamp = (self.timestamp + samples) % TS_MOD
        return data

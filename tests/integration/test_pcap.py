"""Our pcap generator: G.711 encoders (ITU-T, checked against FFmpeg's decoder via the
gateway's codec tables), RTP framing and the libpcap/Ethernet/IPv4/UDP layout SIPp reads."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from gateway.media.transcode import G711Codec
from tests.integration.pcap import (
    ENCODERS,
    _checksum,
    read_pcap_rtp,
    rtp_packets,
    speech_pcap,
    tone,
)


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_encoder_round_trips_within_g711_quantisation(codec: str) -> None:
    x = np.arange(-32768, 32768, 3, dtype=np.int16)
    decoded = G711Codec(codec).decode(ENCODERS[codec](x)).astype(np.int64)
    error = np.abs(decoded - x.astype(np.int64))
    # Segment step sizes: relative error ≤ ~1/16 of the magnitude, small values exact-ish.
    assert np.all(error <= np.maximum(np.abs(x.astype(np.int64)) // 16, 16) + 16)
    assert ENCODERS[codec](np.zeros(1, dtype=np.int16)) == G711Codec(codec).silence(1)


def test_rtp_packets_are_20ms_consecutive() -> None:
    packets = rtp_packets(tone(440, 0.1), "PCMA", ssrc=7, seq=65534, timestamp=0)
    assert len(packets) == 5
    headers = [struct.unpack("!BBHII", p[:12]) for p in packets]
    assert [h[1] for h in headers] == [0x88, 8, 8, 8, 8]  # marker on the first, PT 8
    assert [h[2] for h in headers] == [65534, 65535, 0, 1, 2]
    assert [h[3] for h in headers] == [0, 160, 320, 480, 640]
    assert {h[4] for h in headers} == {7} and {len(p) for p in packets} == {172}


def test_pcap_layout_and_checksums(tmp_path: Path) -> None:
    path = speech_pcap(tmp_path / "a.pcap", talk_s=0.2, quiet_s=0.2)
    data = path.read_bytes()
    assert struct.unpack("<IHHiIII", data[:24]) == (0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    sec, usec, incl, orig = struct.unpack("<IIII", data[24:40])
    frame = data[40:40 + incl]
    assert incl == orig == 14 + 20 + 8 + 172
    assert frame[12:14] == b"\x08\x00" and _checksum(frame[14:34]) == 0  # IPv4 header sum
    src, dst = frame[26:30], frame[30:34]
    udp = frame[34:]
    pseudo = src + dst + struct.pack("!BBH", 0, 17, len(udp))
    assert _checksum(pseudo + udp) == 0  # UDP checksum over the pseudo-header
    payloads = read_pcap_rtp(path)
    assert len(payloads) == 20  # 0.4 s
    second = struct.unpack("<II", data[40 + incl:48 + incl])
    assert (second[0] - sec) * 1_000_000 + second[1] - usec == 20_000

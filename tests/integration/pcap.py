"""Audio for SIPp's `play_pcap_audio`: G.711 RTP in UDP in IPv4 in Ethernet, in a libpcap file.

SIPp replays the RTP payloads of a capture at the capture's timing, rewriting addresses and
ports to the call's media (its `prepare_pcap.c` wants Ethernet + IPv4/IPv6 + UDP). We write the
capture ourselves, so tests need no recorded files and no capture tool: one 20 ms packet (160
samples) every 20 ms, consecutive sequence numbers and timestamps, one SSRC, marker bit on the
first packet.

The G.711 encoders here follow ITU-T G.711 directly (not the gateway's FFmpeg tables), so the
audio a test sends is produced independently of the code it checks.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt

RATE = 8000
FRAME = 160  # samples per 20 ms packet
PAYLOAD_TYPES = {"PCMU": 0, "PCMA": 8}

Pcm = npt.NDArray[np.int16]


def tone(freq_hz: float, seconds: float, dbfs: float = -12.0) -> Pcm:
    """A sine at `dbfs` RMS (−12 dBFS ≈ speech level) as 8 kHz s16."""
    t = np.arange(int(seconds * RATE)) / RATE
    amplitude = 32767 * np.sqrt(2) * 10 ** (dbfs / 20)
    return np.round(amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.int16)


def silence(seconds: float) -> Pcm:
    return np.zeros(int(seconds * RATE), dtype=np.int16)


def ulaw_encode(pcm: Pcm) -> bytes:
    """ITU-T G.711 μ-law: bias 132 (0x84), clip at 32635, segment + 4-bit mantissa, inverted."""
    x = pcm.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    mag = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.floor(np.log2(mag)).astype(np.int32) - 7  # 0..7
    mantissa = (mag >> (exponent + 3)) & 0x0F
    code = ~(sign | (exponent << 4) | mantissa) & 0xFF
    return code.astype(np.uint8).tobytes()


def alaw_encode(pcm: Pcm) -> bytes:
    """ITU-T G.711 A-law on the 13-bit magnitude, even bits inverted (XOR 0x55)."""
    x = pcm.astype(np.int32) >> 3  # 13-bit
    sign = np.where(x >= 0, 0x80, 0)
    mag = np.where(x >= 0, x, -x - 1)
    mag = np.minimum(mag, 0x0FFF)
    exponent = np.where(mag < 32, 0, np.floor(np.log2(np.maximum(mag, 1))).astype(np.int32) - 4)
    mantissa = np.where(exponent == 0, mag >> 1, mag >> exponent) & 0x0F
    code = (sign | (exponent << 4) | mantissa) ^ 0x55
    return code.astype(np.uint8).tobytes()


ENCODERS = {"PCMU": ulaw_encode, "PCMA": alaw_encode}


def rtp_packets(pcm: Pcm, codec: str, *, ssrc: int = 0x5EED1234, seq: int = 1000,
                timestamp: int = 160000, frame: int = FRAME) -> list[bytes]:
    """One RTP packet per `frame` samples (default 20 ms) of `pcm` (the tail is padded with
    silence)."""
    pad = (-pcm.size) % frame
    padded = np.concatenate([pcm, np.zeros(pad, dtype=np.int16)])
    payload = ENCODERS[codec](padded)
    pt = PAYLOAD_TYPES[codec]
    out = []
    for i in range(padded.size // frame):
        marker = 0x80 if i == 0 else 0
        header = struct.pack("!BBHII", 0x80, marker | pt, (seq + i) & 0xFFFF,
                             (timestamp + i * frame) & 0xFFFFFFFF, ssrc)
        out.append(header + payload[i * frame:(i + 1) * frame])
    return out


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _frame(payload: bytes, src: tuple[str, int], dst: tuple[str, int], ident: int) -> bytes:
    """Ethernet II + IPv4 (no options) + UDP around one RTP packet, both checksums valid."""
    s_ip, d_ip = bytes(map(int, src[0].split("."))), bytes(map(int, dst[0].split(".")))
    udp_len = 8 + len(payload)
    pseudo = s_ip + d_ip + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", src[1], dst[1], udp_len, 0) + payload
    udp_sum = _checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", udp_sum) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, ident & 0xFFFF, 0, 64, 17, 0,
                     s_ip, d_ip)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    ethernet = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
    return ethernet + ip + udp


def write_pcap(path: Path, packets: list[bytes], *, interval_s: float = 0.02,
               src: tuple[str, int] = ("127.0.0.1", 6000),
               dst: tuple[str, int] = ("127.0.0.1", 7000)) -> Path:
    """A libpcap file (v2.4, microseconds, LINKTYPE_ETHERNET) with one frame per packet."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i, rtp in enumerate(packets):
        frame = _frame(rtp, src, dst, i)
        usec = round(i * interval_s * 1e6)
        out.append(struct.pack("<IIII", 1_700_000_000 + usec // 1_000_000, usec % 1_000_000,
                               len(frame), len(frame)))
        out.append(frame)
    path.write_bytes(b"".join(out))
    return path


def speech_pcap(path: Path, codec: str = "PCMU", *, freq_hz: float = 440.0,
                talk_s: float = 1.0, quiet_s: float = 2.0, ptime_ms: int = 20) -> Path:
    """`talk_s` of tone then `quiet_s` of silence: one utterance for an energy VAD, in packets
    of `ptime_ms`."""
    pcm = np.concatenate([tone(freq_hz, talk_s), silence(quiet_s)])
    frame = RATE * ptime_ms // 1000
    return write_pcap(path, rtp_packets(pcm, codec, frame=frame), interval_s=ptime_ms / 1000)


def ulaw_decode(payload: bytes) -> Pcm:
    """ITU-T G.711 μ-law to linear, independent of the gateway's FFmpeg tables."""
    code = ~np.frombuffer(payload, dtype=np.uint8).astype(np.int32) & 0xFF
    exponent, mantissa = (code >> 4) & 0x07, code & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(code & 0x80, -magnitude, magnitude).astype(np.int16)


def read_pcap_rtp(path: Path) -> list[bytes]:
    """The UDP payloads of a capture written by `write_pcap` (for the generator's own test)."""
    data = path.read_bytes()
    magic, = struct.unpack_from("<I", data)
    assert magic == 0xA1B2C3D4
    pos, out = 24, []
    while pos < len(data):
        _, _, incl, _ = struct.unpack_from("<IIII", data, pos)
        frame = data[pos + 16:pos + 16 + incl]
        out.append(frame[14 + 20 + 8:])
        pos += 16 + incl
    return out

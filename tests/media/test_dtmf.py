import struct
from pathlib import Path

import pytest

from gateway.media.dtmf import (
    DtmfReceived,
    DtmfRelayError,
    DtmfSource,
    TelephoneEventReceiver,
    build_telephone_event,
    parse_dtmf_relay,
)
from gateway.media.rtp import parse_rtp

SIPP = Path("/usr/share/sip-tester")


def read_pcap_rtp(path: Path) -> list[bytes]:
    """UDP payloads from a classic little-endian Ethernet pcap (what sip-tester ships)."""
    data = path.read_bytes()
    magic, _, _, _, _, _, link = struct.unpack("<IHHiIII", data[:24])
    assert magic == 0xA1B2C3D4 and link == 1
    out, off = [], 24
    while off < len(data):
        _, _, incl, _ = struct.unpack("<IIII", data[off:off + 16])
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        out.append(ip[ihl + 8:])
    return out


PCAPS = {"0": "0", "1": "1", "5": "5", "9": "9", "*": "star", "#": "pound"}


@pytest.mark.skipif(not SIPP.is_dir(), reason="sip-tester pcaps not installed")
@pytest.mark.parametrize(("digit", "name"), sorted(PCAPS.items()))
def test_sipp_pcaps_give_one_event_each(digit: str, name: str) -> None:
    rx = TelephoneEventReceiver()
    events: list[DtmfReceived] = []
    for raw in read_pcap_rtp(SIPP / f"dtmf_2833_{name}.pcap"):
        p = parse_rtp(raw)
        assert p.payload_type == 101
        events += rx.receive(p.ssrc, p.timestamp, p.payload)
    assert events == [DtmfReceived(digit, 280, DtmfSource.RFC4733)]
    assert rx.end_retransmissions == 2


def _press(rx: TelephoneEventReceiver, event: int, ts: int, steps: int, end_copies: int = 3,
           ssrc: int = 1) -> list[DtmfReceived]:
    out = []
    for i in range(1, steps + 1):
        out += rx.receive(ssrc, ts, build_telephone_event(event, False, 160 * i))
    for _ in range(end_copies):
        out += rx.receive(ssrc, ts, build_telephone_event(event, True, 160 * (steps + 1)))
    return out


def test_generated_sequence_of_digits() -> None:
    rx = TelephoneEventReceiver()
    got = []
    for n, ev in enumerate([1, 2, 3, 10, 11, 12, 15]):
        got += _press(rx, ev, ts=1000 + n * 4000, steps=5)
    assert "".join(e.digit for e in got) == "123*#AD"
    assert all(e.duration_ms == 120 for e in got)


def test_lost_end_packets_still_report_once() -> None:
    rx = TelephoneEventReceiver()
    out = _press(rx, 4, ts=100, steps=4, end_copies=0)
    assert out == []
    out = _press(rx, 7, ts=5000, steps=2)
    assert [e.digit for e in out] == ["4", "7"]
    assert out[0].duration_ms == 80
    assert rx.flush() == []


def test_flush_reports_open_event() -> None:
    rx = TelephoneEventReceiver()
    _press(rx, 8, ts=1, steps=3, end_copies=0)
    assert [e.digit for e in rx.flush()] == ["8"]


def test_flash_and_garbage_are_not_digits() -> None:
    rx = TelephoneEventReceiver()
    assert _press(rx, 16, ts=1, steps=1) == []
    assert rx.receive(1, 99, b"\x01") == []


@pytest.mark.parametrize(
    ("body", "digit", "ms"),
    [
        ("Signal=5\r\nDuration=160\r\n", "5", 160),
        ("signal = #\nduration= 100", "#", 100),
        ("Duration=200\r\nSignal=*\r\n", "*", 200),
        ("Signal=10\r\n", "*", 250),
        ("Signal=11\r\nDuration=90", "#", 90),
        ("Signal=a\r\n", "A", 250),
    ],
)
def test_info_dtmf_relay(body: str, digit: str, ms: int) -> None:
    assert parse_dtmf_relay(body) == DtmfReceived(digit, ms, DtmfSource.SIP_INFO)


@pytest.mark.parametrize(
    "body", ["", "Duration=100", "Signal=X", "Signal=55", "Signal=1\nDuration=abc",
             "Signal=1\nDuration=0"],
)
def test_info_dtmf_relay_rejects(body: str) -> None:
    with pytest.raises(DtmfRelayError):
        parse_dtmf_relay(body)

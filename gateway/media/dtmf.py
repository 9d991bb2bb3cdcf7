"""DTMF from the phone: RFC 4733 telephone-event packets and SIP INFO `application/dtmf-relay`.

Both paths produce the same `DtmfReceived` event. RFC 4733 §2.5.1: an event is identified by
its RTP timestamp (the event start); its packets repeat with growing duration, and the end
packet (E bit) is sent three times — we report the event once, at the first end packet. If the
end packets are all lost, the event is reported when the next event starts or when the session
flushes. Telephone-event packets never reach the audio decoder (the RTP session routes them
here by payload type).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

_EVENT_CHARS = "0123456789*#ABCD"


class DtmfSource(enum.Enum):
    RFC4733 = "rfc4733"
    SIP_INFO = "sip_info"


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    digit: str  # one of 0-9 * # A-D
    duration_ms: int
    source: DtmfSource


class DtmfRelayError(ValueError):
    """An INFO body that is not a usable application/dtmf-relay payload (answer 400/415)."""


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    event: int
    end: bool
    volume: int
    duration: int  # in timestamp units


def parse_telephone_event(payload: bytes) -> TelephoneEvent:
    """RFC 4733 §2.3 payload: event(8) E(1) R(1) volume(6) duration(16)."""
    if len(payload) < 4:
        raise ValueError("telephone-event payload shorter than 4 octets")
    event, flags, duration = struct.unpack_from("!BBH", payload)
    return TelephoneEvent(event=event, end=bool(flags & 0x80), volume=flags & 0x3F,
                          duration=duration)


def build_telephone_event(event: int, end: bool, duration: int, volume: int = 10) -> bytes:
    return struct.pack("!BBH", event, (0x80 if end else 0) | (volume & 0x3F), duration & 0xFFFF)


class TelephoneEventReceiver:
    """Turns a stream of telephone-event packets into one `DtmfReceived` per key press."""

    def __init__(self, clock_rate: int = 8000) -> None:
        self._clock_rate = clock_rate
        self._current: tuple[int, int] | None = None  # (ssrc, timestamp) of the open event
        self._current_event: TelephoneEvent | None = None
        self._finished: set[tuple[int, int]] = set()
        self.end_retransmissions = 0

    def receive(self, ssrc: int, timestamp: int, payload: bytes) -> list[DtmfReceived]:
        """Feed one packet; returns the events it completes (usually none or one)."""
        try:
            ev = parse_telephone_event(payload)
        except ValueError:
            return []
        key = (ssrc, timestamp)
        if key in self._finished:
            self.end_retransmissions += 1
            return []
        out: list[DtmfReceived] = []
        if self._current is not None and self._current != key:
            # A new event started while the previous never showed its end bit (lost).
            out.extend(self.flush())
        self._current = key
        if self._current_event is None or ev.duration >= self._current_event.duration:
            self._current_event = ev
        if ev.end:
            out.extend(self._emit())
            self._finished.add(key)
            if len(self._finished) > 64:  # bounded memory: old keys are never seen again
                self._finished = {key}
        return out

    def flush(self) -> list[DtmfReceived]:
        """Report an event whose end packets never arrived (stream stopped or changed)."""
        if self._current is None:
            return []
        key = self._current
        out = self._emit()
        self._finished.add(key)
        return out

    def _emit(self) -> list[DtmfReceived]:
        ev = self._current_event
        self._current = None
        self._current_event = None
        if ev is None or ev.event >= len(_EVENT_CHARS):
            return []  # flash (16) and tones other than DTMF are not key presses
        duration_ms = round(ev.duration * 1000 / self._clock_rate)
        return [DtmfReceived(_EVENT_CHARS[ev.event], duration_ms, DtmfSource.RFC4733)]


_RELAY_ALIASES = {"10": "*", "11": "#", "12": "A", "13": "B", "14": "C", "15": "D"}
DEFAULT_INFO_DURATION_MS = 250


def parse_dtmf_relay(body: str) -> DtmfReceived:
    """Parse a SIP INFO `application/dtmf-relay` body: `Signal=5` and `Duration=160` (ms).

    Liberal: any line order, case-insensitive keys, spaces around `=`, and the numeric forms
    10/11 some phones send for * and #. A missing Duration is taken as 250 ms.
    """
    signal: str | None = None
    duration = DEFAULT_INFO_DURATION_MS
    for line in body.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if key == "signal":
            signal = value.upper()
        elif key == "duration":
            try:
                duration = int(value)
            except ValueError as exc:
                raise DtmfRelayError("dtmf-relay Duration is not an integer") from exc
            if not 0 < duration <= 60_000:
                raise DtmfRelayError("dtmf-relay Duration out of range")
    if signal is None:
        raise DtmfRelayError("dtmf-relay body without Signal")
    signal = _RELAY_ALIASES.get(signal, signal)
    if len(signal) != 1 or signal not in _EVENT_CHARS:
        raise DtmfRelayError("dtmf-relay Signal is not a DTMF digit")
    return DtmfReceived(signal, duration, DtmfSource.SIP_INFO)

"""DTMF towards the phone: RFC 4733 telephone-event packets on the call's RTP stream.

Each key is one event (RFC 4733 §2.5.1): packets every 20 ms carry the event's start timestamp
and a growing duration, the first with the marker bit; the end packet (E bit) goes out three
times (§2.5.1.4, so one loss does not lengthen the tone). While an event plays, the audio
path only advances its timestamp (`RtpSession.sending_event`), so audio resumes in time after
it. Keys are separated by a pause, as a keypad would.
"""

from __future__ import annotations

import asyncio

from gateway.media.dtmf import build_telephone_event
from gateway.media.rtp_session import RtpSession

EVENT_CODES = {c: i for i, c in enumerate("0123456789*#ABCD")}
PACKET_MS = 20
TONE_MS = 100
PAUSE_MS = 60
END_REPEATS = 3
VOLUME_DBM0 = 10  # -10 dBm0, a usual keypad level


class DtmfUnavailable(Exception):
    """The phone did not negotiate telephone-event, so DTMF cannot be sent in-band."""


async def send_digits(rtp: RtpSession, digits: str, *, tone_ms: int = TONE_MS,
                      pause_ms: int = PAUSE_MS) -> int:
    """Play `digits` (0-9 * # A-D) as RFC 4733 events; returns the packets sent."""
    if rtp.params.telephone_event_pt is None:
        raise DtmfUnavailable("the phone did not offer telephone-event (RFC 4733)")
    step = rtp.params.clock_rate * PACKET_MS // 1000
    sent = 0
    for digit in digits:
        code = EVENT_CODES[digit.upper()]
        start = rtp.send_timestamp
        rtp.sending_event = True
        try:
            duration = 0
            while duration < rtp.params.clock_rate * tone_ms // 1000:
                duration += step
                sent += rtp.send_event(build_telephone_event(code, False, duration, VOLUME_DBM0),
                                       start, marker=duration == step)
                await asyncio.sleep(PACKET_MS / 1000)
            for _ in range(END_REPEATS):
                sent += rtp.send_event(build_telephone_event(code, True, duration, VOLUME_DBM0),
                                       start)
        finally:
            rtp.sending_event = False
        await asyncio.sleep(pause_ms / 1000)
    return sent

"""A route's human fallback when Orga cannot take a call (issue 13 item 12).

A route with `on_orga_failure = "<transfer target name>"` sends a call whose Orga setup failed
(auth, validation, 5xx, timeouts) to that target instead of refusing it. Before the answer —
the only state a setup failure can leave — that is a `302 Moved Temporarily` whose Contact is
the target: the caller's PBX or carrier places the new call itself (RFC 3261 §8.1.3.4, §21.3.3),
so no media or dialog of ours stays in the path and no SIP extension is needed. A REFER would
need an answered dialog, i.e. a 200 OK to a caller we cannot serve.

Optionally an announcement is played first, as early media: 183 Session Progress with our SDP
answer, the WAV's audio on the call's RTP session, then the 302. The WAV is read once, at
config check and at start (`load_announcement`), and kept as 8 kHz mono 16-bit samples.
"""

from __future__ import annotations

import asyncio
import functools
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gateway.media.rtp_session import RtpSession
from gateway.media.transcode import G711Codec

RATE = 8000
MAX_ANNOUNCEMENT_S = 30.0

Pcm = npt.NDArray[np.int16]


class AnnouncementError(ValueError):
    """The announcement file cannot be used; the message says why (for `check-config`)."""


@functools.lru_cache(maxsize=16)
def load_announcement(path: str) -> Pcm:
    """A 16-bit PCM WAV file as 8 kHz mono samples (any rate and channel count accepted)."""
    try:
        with wave.open(str(Path(path)), "rb") as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            frames = wav.getnframes()
            if width != 2:
                raise AnnouncementError(f"{path} is {8 * width}-bit; only 16-bit PCM WAV is read")
            if frames / rate > MAX_ANNOUNCEMENT_S:
                raise AnnouncementError(f"{path} lasts {frames / rate:.1f} s, longer than "
                                        f"{MAX_ANNOUNCEMENT_S:.0f} s")
            raw = np.frombuffer(wav.readframes(frames), dtype="<i2")
    except (OSError, EOFError, wave.Error) as exc:
        raise AnnouncementError(f"cannot read {path} as a WAV file ({exc})") from None
    mono = raw.reshape(-1, channels).mean(axis=1)
    if rate != RATE and mono.size:
        positions = np.arange(int(mono.size * RATE / rate)) * (rate / RATE)
        mono = np.interp(positions, np.arange(mono.size), mono)
    pcm: Pcm = np.clip(np.round(mono), -32768, 32767).astype(np.int16)
    return pcm


def redirect_headers(target: str) -> list[tuple[str, str]]:
    """The headers of the 302 that hands the call to `target` (a sip:, sips: or tel: URI)."""
    return [("Contact", f"<{target}>")]


async def play(rtp: RtpSession, pcm: Pcm) -> None:
    """Send `pcm` on the call's RTP session, one packet per ptime, paced by the loop clock."""
    params = rtp.params
    codec = G711Codec(params.codec)
    step = RATE * params.ptime_ms // 1000
    loop = asyncio.get_running_loop()
    start = loop.time()
    for index, offset in enumerate(range(0, pcm.size, step)):
        chunk = pcm[offset : offset + step]
        if chunk.size < step:
            chunk = np.concatenate([chunk, np.zeros(step - chunk.size, dtype=np.int16)])
        rtp.send_audio(codec.encode(chunk), step, marker=index == 0)
        delay = start + (index + 1) * params.ptime_ms / 1000 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)

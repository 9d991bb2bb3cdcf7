"""A route's human fallback when Orga cannot take a call (issue 13 item 12).

A route with `on_orga_failure = "<transfer target name>"` sends a call whose Orga setup failed
(auth, validation, 5xx, timeouts) to that target instead of refusing it. Before the answer —
the only state a setup failure can leave — that is a `302 Moved Temporarily` whose Contact is
the target: the caller's PBX or carrier places the new call itself (RFC 3261 §8.1.3.4, §21.3.3),
so no media or dialog of ours stays in the path and no SIP extension is needed. A REFER would
need an answered dialog, i.e. a 200 OK to a caller we cannot serve. After the answer (the Orga
leg lost mid-call) the call itself plays the announcement through its pump and sends a blind
transfer (REFER) to the same target (`Call._transfer_after_loss`).

Optionally an announcement is played first, as early media: 183 Session Progress with our SDP
answer, the WAV's audio on the call's RTP session, then the 302. The WAV is checked by
`check-config` and decoded once at start (`preload`), with the recording announcement's code
(`gateway/records/announcement.py`: the same rules, the same PyAV resampling).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import numpy as np

from gateway.config import Route
from gateway.media.rtp_session import RtpSession
from gateway.media.transcode import G711Codec
from gateway.records.announcement import RATE, Pcm, announcement_pcm

_announcements: dict[str, Pcm] = {}  # path -> 8 kHz mono samples, filled at start


async def preload(routes: Iterable[Route]) -> None:
    """Decode every route's fallback announcement (blocking work, in a thread)."""
    for path in {r.orga_failure_announcement for r in routes} - {None} - set(_announcements):
        assert path is not None
        _announcements[path] = await asyncio.to_thread(announcement_pcm, path)


def announcement(path: str) -> Pcm:
    """A preloaded announcement (decoded here, blocking, if `preload` did not run: tests)."""
    pcm = _announcements.get(path)
    if pcm is None:
        pcm = _announcements[path] = announcement_pcm(path)
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

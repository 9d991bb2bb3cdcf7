"""A route's human fallback when Orga cannot take a call (issue 13 item 12).

A route with `on_orga_failure = "<transfer target name>"` sends a call whose Orga setup failed
(auth, validation, 5xx, timeouts) to that target instead of refusing it. Before the answer —
the only state a setup failure can leave — that is a `302 Moved Temporarily` whose Contact is
the target: the caller's PBX or carrier places the new call itself (RFC 3261 §8.1.3.4, §21.3.3),
so no media or dialog of ours stays in the path and no SIP extension is needed. A REFER would
need an answered dialog, i.e. a 200 OK to a caller we cannot serve. After the answer (the Orga
leg lost mid-call) the call itself plays the announcement through its pump and sends a blind
transfer (REFER) to the same target (`transfer_after_loss`).

Optionally an announcement is played first, as early media: 183 Session Progress with our SDP
answer, the WAV's audio on the call's RTP session, then the 302. The WAV is checked by
`check-config` and decoded once at start (`preload`), with the recording announcement's code
(`gateway/records/announcement.py`: the same rules, the same PyAV resampling).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from gateway.config import Route
from gateway.control.actions import ActionRefused, Actor
from gateway.control.transfer import TransferState
from gateway.media.rtp_session import RtpSession
from gateway.media.transcode import PHONE_RATE, G711Codec
from gateway.outcomes import Outcome
from gateway.records.announcement import RATE, Pcm, announcement_pcm

if TYPE_CHECKING:
    from gateway.call import Call

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


async def redirect(call: Call, target: str) -> Outcome:
    """Orga cannot take the call: send it to the route's person instead (a 302 to
    `target`), after the route's announcement as early media."""
    route = call.route
    path = route.orga_failure_announcement
    if path is not None and call._rtp is not None and call._answer_sdp is not None:
        call.ctx.signalling.progress(call.handle, call._answer_sdp.encode())
        audio = announcement(path)  # checked by check-config, decoded at start
        playing = call._tasks.create_task(play(call._rtp, audio),
                                          name=f"announcement {call.call_id}")
        waiting: set[asyncio.Future[Any]] = {playing, call._stop}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not playing.done():  # the caller hung up during the announcement
            playing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await playing
            return Outcome.CANCELLED if call._sip_done else Outcome.DRAINING
    call._extra_headers = redirect_headers(target)
    call.log.warning("Orga unavailable: call redirected to %s (route %s, on_orga_failure "
                     "%s)", target, call.route_label, route.on_orga_failure)
    return Outcome.ORGA_FALLBACK


async def transfer_after_loss(call: Call) -> Outcome:
    """The Orga leg broke after the answer: play the route's announcement, then a blind
    transfer (REFER) to its `on_orga_failure` target. Result `orga_fallback` when the
    target took the call; `orga_lost` (a BYE) when the transfer failed or was refused."""
    route, stop = call.route, call._stop
    path = route.orga_failure_announcement
    if path is not None and call._pump is not None:
        audio = announcement(path)
        call._pump.play_first(audio)  # the pump's own pacing; the AI sends nothing now
        if await _caller_left_within(stop, audio.size / PHONE_RATE + 0.1):
            return stop.result()
    try:
        transfer = call.request_transfer(route.on_orga_failure, Actor.FALLBACK)
    except ActionRefused as exc:
        call.log.warning("Orga fallback transfer refused: %s", exc.message)
        return Outcome.ORGA_LOST
    assert call.control.transfer_done is not None
    waiting: set[asyncio.Future[Any]] = {call.control.transfer_done, stop}
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if transfer.state is TransferState.SUCCEEDED:
        return Outcome.ORGA_FALLBACK
    if stop.done() and stop.result() is not Outcome.TRANSFERRED:
        return stop.result()  # the caller hung up meanwhile
    return Outcome.ORGA_LOST


async def _caller_left_within(stop: asyncio.Future[Outcome], seconds: float) -> bool:
    try:
        await asyncio.wait_for(asyncio.shield(stop), seconds)
    except TimeoutError:
        return False
    return True

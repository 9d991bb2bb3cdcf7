"""One aiortc RTCPeerConnection per call, laid out as the official Orga SDK lays it out.

Owns the WebRTC side of an Orga session (reference §6-§8):
- m-line 0: audio transceiver `sendrecv`, Opus only, carrying the caller's track (a receiver
  tuner, e.g. a low-latency jitter buffer, is applied to its receiver at once);
- m-line 1: video transceiver `sendonly` with no track (config switch to leave it out);
- m-line 2: the data channel `orga-realtime-client-events` (ordered, reliable).
The offer is created after full ICE gathering (aiortc gathers inside setLocalDescription) on
the configured local addresses only (`ice.py`), with an explicit ICE server list. On data
channel open it sends `session.update`; server events are decoded into typed values
(`events.py`). The session end is reported once on `ended`; `close()` is idempotent.
aiortc exceptions are mapped to `OrgaProtocolError` here.

A dead leg is found by its media: once connected, the audio receiver's last-packet time
(`getSynchronizationSources`, public aiortc API) is checked every `MEDIA_CHECK_S`; no new RTP
for `media_timeout_s` ends the session as MEDIA_TIMEOUT. Why media: when Orga's side dies
without closing, aiortc reports nothing until ICE consent expires (~30 s; it never reports
`disconnected`), while a live session sends audio continuously (20 ms frames, silence
included; the SDKs' browsers and aiortc alike). Worst-case detection is the timeout plus one
check interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from aiortc import (
    MediaStreamTrack,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCSessionDescription,
)

from gateway.aiortc_patches import restrict_host_addresses, tune_send_only_video, tune_sender
from gateway.orga.api import candidates_from_sdp
from gateway.orga.errors import OrgaError, OrgaProtocolError
from gateway.orga.events import (
    DATA_CHANNEL_LABEL,
    OrgaEndReason,
    ServerEvent,
    ServerEventDecoder,
    SessionEndTracker,
    session_update_message,
)
from gateway.orga.ice import make_configuration
from gateway.orga.settings import PeerSettings, SessionParams

__all__ = ["OrgaEndReason", "OrgaPeer", "candidates_from_sdp"]

log = logging.getLogger(__name__)

ReceiverTuner = Callable[[RTCRtpReceiver], object]
OPUS_ONLY = [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.name == "opus"]
MEDIA_CHECK_S = 0.25


def _quiet(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as retrieved so an unawaited one does not log at GC."""
    if not future.cancelled():
        future.exception()


class OrgaPeer:
    """The client peer of one Orga session. Build it inside the running event loop.

    `receiver_tuner` is applied to the audio receiver (the gateway passes
    `aiortc_patches.tune_receiver`); `encoded_track=True` says `caller_track` yields Opus
    packets (`CallerAudioTrack(opus=True)`), which then go out through
    `aiortc_patches.tune_sender`.
    """

    def __init__(
        self,
        caller_track: MediaStreamTrack,
        settings: PeerSettings,
        session_params: SessionParams,
        ice_servers: Sequence[RTCIceServer],
        receiver_tuner: ReceiverTuner | None = None,
        encoded_track: bool = False,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.settings = settings
        self.session_params = session_params
        self.conversation_id: str | None = None  # set by the owner once /calls answered
        self.remote_audio: asyncio.Future[MediaStreamTrack] = self._loop.create_future()
        self.connected: asyncio.Future[None] = self._loop.create_future()
        self.datachannel_open: asyncio.Future[None] = self._loop.create_future()
        self.ended: asyncio.Future[OrgaEndReason] = self._loop.create_future()
        for future in (self.remote_audio, self.connected, self.datachannel_open):
            future.add_done_callback(_quiet)
        self.decoder = ServerEventDecoder()
        self._listeners: list[Callable[[ServerEvent], None]] = []
        self._tracker = SessionEndTracker(settings.disconnected_grace_s)
        self._timer: asyncio.TimerHandle | None = None
        self._media_timer: asyncio.TimerHandle | None = None
        self._media_mark: object = None  # the receiver's newest last-packet timestamp seen
        self._media_seen_at = 0.0  # loop time when that mark last changed
        self._close_task: asyncio.Task[None] | None = None

        self._pc = RTCPeerConnection(make_configuration(ice_servers))
        self._audio = self._pc.addTransceiver(caller_track, direction="sendrecv")
        # Opus only: Orga's own clients are browsers whose offers lead with Opus, and the
        # caller track may hand aiortc Opus packets it encoded itself (media/uplink.py), which
        # is only right when Opus is certain to be the negotiated codec.
        self._audio.setCodecPreferences(OPUS_ONLY)
        if receiver_tuner is not None:
            receiver_tuner(self._audio.receiver)
        if encoded_track:  # Opus packets from the track go out without aiortc's RTP loop
            tune_sender(self._audio.sender)
        if settings.video_mline:
            # Nothing is sent or received on it: untuned, aiortc's sender would look for a track
            # every 20 ms and its receiver would carry a 1,000-object bandwidth estimator.
            tune_send_only_video(self._pc.addTransceiver("video", direction="sendonly"))
        self._channel: RTCDataChannel = self._pc.createDataChannel(DATA_CHANNEL_LABEL)
        self._wire()

    def __repr__(self) -> str:
        return f"OrgaPeer(conversation_id={self.conversation_id!r}, ended={self.ended.done()})"

    @property
    def pc(self) -> RTCPeerConnection:
        """The underlying peer connection (read-only use: stats, tests)."""
        return self._pc

    @property
    def connection_state(self) -> str:
        return str(self._pc.connectionState)

    # -- signalling ----------------------------------------------------------------------

    async def create_offer(self) -> str:
        """The offer SDP after full ICE gathering, candidates included."""
        restrict_host_addresses(self._pc, self.settings.ice_addresses)
        try:
            offer = await self._pc.createOffer()
            await self._pc.setLocalDescription(offer)
        except Exception as exc:  # aiortc raises plain exceptions; map them once, here
            raise OrgaProtocolError("peer", None, f"offer failed ({type(exc).__name__})") from exc
        return str(self._pc.localDescription.sdp)

    async def accept_answer(self, sdp: str) -> None:
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        except Exception as exc:
            raise OrgaProtocolError(
                "peer", None, f"answer rejected ({type(exc).__name__}: {exc})"
            ) from exc

    # -- events ----------------------------------------------------------------------------

    def add_event_listener(self, listener: Callable[[ServerEvent], None]) -> None:
        """Call `listener` for every decoded server event, as it arrives.

        Events are delivered, never stored: register before `create_offer` (in the peer
        factory) to see the ones sent on data-channel open.
        """
        self._listeners.append(listener)

    def release_caller_track(self) -> None:
        """Send no caller audio from this peer, and never stop the caller's track.

        For a session joined only to be ended (`session.py`): the caller track is shared with
        the peer that carries the call, and aiortc's sender stops its track when it ends.
        """
        self._audio.sender.replaceTrack(None)

    def send_session_update(self, params: SessionParams | None = None) -> None:
        if self._channel.readyState == "open":
            self._channel.send(session_update_message(params or self.session_params))

    # -- teardown ------------------------------------------------------------------------

    async def close(self) -> None:
        """Idempotent: reports LOCAL_CLOSE (unless already ended) and releases the peer
        connection (sockets, RTP/RTCP tasks, data channel). The caller track is left running:
        the media plane owns it."""
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._close())
        await asyncio.shield(self._close_task)

    async def _close(self) -> None:
        self._finish(self._tracker.on_local_close())
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._media_timer is not None:
            self._media_timer.cancel()
            self._media_timer = None
        try:
            await self._pc.close()
        except Exception:  # a half-built pc can fail to close; nothing else to release
            log.exception("orga peer close failed")
        closed = OrgaError("peer", None, "peer closed")
        for future in (self.remote_audio, self.connected, self.datachannel_open):
            if not future.done():
                future.set_exception(closed)

    # -- aiortc callbacks ------------------------------------------------------------------

    def _wire(self) -> None:
        pc, channel = self._pc, self._channel

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio" and not self.remote_audio.done():
                self.remote_audio.set_result(track)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            state = str(pc.connectionState)
            log.debug("orga peer %s connection %s", self.conversation_id, state)
            if state == "connected" and not self.connected.done():
                self.connected.set_result(None)
                self._watch_media()
            self._finish(self._tracker.on_connection_state(state, self._loop.time()))
            self._arm_timer()

        @channel.on("open")
        def on_open() -> None:
            channel.send(session_update_message(self.session_params))
            if not self.datachannel_open.done():
                self.datachannel_open.set_result(None)

        @channel.on("message")
        def on_message(message: str | bytes) -> None:
            event = self.decoder.decode(message)
            if event is not None:
                self._deliver(event)

        @channel.on("close")
        def on_close() -> None:
            self._finish(self._tracker.on_datachannel_closed())

    def _deliver(self, event: ServerEvent) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("orga event listener failed")

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self._tracker.deadline()
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _watch_media(self) -> None:
        if self.settings.media_timeout_s <= 0 or self._media_timer is not None:
            return
        self._media_seen_at = self._loop.time()
        self._media_timer = self._loop.call_later(MEDIA_CHECK_S, self._check_media)

    def _check_media(self) -> None:
        self._media_timer = None
        if self.ended.done():
            return
        sources = self._audio.receiver.getSynchronizationSources()
        mark = max((source.timestamp for source in sources), default=None)
        now = self._loop.time()
        if mark is not None and mark != self._media_mark:
            self._media_mark, self._media_seen_at = mark, now
        elif now - self._media_seen_at >= self.settings.media_timeout_s:
            log.warning("orga session %s: no audio for %.1f s, the leg is lost",
                        self.conversation_id, now - self._media_seen_at)
            self._finish(self._tracker.on_media_timeout())
            return
        self._media_timer = self._loop.call_later(MEDIA_CHECK_S, self._check_media)

    def _on_timer(self) -> None:
        self._timer = None
        self._finish(self._tracker.on_timer(self._loop.time()))

    def _finish(self, reason: OrgaEndReason | None) -> None:
        if reason is None or self.ended.done():
            return
        log.info("orga session %s ended: %s", self.conversation_id, reason.value)
        self.ended.set_result(reason)

"""One emulated Orga session: a real aiortc answerer plus an agent that listens and replies.

The answerer accepts the SDK layout (audio sendrecv, video sendonly → answered recvonly, data
channel `orga-realtime-client-events`), gathers on the configured addresses only (`ice.py`)
with no ICE servers, and on data-channel open sends `session.created` then
`conversation.created` (reference §7.2). It records every `session.update`; a malformed one
(not JSON, not an object, unknown event, bad field values) or a data channel with another label
is a protocol error it logs and reports in its stats (the real service has no error event to
send). Caller audio is ignored until a `session.update` with "audio" arrives (the audio gate,
on by default: the quirk the RN SDK works around, reference §6). The agent detects caller
utterances by energy (`audio.UtteranceDetector`), then sends the transcript event (when
`return_transcription`), plays the reply on its paced track, and sends
`response.output_item.done` with text that carries an emotion tag. In barge-in mode the reply
stops on the first caller frame above the speech threshold. A session ends when the client
closes, when the peer fails, or after a configured time limit (the emulator then closes
without any event, like the real service is believed to). A "dead leg" fault stops its media
while ICE/DTLS stay up, as a crashed or stuck media server would look to the client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
from aiortc import MediaStreamTrack, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from gateway.aiortc_patches import restrict_host_addresses, tune_receiver
from gateway.emulator.audio import (
    RATE,
    AgentAudioTrack,
    Samples,
    Utterance,
    UtteranceDetector,
    frame_to_mono,
    level_dbfs,
    load_wav,
    pcm_to_float,
    two_tone_phrase,
)
from gateway.orga.catalog import MODALITIES, MODELS, VOICES
from gateway.orga.events import DATA_CHANNEL_LABEL
from gateway.orga.ice import make_configuration
from gateway.orga.settings import SessionParams

log = logging.getLogger(__name__)

DEFAULT_REPLY_TEXT = (
    'Thanks for calling the Orga emulator. <emotion value="happy"/> How can I help you today? '
    "[laughter]"
)


@dataclass(frozen=True, slots=True)
class AgentSettings:
    reply_wav: Path | None = None
    reply_seconds: float = 1.5
    reply_text: str = DEFAULT_REPLY_TEXT
    greeting: str | None = None  # spoken (reply audio) and sent as text on connect when set
    vad_threshold_dbfs: float = -40.0
    legacy_events: bool = False  # `event`/`message` keys, as mid-2025 servers sent
    audio_gate: bool = True  # ignore caller audio until a session.update with "audio"
    barge_in: bool = False  # stop the reply as soon as the caller speaks
    ice_addresses: tuple[str, ...] | None = ("127.0.0.1",)

    def reply_samples(self) -> Samples:
        if self.reply_wav is not None:
            return load_wav(self.reply_wav)
        return two_tone_phrase(self.reply_seconds)


@dataclass(slots=True)
class SessionStats:
    """What one session saw; read by tests and the control endpoint."""

    conversation_id: str
    session_id: str
    params: dict[str, Any]
    session_updates: list[dict[str, Any]] = field(default_factory=list)
    utterances: list[Utterance] = field(default_factory=list)
    events_sent: list[str] = field(default_factory=list)
    replies_played: int = 0
    barge_ins: int = 0
    last_barge_in_at: float | None = None  # loop time (tests in the same loop read it)
    protocol_errors: list[str] = field(default_factory=list)
    connected: bool = False
    end_reason: str | None = None

    def snapshot(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "session_id": self.session_id,
            "params": self.params,
            "session_updates": self.session_updates,
            "utterances": [
                {"speech_s": round(u.speech_s, 3), "dominant_hz": round(u.dominant_hz, 1),
                 "level_dbfs": round(u.level_dbfs, 1)} for u in self.utterances
            ],
            "events_sent": self.events_sent,
            "replies_played": self.replies_played,
            "barge_ins": self.barge_ins,
            "protocol_errors": self.protocol_errors,
            "connected": self.connected,
            "end_reason": self.end_reason,
        }


class EmulatedSession:
    def __init__(
        self,
        conversation_id: str,
        params: SessionParams,
        settings: AgentSettings,
        reply: Samples,
        on_end: Callable[[EmulatedSession], None],
        voices: tuple[str, ...] = VOICES,
    ) -> None:
        self.conversation_id = conversation_id
        self.voices = voices
        self.params = params
        self.settings = settings
        self._reply = reply
        self._on_end = on_end
        self.stats = SessionStats(
            conversation_id=conversation_id,
            session_id="sess_" + secrets.token_hex(12),
            # The mcp_server URL holds the gateway's per-call secret: not in the state view.
            params={**params.to_json(), **({"mcp_server": {
                "id": params.mcp_server.id, "alias": params.mcp_server.alias, "url": "(secret)"}}
                if params.mcp_server is not None else {})},
        )
        self._pc = RTCPeerConnection(make_configuration([]))
        self._track = AgentAudioTrack()
        self._channel: RTCDataChannel | None = None
        self._vad = UtteranceDetector(threshold_dbfs=settings.vad_threshold_dbfs)
        self._audio_enabled = not settings.audio_gate
        self._reply_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._closing: asyncio.Task[None] | None = None
        self.closed = asyncio.get_running_loop().create_future()

    async def answer(self, offer_sdp: str) -> str:
        pc = self._pc

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                self._spawn(self._listen(track))

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            if channel.label != DATA_CHANNEL_LABEL:
                self._protocol_error(f"data channel label {channel.label[:64]!r} is not "
                                     f"{DATA_CHANNEL_LABEL!r}")
                return
            self._channel = channel
            channel.on("message", self._on_message)
            channel.on("close", lambda: self.end("datachannel_closed"))
            self._send_session_created()
            if self.settings.greeting:
                self._spawn(self._speak(self.settings.greeting))

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected":
                self.stats.connected = True
            elif pc.connectionState in ("failed", "closed"):
                self.end(f"peer_{pc.connectionState}")

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        if self.settings.barge_in:
            # Hear the caller without aiortc's 80 ms prefetch, so the reply stops as soon as
            # the caller's first loud frame arrives (the gateway's own low-delay receiver,
            # which hands each decoded frame to `_hear_samples` instead of the track).
            tune_receiver(pc.getTransceivers()[0].receiver, rate=RATE,
                          deliver=lambda pcm: self._hear_samples(pcm_to_float(pcm)))
        pc.addTrack(self._track)  # reuses the offered audio transceiver → sendrecv
        restrict_host_addresses(pc, self.settings.ice_addresses)
        await pc.setLocalDescription(await pc.createAnswer())
        return str(pc.localDescription.sdp)

    def end_after(self, seconds: float) -> None:
        self._timer = asyncio.get_running_loop().call_later(seconds, self.end, "time_limit")

    def stop_media_after(self, seconds: float) -> None:
        """A dead leg: after `seconds` no more RTP, while ICE, DTLS and the channel stay up."""
        asyncio.get_running_loop().call_later(seconds, self._track.freeze)

    def end(self, reason: str) -> None:
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close(reason))

    async def close(self, reason: str = "emulator_stopped") -> None:
        self.end(reason)
        assert self._closing is not None
        await asyncio.shield(self._closing)

    async def _close(self, reason: str) -> None:
        self.stats.end_reason = reason
        log.info("emulated session %s ended: %s", self.conversation_id, reason)
        if self._timer is not None:
            self._timer.cancel()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        self._track.stop()
        await self._pc.close()
        await asyncio.gather(*(t for t in self._tasks if t is not current),
                             return_exceptions=True)
        self._on_end(self)
        if not self.closed.done():
            self.closed.set_result(None)

    # -- data channel ----------------------------------------------------------------------

    def _send(self, kind: str, **fields: Any) -> None:
        channel = self._channel
        if channel is None or channel.readyState != "open":
            return
        if self.settings.legacy_events:
            message: dict[str, Any] = {"event": kind}
            for key, value in fields.items():
                message["message" if key in ("text", "transcript") else key] = value
        else:
            message = {"type": kind, **fields}
        channel.send(json.dumps(message, ensure_ascii=False))
        self.stats.events_sent.append(kind)

    def _send_session_created(self) -> None:
        p = self.params
        self._send("session.created", session={
            "id": self.stats.session_id, "object": "realtime.session", "model": p.model,
            "voice": p.voice, "temperature": p.temperature, "instructions": p.instructions,
            "modalities": list(p.modalities), "return_transcription": p.return_transcription,
        })
        self._send("conversation.created", conversation={"id": self.conversation_id})

    def _protocol_error(self, problem: str) -> None:
        log.warning("emulated session %s: protocol error: %s", self.conversation_id, problem)
        self.stats.protocol_errors.append(problem)
        del self.stats.protocol_errors[:-20]  # bounded

    def _on_message(self, message: str | bytes) -> None:
        try:
            decoded = json.loads(message)
        except (ValueError, UnicodeDecodeError):
            self._protocol_error("client message is not JSON")
            return
        if not isinstance(decoded, dict):
            self._protocol_error("client message is not an object")
            return
        if decoded.get("event") != "session.update":
            self._protocol_error(f"unknown client event {str(decoded.get('event'))[:64]!r}")
            return
        data = decoded.get("data")
        problems = session_update_problems(data, self.voices)
        if problems:
            for problem in problems:
                self._protocol_error(f"session.update: {problem}")
            return
        assert isinstance(data, dict)
        self.stats.session_updates.append(data)
        if "audio" in data.get("modalities", []):
            self._audio_enabled = True

    # -- the agent -------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _listen(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self._hear(frame)  # type: ignore[arg-type]

    def _hear(self, frame: av.AudioFrame) -> None:
        """One frame of the caller's audio from aiortc's own decoder."""
        self._hear_samples(frame_to_mono(frame))

    def _hear_samples(self, samples: Samples) -> None:
        """The caller's audio, mono float at the emulator's rate."""
        if not self._audio_enabled or self._closing is not None:
            return
        if (self.settings.barge_in and self._track.playing
                and level_dbfs(samples) >= self.settings.vad_threshold_dbfs):
            self._track.interrupt()  # the caller talks over the reply: stop it now
            self.stats.barge_ins += 1
            self.stats.last_barge_in_at = asyncio.get_running_loop().time()
        utterance = self._vad.feed(samples)
        if utterance is not None:
            self.stats.utterances.append(utterance)
            log.info("emulated session %s: utterance %.2f s at %.0f Hz",
                     self.conversation_id, utterance.speech_s, utterance.dominant_hz)
            self._spawn(self._respond(utterance))

    async def _respond(self, utterance: Utterance) -> None:
        async with self._reply_lock:
            if self.params.return_transcription:
                self._send(
                    "conversation.item.input_audio_transcription.completed",
                    transcript=f"I spoke for {utterance.speech_s:.1f} seconds at about "
                    f"{utterance.dominant_hz:.0f} hertz.",
                )
            await self._play_and_send(self.settings.reply_text)

    async def _speak(self, text: str) -> None:
        async with self._reply_lock:
            await self._play_and_send(text)

    async def _play_and_send(self, text: str) -> None:
        await self._track.play(self._reply)  # resolves early when interrupted (barge-in)
        self.stats.replies_played += 1
        self._send("response.output_item.done", text=text)


def session_update_problems(data: object, voices: tuple[str, ...]) -> list[str]:
    """What is wrong with a `session.update` `data` object (reference §7.1); [] if nothing."""
    if not isinstance(data, dict):
        return ["data is not an object"]
    problems = [f"unknown field {key[:32]!r}" for key in data if key not in UPDATE_FIELDS]
    if "model" in data and data["model"] not in MODELS:
        problems.append(f"model {str(data['model'])[:32]!r} is not one of {list(MODELS)}")
    if "voice" in data and data["voice"] not in voices:
        problems.append(f"voice {str(data['voice'])[:32]!r} is not a known voice")
    temperature = data.get("temperature")
    if "temperature" in data and (isinstance(temperature, bool)
                                  or not isinstance(temperature, int | float)
                                  or not 0.0 <= temperature <= 1.0):
        problems.append("temperature must be a number from 0 to 1")
    if "instructions" in data and not isinstance(data["instructions"], str | None):
        problems.append("instructions must be a string")
    modalities = data.get("modalities")
    if not isinstance(modalities, list) or not all(m in MODALITIES for m in modalities):
        problems.append(f"modalities must be a list within {list(MODALITIES)}")
    return problems


UPDATE_FIELDS = ("model", "voice", "temperature", "instructions", "modalities")

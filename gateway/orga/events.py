"""Data-channel protocol values and session-end tracking for one Orga session (sans-IO).

Owns the `orga-realtime-client-events` message formats (reference §7):
- client → server: `{"event": "session.update", "data": {...}}` built by `session_update_message`;
- server → client: `{"type": ...}` (legacy `{"event": ...}`) decoded by `ServerEventDecoder` into
  frozen values; text taken from `transcript`/`text`/`message`; unknown types and bad JSON are
  counted, never fatal.
It also owns the rule for when a session has ended (reference §8): data channel closed, peer
connection `failed` or `closed`, `disconnected` for longer than a grace period, or no media
from Orga for too long (the peer measures that). That rule is a small state machine driven with
explicit `now` values so tests step time by hand. `OrgaEndReason.lost` tells a session that broke
(failed, silent, disconnected) from one that was ended in order (closed by either side).
"""

from __future__ import annotations

import enum
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from gateway.orga.settings import SessionParams

log = logging.getLogger(__name__)

DATA_CHANNEL_LABEL = "orga-realtime-client-events"
MAX_EVENT_BYTES = 256 * 1024  # a transcript is small; refuse to parse anything absurd

_EMOTION_TAG = re.compile(r"<\s*emotion\b[^>]*>", re.IGNORECASE)
_SPACES = re.compile(r"\s{2,}")


def strip_emotion_tags(text: str) -> str:
    """Remove `<emotion value="..."/>` tags (as the SDK does before display) for logs."""
    return _SPACES.sub(" ", _EMOTION_TAG.sub("", text)).strip()


def session_update_message(params: SessionParams) -> str:
    """The `session.update` sent on data-channel open (RN SDK fix: audio is ignored before it).

    Like the SDK: modalities always (audio forced in), other fields only when set.
    """
    modalities = list(params.modalities)
    if "audio" not in modalities:
        modalities.insert(0, "audio")
    data: dict[str, Any] = {}
    if params.model:
        data["model"] = params.model
    if params.voice:
        data["voice"] = params.voice
    data["temperature"] = params.temperature
    if params.instructions:
        data["instructions"] = params.instructions
    data["modalities"] = modalities
    return json.dumps({"event": "session.update", "data": data}, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class SessionCreated:
    session_id: str | None
    model: str | None
    voice: str | None


@dataclass(frozen=True, slots=True)
class ConversationCreated:
    conversation_id: str | None


@dataclass(frozen=True, slots=True)
class InputTranscript:
    """`conversation.item.input_audio_transcription.completed`: what the caller said."""

    text: str


@dataclass(frozen=True, slots=True)
class ResponseDone:
    """`response.output_item.done`: the assistant's turn text (`clean_text` without tags)."""

    text: str
    clean_text: str


ServerEvent = SessionCreated | ConversationCreated | InputTranscript | ResponseDone


def _text(message: dict[str, Any], *keys: str) -> str:
    for key in keys:
        value = message.get(key)
        if isinstance(value, str):
            return value
    return ""


class ServerEventDecoder:
    """Decodes server messages; counts what it ignores so the call can report it."""

    def __init__(self) -> None:
        self.unknown = 0
        self.malformed = 0

    def decode(self, raw: str | bytes) -> ServerEvent | None:
        if len(raw) > MAX_EVENT_BYTES:
            self.malformed += 1
            log.warning("orga event too large (%d bytes), ignored", len(raw))
            return None
        try:
            message = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            self.malformed += 1
            log.warning("orga event is not JSON, ignored")
            return None
        if not isinstance(message, dict):
            self.malformed += 1
            log.warning("orga event is not an object, ignored")
            return None
        kind = message.get("type", message.get("event"))
        if kind == "session.created":
            session = message.get("session")
            session = session if isinstance(session, dict) else {}
            return SessionCreated(
                session_id=_opt_str(session.get("id")),
                model=_opt_str(session.get("model")),
                voice=_opt_str(session.get("voice")),
            )
        if kind == "conversation.created":
            conversation = message.get("conversation")
            conversation = conversation if isinstance(conversation, dict) else {}
            return ConversationCreated(conversation_id=_opt_str(conversation.get("id")))
        if kind == "conversation.item.input_audio_transcription.completed":
            return InputTranscript(text=_text(message, "transcript", "text", "message"))
        if kind == "response.output_item.done":
            text = _text(message, "text", "message")
            return ResponseDone(text=text, clean_text=strip_emotion_tags(text))
        self.unknown += 1
        log.debug("orga event of unknown type %r ignored", str(kind)[:64])
        return None


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


class OrgaEndReason(enum.Enum):
    """Why a session ended; a bounded metric label."""

    LOCAL_CLOSE = "local_close"
    DATACHANNEL_CLOSED = "datachannel_closed"
    PEER_FAILED = "peer_failed"
    PEER_CLOSED = "peer_closed"
    DISCONNECTED = "disconnected_timeout"
    MEDIA_TIMEOUT = "media_timeout"
    SETUP_FAILED = "setup_failed"

    @property
    def lost(self) -> bool:
        """The leg broke rather than being closed by either side."""
        return self in (OrgaEndReason.PEER_FAILED, OrgaEndReason.DISCONNECTED,
                        OrgaEndReason.MEDIA_TIMEOUT)


class SessionEndTracker:
    """Decides, once, when and why a session is over.

    Feed it connection-state changes and data-channel closure with the current time; it
    returns the end reason the first time the session is over and None afterwards. While the
    peer is `disconnected`, `deadline()` says when to call `on_timer(now)`.
    """

    def __init__(self, disconnected_grace_s: float) -> None:
        self._grace = disconnected_grace_s
        self._disconnected_since: float | None = None
        self.reason: OrgaEndReason | None = None

    def deadline(self) -> float | None:
        if self.reason is not None or self._disconnected_since is None:
            return None
        return self._disconnected_since + self._grace

    def on_connection_state(self, state: str, now: float) -> OrgaEndReason | None:
        if state == "failed":
            return self._end(OrgaEndReason.PEER_FAILED)
        if state == "closed":
            return self._end(OrgaEndReason.PEER_CLOSED)
        if state == "disconnected":
            if self._disconnected_since is None:
                self._disconnected_since = now
            return self.on_timer(now)
        self._disconnected_since = None  # recovered (connected/connecting)
        return None

    def on_datachannel_closed(self) -> OrgaEndReason | None:
        return self._end(OrgaEndReason.DATACHANNEL_CLOSED)

    def on_media_timeout(self) -> OrgaEndReason | None:
        return self._end(OrgaEndReason.MEDIA_TIMEOUT)

    def on_local_close(self) -> OrgaEndReason | None:
        return self._end(OrgaEndReason.LOCAL_CLOSE)

    def on_timer(self, now: float) -> OrgaEndReason | None:
        deadline = self.deadline()
        if deadline is not None and now >= deadline:
            return self._end(OrgaEndReason.DISCONNECTED)
        return None

    def _end(self, reason: OrgaEndReason) -> OrgaEndReason | None:
        if self.reason is not None:
            return None
        self.reason = reason
        self._disconnected_since = None
        return reason

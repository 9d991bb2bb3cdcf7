"""Data-channel message formats and the session-end rule, stepped with a fake clock."""

from __future__ import annotations

import json

import pytest

from gateway.clock import FakeClock
from gateway.orga.events import (
    ConversationCreated,
    InputTranscript,
    OrgaEndReason,
    ResponseDone,
    ServerEventDecoder,
    SessionCreated,
    SessionEndTracker,
    session_update_message,
    strip_emotion_tags,
)
from gateway.orga.settings import SessionParams


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"type": "session.created", "session": {"id": "s1", "object": "realtime.session",
                                                 "model": "orga-1-beta", "voice": "Sofía"}},
         SessionCreated("s1", "orga-1-beta", "Sofía")),
        ({"type": "conversation.created", "conversation": {"id": "c1"}},
         ConversationCreated("c1")),
        ({"type": "conversation.item.input_audio_transcription.completed",
          "transcript": "Hello, how are you?"}, InputTranscript("Hello, how are you?")),
        ({"type": "conversation.item.input_audio_transcription.completed", "text": "t"},
         InputTranscript("t")),
        ({"event": "conversation.item.input_audio_transcription.completed", "message": "m"},
         InputTranscript("m")),
        ({"type": "response.output_item.done", "text": "I am doing well, thank you!"},
         ResponseDone("I am doing well, thank you!", "I am doing well, thank you!")),
        ({"event": "response.output_item.done",
          "message": 'Hi <emotion value="happy"/> there [laughter]'},
         ResponseDone('Hi <emotion value="happy"/> there [laughter]', "Hi there [laughter]")),
    ],
)
def test_decodes_known_events(message: dict[str, object], expected: object) -> None:
    decoder = ServerEventDecoder()
    assert decoder.decode(json.dumps(message)) == expected
    assert decoder.decode(json.dumps(message).encode()) == expected
    assert (decoder.unknown, decoder.malformed) == (0, 0)


def test_unknown_and_bad_messages_are_counted_not_fatal() -> None:
    decoder = ServerEventDecoder()
    assert decoder.decode('{"type":"orga_agent.request","data":{}}') is None
    assert decoder.decode('{"type":"session.updated"}') is None
    assert decoder.decode("{not json") is None
    assert decoder.decode("[1, 2]") is None
    assert decoder.decode(b"\xff\xfe") is None
    assert decoder.decode("x" * 300_000) is None
    assert (decoder.unknown, decoder.malformed) == (2, 4)


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ('<emotion value="happy"/>Hello', "Hello"),
        ("A <emotion value='sad' /> B", "A B"),
        ("<Emotion value=x>ok", "ok"),
        ("no tags [laughter]", "no tags [laughter]"),
    ],
)
def test_strip_emotion_tags(text: str, clean: str) -> None:
    assert strip_emotion_tags(text) == clean


def test_session_update_like_the_sdk() -> None:
    message = json.loads(session_update_message(SessionParams(modalities=("video",))))
    assert message == {"event": "session.update", "data": {
        "model": "orga-1-beta", "voice": "Sofía", "temperature": 0.5,
        "modalities": ["audio", "video"]}}
    with_instructions = json.loads(session_update_message(
        SessionParams(instructions="Be brief.", temperature=0.0)))
    assert with_instructions["data"]["instructions"] == "Be brief."
    assert with_instructions["data"]["temperature"] == 0.0
    assert with_instructions["data"]["modalities"] == ["audio"]


def test_disconnected_ends_after_grace_only() -> None:
    clock = FakeClock()
    tracker = SessionEndTracker(disconnected_grace_s=5.0)
    assert tracker.on_connection_state("connected", clock.now()) is None
    assert tracker.on_connection_state("disconnected", clock.now()) is None
    assert tracker.deadline() == clock.now() + 5.0
    clock.advance(4.9)
    assert tracker.on_timer(clock.now()) is None
    clock.advance(0.1)
    assert tracker.on_timer(clock.now()) is OrgaEndReason.DISCONNECTED
    assert tracker.deadline() is None
    assert tracker.on_connection_state("failed", clock.now()) is None  # reported once


def test_disconnected_then_recovered_does_not_end() -> None:
    clock = FakeClock()
    tracker = SessionEndTracker(5.0)
    tracker.on_connection_state("disconnected", clock.now())
    clock.advance(3)
    assert tracker.on_connection_state("connected", clock.now()) is None
    assert tracker.deadline() is None
    clock.advance(10)
    assert tracker.on_timer(clock.now()) is None
    # a second disconnect starts a new grace period
    tracker.on_connection_state("disconnected", clock.now())
    assert tracker.deadline() == clock.now() + 5


@pytest.mark.parametrize(
    ("feed", "reason"),
    [
        (lambda t: t.on_connection_state("failed", 0.0), OrgaEndReason.PEER_FAILED),
        (lambda t: t.on_connection_state("closed", 0.0), OrgaEndReason.PEER_CLOSED),
        (lambda t: t.on_datachannel_closed(), OrgaEndReason.DATACHANNEL_CLOSED),
        (lambda t: t.on_local_close(), OrgaEndReason.LOCAL_CLOSE),
    ],
)
def test_immediate_end_reasons_reported_once(feed: object, reason: OrgaEndReason) -> None:
    tracker = SessionEndTracker(5.0)
    assert feed(tracker) is reason  # type: ignore[operator]
    assert tracker.on_datachannel_closed() is None
    assert tracker.on_local_close() is None
    assert tracker.reason is reason

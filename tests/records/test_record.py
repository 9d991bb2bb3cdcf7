"""The call record builder: what a call reports becomes one JSON record and its events."""

from __future__ import annotations

import json
from typing import Any

from gateway.records.record import CallRecord


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def emit(self, event: str, body: dict[str, Any]) -> None:
        self.events.append((event, body))


def _record(sink: Sink) -> CallRecord:
    return CallRecord(sink, call_id="c1", sip_call_id="abc@host", direction="inbound",
                      trunk="pbx", route="800*", caller="+4930111", callee="800", now=100.0,
                      wall_now=1_700_000_000.0)


def test_a_whole_call_becomes_one_record_with_times_relative_to_the_answer() -> None:
    sink = Sink()
    rec = _record(sink)
    rec.ringing(100.01)
    rec.step("media", 0.0123456)
    rec.step("calls", 0.2)
    rec.answered(101.0, "conv-1")
    rec.dtmf("5", 102.5, "rfc4733")
    rec.utterance("caller", "hello", 103.0)
    rec.utterance("assistant", "hi, how can I help?", 104.25)
    rec.turn(0.61234)
    rec.transfer_started("desk", 105.0, "agent")
    rec.transfer_ended("failed", 106.0, sip_status=486)
    rec.media("in", packets=250, lost=2, jitter_ms=3.5)
    rec.media("out", packets=240)
    rec.recording("/var/lib/x/c1.ogg")
    record = rec.ended(110.0, "caller_bye", 200)

    assert [e for e, _ in sink.events] == ["call.started", "call.answered", "transcript",
                                           "transcript", "call.ended"]
    assert sink.events[-1][1] == record
    json.dumps(record)  # JSON-ready
    assert record["call_id"] == "c1" and record["sip_call_id"] == "abc@host"
    assert record["conversation_id"] == "conv-1"
    assert record["timestamps"] == {
        "invite": "2023-11-14T22:13:20.000+00:00", "ringing": "2023-11-14T22:13:20.010+00:00",
        "answer": "2023-11-14T22:13:21.000+00:00", "end": "2023-11-14T22:13:30.000+00:00"}
    assert record["setup_s"] == 1.0 and record["duration_s"] == 9.0
    assert record["setup_steps_s"] == {"media": 0.0123, "calls": 0.2}
    assert record["result"] == "caller_bye" and record["sip_status"] == 200
    assert record["dtmf"] == [{"digit": "5", "at_s": 1.5, "source": "rfc4733"}]
    assert record["transcript"] == [
        {"role": "caller", "text": "hello", "at_s": 2.0},
        {"role": "assistant", "text": "hi, how can I help?", "at_s": 3.25}]
    assert record["turn_latencies_s"] == [0.6123]
    assert record["transfers"] == [{"target": "desk", "requested_by": "agent", "started_s": 4.0,
                                    "ended_s": 5.0, "outcome": "failed", "sip_status": 486}]
    assert record["media"] == {"in": {"packets": 250, "lost": 2, "jitter_ms": 3.5},
                               "out": {"packets": 240}}
    assert record["recording"] == "/var/lib/x/c1.ogg"


def test_transcript_event_carries_the_utterance_not_the_whole_transcript() -> None:
    sink = Sink()
    rec = _record(sink)
    rec.answered(101.0, "conv-1")
    rec.utterance("caller", "one", 102.0)
    rec.utterance("caller", "two", 103.0)
    event, body = sink.events[-1]
    assert event == "transcript"
    assert "transcript" not in body
    assert body["utterance"] == {"role": "caller", "text": "two", "at_s": 2.0}


def test_a_rejected_call_has_no_answer_and_its_status() -> None:
    sink = Sink()
    rec = _record(sink)
    rec.dtmf("1", 100.5)
    rec.transfer_started("desk", 100.6)
    record = rec.ended(101.0, "setup_timeout", 504)
    assert record["timestamps"]["answer"] is None and record["duration_s"] is None
    assert record["sip_status"] == 504 and record["conversation_id"] is None
    assert record["dtmf"][0]["at_s"] == 0.5  # relative to the INVITE when never answered
    assert record["transfers"][0]["outcome"] == "pending"

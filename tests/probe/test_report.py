"""ProbeReport: verdicts, exit codes, text and JSON output."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from gateway.probe.report import ProbeReport, Provisional, Verdict, format_text, to_json

CONNECTED = ProbeReport(
    target="sip:agent@127.0.0.1:5080",
    transport="udp",
    connected=True,
    status=200,
    reason="OK",
    provisional=(Provisional(180, "Ringing", 0.004),),
    codec="PCMU",
    setup_s=0.812,
    first_audio_s=2.31,
    turn_latency_s=0.734,
    reply_heard=True,
    reply_speech_s=1.48,
    heard_hz=660.2,
    heard_dbfs=-18.44,
    spoke_s=1.42,
    packets_sent=400,
    packets_received=396,
    packets_lost=4,
    jitter_ms=1.25,
    duration_s=8.0,
    ended_by="probe",
    local_rtp="127.0.0.1:40000",
    remote_rtp="127.0.0.1:20000",
)


@pytest.mark.parametrize(("report", "verdict", "code"), [
    (CONNECTED, Verdict.PASS, 0),
    (ProbeReport("sip:a@b", "udp", connected=True, reply_speech_s=0.28), Verdict.NO_REPLY, 1),
    (ProbeReport("sip:a@b", "udp", connected=False, status=503), Verdict.FAILED, 2),
    (ProbeReport("sip:a@b", "udp", connected=False, reply_heard=True), Verdict.FAILED, 2),
])
def test_verdict_and_exit_code(report: ProbeReport, verdict: Verdict, code: int) -> None:
    assert report.verdict is verdict
    assert report.exit_code == code


def test_text_report_of_a_good_call() -> None:
    text = format_text(CONNECTED)
    assert text.splitlines() == [
        "target        sip:agent@127.0.0.1:5080 over UDP",
        "progress      180 Ringing after 4 ms",
        "call          connected, 200 OK",
        "setup time    812 ms (INVITE -> 200)",
        "media         PCMU, RTP 127.0.0.1:40000 <-> 127.0.0.1:20000",
        "first audio   2310 ms after answer",
        "turn latency  734 ms (end of our phrase -> first reply audio)",
        "reply         heard, 1.48 s of audio",
        "heard         dominant 660 Hz at -18.4 dBFS",
        "packets       sent 400, received 396, lost 4 (1.0 %), jitter 1.2 ms",
        "ended         we hung up after 8000 ms",
        "result        PASS: call connected and a reply was heard (exit 0)",
    ]


def test_text_report_of_a_silent_call_and_a_remote_hangup() -> None:
    report = ProbeReport("sip:x@127.0.0.1", "tcp", connected=True, status=200, reason="OK",
                         setup_s=0.01, duration_s=12.5, ended_by="remote")
    text = format_text(report)
    assert "first audio   none heard" in text
    assert "turn latency  -" in text
    assert "reply         NOT heard (0.00 s of audio, need 0.3 s)" in text
    assert not any(line.startswith("heard") for line in text.splitlines())
    assert "ended         the far end hung up after 12.5 s" in text
    assert text.endswith("FAIL: call connected but no reply was heard (exit 1)")


@pytest.mark.parametrize(("report", "line"), [
    (ProbeReport("sip:x@h", "udp", False, status=503, reason="Service Unavailable"),
     "call    failed: 503 Service Unavailable"),
    (ProbeReport("sip:x@h", "udp", False, status=408, reason="Request Timeout"),
     "call    failed: 408 Request Timeout"),
    (ProbeReport("sip:x@h", "udp", False, error="no answer within 30 s"),
     "call    failed: no response (no answer within 30 s)"),
    (ProbeReport("sip:x@h", "udp", False, status=200, reason="OK",
                 error="unusable SDP answer: Incompatible media format"),
     "call    failed: 200 OK (unusable SDP answer: Incompatible media format)"),
])
def test_text_report_of_failed_calls(report: ProbeReport, line: str) -> None:
    lines = format_text(report).splitlines()
    assert line in lines
    assert lines[-1] == "result  FAIL: call did not connect (exit 2)"


def test_json_report_has_every_field_and_the_verdict() -> None:
    data = json.loads(to_json(CONNECTED))
    assert data["exit_code"] == 0 and data["verdict"] == "pass"
    assert data["loss_pct"] == pytest.approx(1.0)
    assert data["provisional"] == [{"status": 180, "reason": "Ringing", "at_s": 0.004}]
    for key in ("setup_s", "first_audio_s", "turn_latency_s", "packets_sent",
                "packets_received", "packets_lost", "jitter_ms", "heard_hz", "heard_dbfs",
                "reply_heard", "codec", "ended_by"):
        assert data[key] == getattr(CONNECTED, key)
    failed = json.loads(to_json(ProbeReport("sip:x@h", "udp", False, status=486)))
    assert failed["exit_code"] == 2 and failed["verdict"] == "failed"
    assert failed["setup_s"] is None and failed["loss_pct"] == 0.0


def test_text_report_of_several_turns() -> None:
    base = ProbeReport("sip:x@h", "udp", connected=True, status=200, reason="OK", turns=3,
                       turn_latency_s=0.64)
    good = replace(base, turns_answered=3, turn_latencies_s=(0.64, 0.655, 0.7),
                   reply_heard=True, reply_speech_s=4.5)
    assert "turns         3 said, 3 answered; latencies 640, 655, 700 ms" in format_text(good)
    partial = replace(base, turns_answered=2, turn_latencies_s=(0.64, 0.655), reply_speech_s=3.0)
    assert "reply         NOT heard after every phrase (2 of 3)" in format_text(partial)
    assert partial.exit_code == 1
    assert json.loads(to_json(good))["turn_latencies_s"] == [0.64, 0.655, 0.7]

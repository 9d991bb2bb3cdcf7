"""What one probe call measured, its pass/fail verdict, and how it is printed (text or JSON).

Exit codes (the CLI returns `ProbeReport.exit_code`): 0 the call connected and a reply was heard,
1 it connected but no reply was heard, 2 the call failed (rejected, no answer, bad answer SDP).
A reply is ≥ `REPLY_MIN_S` of non-silent audio received after our phrase's last voiced frame;
when the probe says its phrase several times (`turns`), every phrase needs its reply.
Times are seconds on the probe's monotonic clock; None means "did not happen".
"""

from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass
from typing import Any

REPLY_MIN_S = 0.3


class Verdict(enum.Enum):
    PASS = 0  # connected, reply heard
    NO_REPLY = 1  # connected, nothing (or too little) heard after we spoke
    FAILED = 2  # never connected


@dataclass(frozen=True, slots=True)
class Provisional:
    status: int
    reason: str
    at_s: float  # after the INVITE was sent


@dataclass(frozen=True, slots=True)
class ProbeReport:
    target: str
    transport: str  # "udp" | "tcp"
    connected: bool
    status: int | None = None  # final SIP status of the INVITE (None: no final response)
    reason: str | None = None  # its reason phrase
    error: str | None = None  # why the probe gave up, when it did (no answer, unusable SDP)
    provisional: tuple[Provisional, ...] = ()
    codec: str | None = None
    srtp: str | None = None  # the SRTP suite when the media was encrypted
    setup_s: float | None = None  # INVITE sent → 2xx received
    first_audio_s: float | None = None  # 2xx → first non-silent frame received (0: early media)
    turn_latency_s: float | None = None  # end of our phrase → first non-silent frame after it
    turn_latencies_s: tuple[float, ...] = ()  # the same for every phrase that got an answer
    turns: int = 0  # phrases we began saying
    turns_answered: int = 0  # phrases followed by a reply of at least REPLY_MIN_S
    reply_heard: bool = False
    reply_speech_s: float = 0.0  # non-silent audio received after our phrase(s) ended
    heard_hz: float | None = None  # dominant frequency of everything non-silent we received
    heard_dbfs: float | None = None  # its RMS level
    spoke_s: float = 0.0  # voiced audio we sent
    packets_sent: int = 0
    packets_received: int = 0
    packets_lost: int = 0
    jitter_ms: float = 0.0
    max_gap_s: float | None = None  # longest time between two received packets (pacing gaps)
    onset_delays_s: tuple[float, ...] = ()  # start of each phrase → first voice heard after it
    duration_s: float | None = None  # 2xx → end of the call
    ended_by: str | None = None  # "probe" (our BYE), "remote" (their BYE), or a SIP end reason
    recorded: str | None = None  # path of the recording, if one was written
    local_sip: str | None = None  # our SIP address, "127.0.0.1:40123"
    local_rtp: str | None = None
    remote_rtp: str | None = None

    @property
    def loss_pct(self) -> float:
        expected = self.packets_received + self.packets_lost
        return 100.0 * self.packets_lost / expected if expected else 0.0

    @property
    def verdict(self) -> Verdict:
        if not self.connected:
            return Verdict.FAILED
        return Verdict.PASS if self.reply_heard else Verdict.NO_REPLY

    @property
    def exit_code(self) -> int:
        return self.verdict.value

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["loss_pct"] = round(self.loss_pct, 3)
        data["verdict"] = self.verdict.name.lower()
        data["exit_code"] = self.exit_code
        return data


def to_json(report: ProbeReport) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=True)


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


_VERDICT_TEXT = {
    Verdict.PASS: "PASS: call connected and a reply was heard",
    Verdict.NO_REPLY: "FAIL: call connected but no reply was heard",
    Verdict.FAILED: "FAIL: call did not connect",
}


def format_text(report: ProbeReport) -> str:
    """The human report: one labelled line per measurement, verdict last."""
    r = report
    rows: list[tuple[str, str]] = [("target", f"{r.target} over {r.transport.upper()}")]
    for p in r.provisional:
        rows.append(("progress", f"{p.status} {p.reason} after {_ms(p.at_s)}"))
    if r.connected:
        rows.append(("call", f"connected, {r.status} {r.reason}"))
        rows.append(("setup time", f"{_ms(r.setup_s)} (INVITE -> {r.status})"))
        media = r.codec or "-"
        if r.srtp:
            media += f" over SRTP ({r.srtp})"
        if r.local_rtp and r.remote_rtp:
            media += f", RTP {r.local_rtp} <-> {r.remote_rtp}"
        rows.append(("media", media))
        first = _ms(r.first_audio_s)
        rows.append(("first audio", "none heard" if r.first_audio_s is None else
                     f"{first} after answer"))
        rows.append(("turn latency", "-" if r.turn_latency_s is None else
                      f"{_ms(r.turn_latency_s)} (end of our phrase -> first reply audio)"))
        if r.turns > 1:
            latencies = ", ".join(f"{lat * 1000:.0f}" for lat in r.turn_latencies_s) or "-"
            rows.append(("turns", f"{r.turns} said, {r.turns_answered} answered; "
                         f"latencies {latencies} ms"))
        if r.reply_heard:
            reply = f"heard, {r.reply_speech_s:.2f} s of audio"
        elif r.turns > 1:
            reply = f"NOT heard after every phrase ({r.turns_answered} of {r.turns})"
        else:
            reply = f"NOT heard ({r.reply_speech_s:.2f} s of audio, need {REPLY_MIN_S:.1f} s)"
        rows.append(("reply", reply))
        if r.heard_hz is not None and r.heard_dbfs is not None:
            rows.append(("heard", f"dominant {r.heard_hz:.0f} Hz at {r.heard_dbfs:.1f} dBFS"))
        rows.append(("packets", f"sent {r.packets_sent}, received {r.packets_received}, "
                     f"lost {r.packets_lost} ({r.loss_pct:.1f} %), jitter {r.jitter_ms:.1f} ms"))
        who = {"probe": "we hung up", "remote": "the far end hung up"}.get(
            r.ended_by or "", f"ended ({r.ended_by})")
        rows.append(("ended", f"{who} after {_ms(r.duration_s)}"))
    else:
        final = f"{r.status} {r.reason or ''}".strip() if r.status is not None else "no response"
        rows.append(("call", f"failed: {final}" + (f" ({r.error})" if r.error else "")))
    if r.recorded:
        rows.append(("recorded", r.recorded))
    rows.append(("result", f"{_VERDICT_TEXT[r.verdict]} (exit {r.exit_code})"))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {text}" for label, text in rows)

"""One call's record: the facts a `Call` reports while it runs, as JSON when it ends.

The `Call` owns a `CallRecord` and feeds it with one-line calls (`ringing`, `step`, `answered`,
`dtmf`, `utterance`, `turn`, `transfer_started`/`transfer_ended`, `media`, `recording`,
`ended`). The builder does no I/O: it hands each event (`call.started`, `call.answered`,
`transcript`, `call.ended`) to a `RecordSink` (the webhook sender, or nothing).

Time: every argument named `now` is the loop clock (`loop.time()`), the call's one clock. One
wall-clock reading taken when the record starts turns loop times into UTC timestamps; the
transcript, DTMF and transfers carry seconds relative to the answer (negative before it; relative
to the INVITE in a call never answered).
Transcripts and digits are personal data: they go only to the configured sink, never to logs.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

EVENTS = ("call.started", "call.answered", "call.ended", "transcript")
SCHEMA_VERSION = 1


class RecordSink(Protocol):
    """Where records go; `emit` must never block (the webhook sender only queues)."""

    def emit(self, event: str, body: dict[str, Any]) -> None: ...


class NullSink:
    """No webhooks configured: records are built (cheap) and dropped."""

    def emit(self, event: str, body: dict[str, Any]) -> None:
        return None


NULL_SINK = NullSink()


@dataclass(slots=True)
class _Transfer:
    target: str
    started: float
    by: str
    ended: float | None = None
    outcome: str = "pending"
    sip_status: int | None = None


class CallRecord:
    """Builds one call's record; create it when the INVITE arrives."""

    def __init__(self, sink: RecordSink, *, sip_call_id: str, direction: str, trunk: str,
                 route: str, caller: str, callee: str, now: float, call_id: str | None = None,
                 wall_now: float | None = None) -> None:
        self._sink = sink
        self._wall0 = time.time() if wall_now is None else wall_now  # at `now`, the INVITE
        # Our own id: unique even when a carrier reuses a SIP Call-ID (names the recording).
        self._ids = {"call_id": call_id or uuid.uuid4().hex, "sip_call_id": sip_call_id,
                     "conversation_id": None}
        self._meta = {"direction": direction, "trunk": trunk, "route": route,
                      "caller": caller, "callee": callee}
        self._invite_at = now
        self._ringing_at: float | None = None
        self._answered_at: float | None = None
        self._ended_at: float | None = None
        self._steps: dict[str, float] = {}
        self._result: str | None = None
        self._sip_status: int | None = None
        self._transfers: list[_Transfer] = []
        self._dtmf: list[tuple[str, float, str]] = []
        self._transcript: list[tuple[str, str, float]] = []
        self._turns: list[float] = []
        self._media: dict[str, dict[str, float | int]] = {}
        self._recording: str | None = None
        self._sink.emit("call.started", self.snapshot())

    # --- facts, in the order a call meets them --------------------------------------------------
    def ringing(self, now: float) -> None:
        if self._ringing_at is None:
            self._ringing_at = now

    def step(self, name: str, seconds: float) -> None:
        """One setup step's duration (the same steps as `call_setup_step_seconds`)."""
        self._steps[name] = round(seconds, 4)

    def answered(self, now: float, conversation_id: str | None) -> None:
        self._answered_at = now
        self._ids["conversation_id"] = conversation_id
        self._sink.emit("call.answered", self.snapshot())

    def dtmf(self, digit: str, now: float, source: str = "") -> None:
        self._dtmf.append((digit, now, source))

    def utterance(self, role: str, text: str, now: float) -> None:
        """`role` is "caller" (input transcript) or "assistant" (the assistant's turn text)."""
        self._transcript.append((role, text, now))
        self._sink.emit("transcript", {**self.snapshot(transcript=False),
                                       "utterance": self._utterance(role, text, now)})

    def turn(self, latency_s: float) -> None:
        """A turn latency (caller stops → first AI audio); fits `TurnLatencyMeter(on_turn=)`."""
        self._turns.append(round(latency_s, 4))

    def transfer_started(self, target: str, now: float, by: str = "") -> None:
        """A transfer attempt began (`target` the route's name for it, `by` who asked)."""
        self._transfers.append(_Transfer(target, now, by))

    def transfer_ended(self, outcome: str, now: float, sip_status: int | None = None) -> None:
        """The latest attempt ended (one runs at a time): `outcome` the `transfers_total`
        result, `sip_status` the final status the transferee reported or the REFER's error."""
        attempt = self._transfers[-1]
        attempt.ended, attempt.outcome, attempt.sip_status = now, outcome, sip_status

    def media(self, direction: str, **figures: float | int) -> None:
        """Per-direction media figures: direction "in" (caller → us) or "out" (us → caller)."""
        self._media.setdefault(direction, {}).update(figures)

    def recording(self, path: str | None) -> None:
        """The recording's file (None: recording failed, see the log)."""
        self._recording = path

    def ended(self, now: float, result: str, sip_status: int | None) -> dict[str, Any]:
        """The call is over: emit `call.ended` with the whole record and return it."""
        self._ended_at, self._result, self._sip_status = now, result, sip_status
        record = self.snapshot()
        self._sink.emit("call.ended", record)
        return record

    @classmethod
    def refused(cls, sink: RecordSink, *, sip_call_id: str, trunk: str, route: str, caller: str,
                callee: str, result: str, sip_status: int, now: float) -> None:
        """A call refused at admission (capacity, draining, no route) still gets its record."""
        record = cls(sink, sip_call_id=sip_call_id, direction="inbound", trunk=trunk,
                     route=route, caller=caller, callee=callee, now=now)
        record.ended(now, result, sip_status)

    # --- output ---------------------------------------------------------------------------------
    @property
    def call_id(self) -> str:
        return str(self._ids["call_id"])

    def snapshot(self, *, transcript: bool = True) -> dict[str, Any]:
        """The record as it stands, JSON-ready."""
        record: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            **self._ids,
            **self._meta,
            "timestamps": {
                "invite": self._iso(self._invite_at),
                "ringing": self._iso(self._ringing_at),
                "answer": self._iso(self._answered_at),
                "end": self._iso(self._ended_at),
            },
            "setup_steps_s": dict(self._steps),
            "setup_s": self._span(self._invite_at, self._answered_at),
            "duration_s": self._span(self._answered_at, self._ended_at),
            "result": self._result,
            "sip_status": self._sip_status,
            "transfers": [self._transfer(t) for t in self._transfers],
            "dtmf": [{"digit": d, "at_s": self._rel(at), "source": source}
                     for d, at, source in self._dtmf],
            "media": {k: dict(v) for k, v in self._media.items()},
            "turn_latencies_s": list(self._turns),
            "recording": self._recording,
        }
        if transcript:
            record["transcript"] = [self._utterance(*u) for u in self._transcript]
        return record

    def _transfer(self, t: _Transfer) -> dict[str, Any]:
        return {"target": t.target, "requested_by": t.by, "started_s": self._rel(t.started),
                "ended_s": None if t.ended is None else self._rel(t.ended),
                "outcome": t.outcome, "sip_status": t.sip_status}

    def _utterance(self, role: str, text: str, now: float) -> dict[str, Any]:
        return {"role": role, "text": text, "at_s": self._rel(now)}

    def _rel(self, now: float) -> float:
        """Seconds since the answer (since the INVITE for a call never answered)."""
        base = self._answered_at if self._answered_at is not None else self._invite_at
        return round(now - base, 3)

    def _iso(self, now: float | None) -> str | None:
        if now is None:
            return None
        wall = self._wall0 + (now - self._invite_at)
        return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")

    @staticmethod
    def _span(start: float | None, end: float | None) -> float | None:
        return None if start is None or end is None else round(end - start, 3)

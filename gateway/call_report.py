"""What one call reports: its accounting while it runs and at its end.

`CallReport` is a part each `Call` owns (`call.report`). While the call runs it feeds the
per-conversation series (`stats`, registered by the call once answered), turn latencies, the
setup steps (`SetupSteps`) and the Orga transcripts into the metrics and the call record; it
answers the operator's views (`info` for `/v1/calls/{id}`, `describe` for `GET /calls`). At the
end (`finish`, the last step of the call's teardown) it removes the conversation's series,
counts the call, its RTP and playout statistics and closes the call record.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from gateway.clock import Clock
from gateway.media.transcode import PHONE_RATE
from gateway.metrics import ConversationStats, Metrics
from gateway.orga.events import InputTranscript, ResponseDone, ServerEvent
from gateway.outcomes import Outcome
from gateway.records.record import CallRecord

if TYPE_CHECKING:
    from gateway.call import Call


class SetupSteps:
    """Times consecutive setup steps into the per-step histogram."""

    def __init__(self, clock: Clock, metrics: Metrics, record: CallRecord) -> None:
        self._clock, self._metrics, self._record, self._at = clock, metrics, record, clock.now()

    def done(self, name: str) -> None:
        now = self._clock.now()
        self._metrics.setup_step(name, now - self._at)
        self._record.step(name, now - self._at)
        self._at = now


class CallReport:
    """The metrics, the per-conversation series and the record of one call."""

    def __init__(self, call: Call) -> None:
        self._call = call

    def turn(self, seconds: float) -> None:
        """A turn latency (`TurnLatencyMeter(on_turn=)`)."""
        self._call.ctx.metrics.turn_latency(seconds)
        self._call.record.turn(seconds)

    def orga_event(self, event: ServerEvent) -> None:
        """The Orga session's transcripts, counted and recorded (their text logged only with
        [privacy] log_content = true: transcripts are personal data)."""
        if isinstance(event, InputTranscript):
            self._utterance("transcript", "caller", event.text,
                            "caller said: %s", "caller transcript received (%d characters)")
        elif isinstance(event, ResponseDone):
            self._utterance("assistant", "assistant", event.clean_text,
                            "assistant said: %s", "assistant text received (%d characters)")

    def _utterance(self, kind: str, speaker: str, text: str, said: str, received: str) -> None:
        call = self._call
        call.ctx.metrics.text_event(kind)
        call.record.utterance(speaker, text, call._clock.now())
        if call.ctx.config.privacy.log_content:
            call.log.info(said, text)
        else:
            call.log.info(received, len(text))

    def stats(self) -> ConversationStats:
        """The per-conversation series' values (read at scrape time)."""
        call = self._call
        rtp = call._rtp.stats if call._rtp is not None else None
        pump = call._pump.stats if call._pump is not None else None
        return ConversationStats(
            audio_in_seconds=(rtp.received.audio_seconds) if rtp else 0.0,
            audio_out_seconds=(pump.samples_sent_audio / PHONE_RATE) if pump else 0.0,
            packets_in=rtp.received.packets if rtp else 0,
            packets_out=rtp.sent.packets if rtp else 0,
            packets_lost=rtp.received.lost if rtp else 0,
            jitter_seconds=(rtp.received.jitter_ms / 1000.0) if rtp else 0.0,
            turns=call._meter.turns,
            last_turn_latency_seconds=call._meter.last_turn_s,
        )

    def finish(self, outcome: Outcome) -> None:
        """The end-of-call accounting: series removed, call and media counted, record closed."""
        call = self._call
        m = call.ctx.metrics
        if call.conversation_id is not None:
            m.remove_conversation(call.conversation_id)
        result = outcome.result
        status = 200 if call._answered else outcome.disposition.status
        duration = None if call.answered_at is None else call._clock.now() - call.answered_at
        m.call_ended(result, call.route_label, call.trunk, duration)
        if call._rtp is not None:
            stats = call._rtp.stats
            m.rtp("in", stats.received.packets, stats.received.bytes, stats.received.lost,
                  stats.received.late)
            m.rtp("out", stats.sent.packets, stats.sent.bytes)
            m.rtp_jitter(stats.received.jitter_ms / 1000.0)
            m.security_rejection("rtp_foreign_source", stats.received.foreign_dropped)
            m.security_rejection("rtp_rate", stats.received.rate_dropped)
            got = stats.received
            call.record.media("in", packets=got.packets, lost=got.lost, late=got.late,
                              jitter_ms=round(got.jitter_ms, 2))
            call.record.media("out", packets=stats.sent.packets)
        if call._pump is not None:
            pump = call._pump.stats
            if pump.underruns_speech:
                m.playout_underrun(pump.underruns_speech)
            if pump.dropped_backlog:
                m.playout_dropped(pump.dropped_backlog_ms / 1000.0)
            if pump.max_gap_ms:
                m.playout_max_gap(pump.max_gap_ms / 1000.0)
            call.record.media("out", underruns=pump.underruns_speech,
                              ai_lost=pump.lost_speech, dropped_ms=pump.dropped_backlog_ms,
                              max_gap_ms=round(pump.max_gap_ms, 1))
        call.record.ended(call._clock.now(), result, status)
        if duration is not None:
            call.log.info("call ended: %s after %.1f s", result, duration)

    def info(self) -> dict[str, object]:
        """One call of the operator API (`GET /v1/calls/{id}`)."""
        call = self._call
        now = call._clock.now()
        return {
            "id": call.control_id,
            "sip_call_id": call.call_id,
            "conversation_id": call.conversation_id,
            "direction": call.direction,
            "caller": call.caller,
            "callee": call.callee,
            "trunk": call.trunk,
            "route": call.route_label,
            "state": call.state,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(call.started_wall)),
            "age_s": round(now - call.started_at, 3),
            "setup_s": (None if call.answered_at is None
                        else round(call.answered_at - call.started_at, 3)),
            "talk_s": None if call.answered_at is None else round(now - call.answered_at, 3),
            **call.control.describe(),
        }

    def describe(self) -> dict[str, object]:
        """One entry of `GET /calls`."""
        call = self._call
        rtp = call._rtp
        srtp = rtp.params.srtp if rtp is not None else None
        return {
            "call_id": call.call_id,
            "conversation_id": call.conversation_id,
            "route": call.route_label,
            "trunk": call.trunk,
            "state": "answered" if call._answered else "setup",
            "age_seconds": round(call._clock.now() - call.started_at, 3),
            "srtp": srtp.suite.value if srtp is not None else None,
            **_asdict(self.stats()),
        }


def _asdict(stats: ConversationStats) -> dict[str, object]:
    return {name: getattr(stats, name) for name in stats.__slots__}

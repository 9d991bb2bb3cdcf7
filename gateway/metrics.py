"""Every Prometheus metric the gateway exports, in one explicit `CollectorRegistry`.

This module owns metric names (all `orga_gateway_*`), label sets and their bounds. Other parts
record only through the typed methods of one `Metrics` object; free-form strings that could
grow without bound (methods, statuses, reasons, steps, directions) are folded into fixed sets
here, so a scanner sending `FOO` requests cannot create series. Routes and trunks come from the
config (bounded by it). The only unbounded-looking label, `conversation_id`, belongs to the
per-conversation series (issue 6 item 9): they exist only between `add_conversation` and
`remove_conversation` and are read from the call's own stats at scrape time, so they never
outnumber active calls and nobody has to push updates.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from enum import Enum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway import __version__

log = logging.getLogger(__name__)

PREFIX = "orga_gateway"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

SIP_METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "INFO",
                         "UPDATE", "PRACK", "REFER", "NOTIFY", "SUBSCRIBE", "MESSAGE"})
DIRECTIONS = frozenset({"in", "out"})
# Call.setup times "media" itself; the rest are open_session's steps (gateway/orga/session.py).
SETUP_STEPS = frozenset({"media", "client_secrets", "ice_config", "offer", "calls", "connected",
                         "datachannel_open"})
ORGA_ENDPOINTS = frozenset({"client_secrets", "ice_config", "calls"})
ORGA_ERROR_KINDS = frozenset({"timeout", "network", "protocol"})
SECURITY_REASONS = frozenset({
    "unknown_source", "register", "rate_source_invite", "rate_source_request", "rate_global",
    "trunk_capacity", "auth_missing", "auth_failed", "auth_stale", "auth_replay",
    "auth_bad_nonce", "tcp_connections_source", "tcp_connections_total", "tcp_idle",
    "tcp_header_timeout", "message_too_large", "malformed", "rtp_foreign_source", "rtp_rate",
    "rate_trunk", "auth_banned",
    "tls_handshake_timeout", "tls_handshake", "tls_client_certificate",
})
SRTP_FAILURES = frozenset({"auth", "replay", "malformed"})  # media/srtp.py FAILURE_REASONS
DTMF_SOURCES = frozenset({"rfc4733", "sip_info"})  # media/dtmf.py DtmfSource
TEXT_EVENT_KINDS = frozenset({"transcript", "assistant"})
TRANSFER_RESULTS = frozenset({"transferred", "rejected", "failed", "timeout"})
ACTORS = frozenset({"api", "agent", "dtmf", "fallback"})
TOOLS = frozenset({"hang_up", "transfer_call", "send_dtmf", "get_call_info"})
WEBHOOK_OUTCOMES = frozenset({"delivered", "failed", "spooled", "dropped"})
OTHER = "other"

SETUP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0)
STEP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
TURN_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
DURATION_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
JITTER_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2)
LOOP_LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1.0)


def _thread_count() -> int:
    """Threads of this process, native ones included (PyAV's filter graphs start their own):
    /proc on Linux, else only those Python knows about."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _label(value: str | Enum, allowed: frozenset[str]) -> str:
    text = value.value if isinstance(value, Enum) else value
    return text if text in allowed else OTHER


def status_class(status: int) -> str:
    """`2xx`-style class of a SIP status; anything outside 100..699 is `other`."""
    return f"{status // 100}xx" if 100 <= status <= 699 else OTHER


def orga_status(status: int | str) -> str:
    """HTTP statuses Orga documents keep their code; others fold to a class; kinds stay."""
    if isinstance(status, str):
        return status if status in ORGA_ERROR_KINDS else OTHER
    if status in (400, 401, 403, 404, 409, 422, 429):
        return str(status)
    return f"{status // 100}xx" if 100 <= status <= 599 else OTHER


@dataclass(frozen=True, slots=True)
class ConversationStats:
    """One active call's figures, read at scrape time (and shown by GET /calls)."""

    audio_in_seconds: float = 0.0
    audio_out_seconds: float = 0.0
    packets_in: int = 0
    packets_out: int = 0
    packets_lost: int = 0
    jitter_seconds: float = 0.0
    turns: int = 0
    last_turn_latency_seconds: float | None = None


StatsSource = Callable[[], ConversationStats]


class _Conversations(Collector):
    """Per-conversation series, built at scrape time from the registered calls' stats."""

    _SPECS = (  # (suffix, kind, help, field)
        ("conversation_audio_in_seconds", "counter", "Caller audio received", "audio_in_seconds"),
        ("conversation_audio_out_seconds", "counter", "AI audio sent to the caller",
         "audio_out_seconds"),
        ("conversation_packets_in", "counter", "RTP packets received", "packets_in"),
        ("conversation_packets_out", "counter", "RTP packets sent", "packets_out"),
        ("conversation_packets_lost", "counter", "RTP packets lost from the caller",
         "packets_lost"),
        ("conversation_jitter_seconds", "gauge", "Interarrival jitter of caller RTP",
         "jitter_seconds"),
        ("conversation_turns", "counter", "Caller turns answered by the AI", "turns"),
        ("conversation_last_turn_latency_seconds", "gauge",
         "Caller stopped speaking to first AI audio, last turn", "last_turn_latency_seconds"),
    )

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()  # scrapes may run in a thread (prometheus_client server)
        self._sources: dict[str, tuple[str, StatsSource]] = {}

    def add(self, conversation_id: str, route: str, stats: StatsSource) -> bool:
        with self._lock:
            if conversation_id not in self._sources and len(self._sources) >= self.limit:
                return False
            self._sources[conversation_id] = (route, stats)
            return True

    def remove(self, conversation_id: str) -> None:
        with self._lock:
            self._sources.pop(conversation_id, None)

    def snapshot(self) -> list[tuple[str, str, ConversationStats]]:
        with self._lock:
            items = list(self._sources.items())
        out = []
        for cid, (route, stats) in items:
            try:
                out.append((cid, route, stats()))
            except Exception:  # one broken call must not break the scrape for the others
                log.exception("stats of conversation %s failed", cid)
        return out

    def _families(self) -> list[CounterMetricFamily | GaugeMetricFamily]:
        fams: list[CounterMetricFamily | GaugeMetricFamily] = []
        for suffix, kind, help_text, _ in self._SPECS:
            labels = ["conversation_id", "route"]
            name = f"{PREFIX}_{suffix}"
            fams.append(CounterMetricFamily(name, help_text, labels=labels) if kind == "counter"
                        else GaugeMetricFamily(name, help_text, labels=labels))
        return fams

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        fams = self._families()
        for cid, route, stats in self.snapshot():
            for fam, (_, _, _, attr) in zip(fams, self._SPECS, strict=True):
                value = getattr(stats, attr)
                if value is not None:
                    fam.add_metric([cid, route], float(value))
        return fams


class Metrics:
    """All gateway metrics, on an explicit registry (a fresh one unless given)."""

    def __init__(self, registry: CollectorRegistry | None = None, *,
                 max_conversations: int = 10000) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(f"{PREFIX}_{name}", doc, labels, registry=r)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(f"{PREFIX}_{name}", doc, labels, registry=r)

        def histogram(name: str, doc: str, buckets: tuple[float, ...],
                      labels: tuple[str, ...] = ()) -> Histogram:
            return Histogram(f"{PREFIX}_{name}", doc, labels, buckets=buckets, registry=r)

        self._build = gauge("build_info", "Build information (value 1)",
                            ("version", "python"))
        self._build.labels(__version__, platform.python_version()).set(1)
        self._sip_requests = counter("sip_requests", "SIP requests by method and direction",
                                     ("method", "direction"))
        self._sip_responses = counter("sip_responses", "SIP responses by method, status class "
                                      "and direction", ("method", "status_class", "direction"))
        self._calls_started = counter("calls_started", "Calls admitted", ("route", "trunk"))
        self._calls_ended = counter("calls_ended", "Calls ended, by result",
                                    ("result", "route", "trunk"))
        self._active = gauge("active_calls", "Calls in progress")
        self._setup = histogram("call_setup_seconds", "INVITE to 200 OK", SETUP_BUCKETS)
        self._setup_step = histogram("call_setup_step_seconds", "Each call setup step",
                                     STEP_BUCKETS, ("step",))
        self._duration = histogram("call_duration_seconds", "Answered call duration",
                                   DURATION_BUCKETS)
        self._orga_seconds = histogram("orga_request_seconds", "Orga API request time",
                                       STEP_BUCKETS, ("endpoint",))
        self._orga_errors = counter("orga_request_errors", "Failed Orga API requests",
                                    ("endpoint", "status"))
        self._rtp_packets = counter("rtp_packets", "RTP packets", ("direction",))
        self._rtp_bytes = counter("rtp_bytes", "RTP payload bytes", ("direction",))
        self._rtp_lost = counter("rtp_lost_packets", "RTP packets lost", ("direction",))
        self._rtp_late = counter("rtp_late_packets", "RTP packets too late to play",
                                 ("direction",))
        self._srtp_failures = counter("rtp_srtp_failures", "Caller SRTP packets dropped: failed "
                                      "authentication, replay check or parsing", ("reason",))
        self._jitter = histogram("rtp_jitter_seconds", "Caller RTP interarrival jitter",
                                 JITTER_BUCKETS)
        self._underruns = counter("playout_underruns", "Playout ran dry while AI audio was due")
        self._dropped = counter("playout_dropped_seconds", "Backlog audio dropped to bound delay")
        self._max_gap = histogram("playout_max_gap_seconds", "Per call, the longest interval "
                                  "between two RTP packets sent to the phone (the packet time "
                                  "when pacing keeps up)",
                                  (0.015, 0.025, 0.035, 0.045, 0.06, 0.1, 0.25, 1.0))
        # Labelled by how the digit came, never by the digit: with one call up, a per-digit
        # series would let anyone who scrapes /metrics read a caller's PIN.
        self._dtmf = counter("dtmf_digits", "DTMF digits received", ("source",))
        self._text = counter("conversation_text_events", "Transcript and assistant text events",
                             ("kind",))
        self._ports_free = gauge("rtp_ports_free", "Free RTP ports (even ports, one per call)")
        self._draining = gauge("draining", "1 while draining after SIGTERM")
        self._security = counter("security_rejections", "Requests refused at the edge",
                                 ("reason",))
        # Call control (issue 14): transfers by outcome and by who asked; tool calls by tool.
        self._transfers = counter("transfers", "Blind transfers (REFER) by result and requester",
                                  ("result", "requested_by"))
        self._tool_calls = counter("agent_tool_calls", "MCP tool calls by the agent, by tool and "
                                   "outcome", ("tool", "outcome"))
        self._turn = histogram("turn_latency_seconds", "Caller stops speaking to first AI audio "
                               "sent to the phone", TURN_BUCKETS)
        # Overload (issue 12): how late the loop's 50 ms ticker wakes, every tick.
        self._loop_lag = histogram("event_loop_lag_seconds", "How late the event loop runs a "
                                   "50 ms timer (overload protection watches its p90)",
                                   LOOP_LAG_BUCKETS)
        # Webhooks (issue 16): per event, not per receiver URL (URLs may carry secrets).
        self._webhook_events = counter("webhook_events", "Webhook events by outcome: delivered, "
                                       "failed (refused for good), spooled, dropped (spool full)",
                                       ("outcome",))
        self._webhook_retries = counter("webhook_retries", "Webhook attempts that failed and "
                                        "will be retried (5xx, 408, 429, timeout, network)")
        self._webhook_spool = gauge("webhook_spool_bytes", "Bytes of events waiting in the spool")
        self._recordings = counter("recordings", "Call recordings by result (written, failed)",
                                   ("result",))
        self._conversations = _Conversations(max_conversations)
        r.register(self._conversations)
        # Leak watch (issue 11 item 8): a call's tasks and native threads must end with it.
        self._loop_tasks = gauge("event_loop_tasks", "asyncio tasks pending on the event loop")
        self._threads = gauge("process_threads", "OS threads of the process (native included)")
        self._threads.set_function(lambda: float(_thread_count()))

    # --- SIP ----------------------------------------------------------------------------------
    def sip_request(self, method: str, direction: str = "in") -> None:
        self._sip_requests.labels(_label(method.upper(), SIP_METHODS),
                                  _label(direction, DIRECTIONS)).inc()

    def sip_response(self, method: str, status: int, direction: str = "out") -> None:
        self._sip_responses.labels(_label(method.upper(), SIP_METHODS), status_class(status),
                                   _label(direction, DIRECTIONS)).inc()

    # --- calls --------------------------------------------------------------------------------
    def call_started(self, route: str, trunk: str) -> None:
        """Route is the config's match pattern (`Route.label`), never the dialed number."""
        self._calls_started.labels(route, trunk).inc()

    def call_ended(self, result: str | Enum, route: str, trunk: str,
                   duration_s: float | None = None) -> None:
        """`result` from the call's fixed result table (an Enum or its value)."""
        text = result.value if isinstance(result, Enum) else result
        self._calls_ended.labels(str(text), route, trunk).inc()
        if duration_s is not None:
            self._duration.observe(duration_s)

    def set_active_calls(self, n: int) -> None:
        self._active.set(n)

    def call_setup(self, seconds: float) -> None:
        self._setup.observe(seconds)

    def setup_step(self, step: str | Enum, seconds: float) -> None:
        self._setup_step.labels(_label(step, SETUP_STEPS)).observe(seconds)

    # --- Orga API -----------------------------------------------------------------------------
    def orga_request(self, endpoint: str, seconds: float, error: int | str | None = None) -> None:
        """One request; `error` is the HTTP status or "timeout"/"network"/"protocol"."""
        ep = _label(endpoint, ORGA_ENDPOINTS)
        self._orga_seconds.labels(ep).observe(seconds)
        if error is not None:
            self._orga_errors.labels(ep, orga_status(error)).inc()

    # --- media --------------------------------------------------------------------------------
    def rtp(self, direction: str, packets: int, payload_bytes: int, lost: int = 0,
            late: int = 0) -> None:
        d = _label(direction, DIRECTIONS)
        self._rtp_packets.labels(d).inc(packets)
        self._rtp_bytes.labels(d).inc(payload_bytes)
        if lost:
            self._rtp_lost.labels(d).inc(lost)
        if late:
            self._rtp_late.labels(d).inc(late)

    def srtp_failure(self, reason: str) -> None:
        self._srtp_failures.labels(_label(reason, SRTP_FAILURES)).inc()

    def rtp_jitter(self, seconds: float) -> None:
        self._jitter.observe(seconds)

    def playout_underrun(self, n: int = 1) -> None:
        self._underruns.inc(n)

    def playout_dropped(self, seconds: float) -> None:
        self._dropped.inc(seconds)

    def playout_max_gap(self, seconds: float) -> None:
        self._max_gap.observe(seconds)

    def set_free_ports(self, n: int) -> None:
        self._ports_free.set(n)

    def free_ports_from(self, source: Callable[[], int]) -> None:
        """Read the free-port count at scrape time: ports come back from quarantine with no
        event to push the gauge (a pushed value stays one short after every call)."""
        self._ports_free.set_function(lambda: float(source()))

    def loop_tasks_from(self, loop: asyncio.AbstractEventLoop) -> None:
        """Count `loop`'s pending tasks at scrape time."""
        self._loop_tasks.set_function(lambda: float(len(asyncio.all_tasks(loop))))

    def dtmf(self, source: str) -> None:
        """One DTMF digit received; `source`: rfc4733 or sip_info (the digit itself is not a
        label — it is personal data)."""
        self._dtmf.labels(_label(source, DTMF_SOURCES)).inc()

    def text_event(self, kind: str) -> None:
        """`transcript` (caller speech) or `assistant` (AI text) from the data channel."""
        self._text.labels(_label(kind, TEXT_EVENT_KINDS)).inc()

    def turn_latency(self, seconds: float) -> None:
        self._turn.observe(seconds)

    def event_loop_lag(self, seconds: float) -> None:
        self._loop_lag.observe(seconds)

    # --- call control -------------------------------------------------------------------------
    def transfer(self, result: str | Enum, requested_by: str | Enum) -> None:
        """`result`: transferred, rejected, failed, timeout; `requested_by`: api, agent, dtmf,
        fallback (the gateway's own, see `fallback.transfer_after_loss`)."""
        self._transfers.labels(_label(result, TRANSFER_RESULTS),
                               _label(requested_by, ACTORS)).inc()

    def tool_call(self, tool: str, ok: bool) -> None:
        self._tool_calls.labels(_label(tool, TOOLS), "ok" if ok else "refused").inc()

    # --- daemon and security ------------------------------------------------------------------
    def set_draining(self, draining: bool) -> None:
        self._draining.set(1 if draining else 0)

    def security_rejection(self, reason: str | Enum, n: int = 1) -> None:
        if n > 0:
            self._security.labels(_label(reason, SECURITY_REASONS)).inc(n)

    # --- records, webhooks, recordings (issue 16) ----------------------------------------------
    def webhook_event(self, outcome: str, n: int = 1) -> None:
        self._webhook_events.labels(_label(outcome, WEBHOOK_OUTCOMES)).inc(n)

    def webhook_retry(self) -> None:
        self._webhook_retries.inc()

    def webhook_spool_from(self, source: Callable[[], int]) -> None:
        self._webhook_spool.set_function(lambda: float(source()))

    def recording(self, result: str) -> None:
        self._recordings.labels(_label(result, frozenset({"written", "failed"}))).inc()

    # --- per conversation ---------------------------------------------------------------------
    def add_conversation(self, conversation_id: str, route: str, stats: StatsSource) -> bool:
        """Export `stats()` under this conversation until removed; False when at the limit."""
        added = self._conversations.add(conversation_id, route, stats)
        if not added:
            log.warning("per-conversation metrics limit %d reached; %s not exported",
                        self._conversations.limit, conversation_id)
        return added

    def remove_conversation(self, conversation_id: str) -> None:
        self._conversations.remove(conversation_id)

    def conversations(self) -> list[dict[str, object]]:
        """The active conversations and their figures as JSON-ready dicts (for GET /calls)."""
        return [{"conversation_id": cid, "route": route, **asdict(stats)}
                for cid, route, stats in self._conversations.snapshot()]

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


def iter_sample_names(metrics: Metrics) -> Iterator[str]:
    """Every sample name currently exported (tests, README metrics reference)."""
    for family in metrics.registry.collect():
        for sample in family.samples:
            yield sample.name

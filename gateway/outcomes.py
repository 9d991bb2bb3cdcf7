"""Why a call ended: the one table from every way a call ends to its SIP answer and metric result.

`Outcome` is the single type for it. A call that ends before 200 OK gets the member's final
response (status, reason phrase, Retry-After, Warning); an answered call ends with a BYE, so
only its `result` matters. The `result` is the label of `orga_gateway_calls_ended_total` and
the word in the call's log line. Refusals of a re-INVITE offer (the call goes on) are
`OfferRefusal`s of the same shape.

Errors classify themselves (livekit/sip `errors.go` style): an exception raised at a boundary
(SDP, the port pool, the Orga client) carries an `outcome` class attribute, and an SDP error
its RFC 3261 Warning (`sip_warning`). `classify` reads them; this module imports nothing of
the gateway, so every layer may name an outcome. `response_headers` is the one place that
builds the headers of a refusal.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Disposition:
    """What one outcome means on the wire and in the metrics."""

    result: str  # metric label; unique per outcome
    status: int | None = None  # final response when the call ends before 200 OK
    reason: str | None = None  # SIP reason phrase; None = the standard one
    retry_after_s: int | None = None
    warning: tuple[int, str] | None = None  # RFC 3261 §20.43 warn-code and text, agent "-"
    log_level: int = logging.WARNING


class Outcome(enum.Enum):
    """Every way a call ends. Before the answer: a final response; after it: a BYE."""

    # Refused at admission (gateway/calls.py)
    NO_ROUTE = Disposition("no_route", 404, log_level=logging.INFO)
    CAPACITY = Disposition("capacity", 503, "At Capacity", retry_after_s=30)
    TRUNK_CAPACITY = Disposition("trunk_capacity", 503, "Trunk At Capacity", retry_after_s=30)
    DRAINING = Disposition("draining", 503, "Draining", retry_after_s=60, log_level=logging.INFO)
    # The worker's event loop or CPU is at its limit (gateway/overload.py): calls in progress
    # keep their audio; a balancer tries another worker, a trunk retries after 5 s.
    OVERLOADED = Disposition("overloaded", 503, "Overloaded", retry_after_s=5)
    # Failed during setup (gateway/call.py; the boundary errors carry these)
    NO_CODEC = Disposition("no_codec", 488)
    BAD_OFFER = Disposition("bad_offer", 488)
    NO_PORT = Disposition("no_port", 503, "No Media Port", retry_after_s=10,
                          log_level=logging.ERROR)
    ORGA_AUTH = Disposition("orga_auth", 503, "AI Service Unavailable", retry_after_s=60,
                            log_level=logging.ERROR)
    ORGA_INVALID = Disposition("orga_invalid", 500, "AI Session Rejected", log_level=logging.ERROR)
    ORGA_UNAVAILABLE = Disposition("orga_unavailable", 503, "AI Service Unavailable",
                                   retry_after_s=10)
    SETUP_TIMEOUT = Disposition("setup_timeout", 504, "AI Setup Timeout")
    CANCELLED = Disposition("cancelled", 487, log_level=logging.INFO)
    # Orga could not take the call and the route sends it to a person instead (a 302 whose
    # Contact is the route's transfer target; gateway/fallback.py)
    ORGA_FALLBACK = Disposition("orga_fallback", 302, "Moved Temporarily")
    # Ended after the answer
    CALLER_BYE = Disposition("caller_bye")
    ORGA_ENDED = Disposition("orga_ended")
    ORGA_LOST = Disposition("orga_lost")  # the Orga leg broke (no media, ICE failed)
    RTP_TIMEOUT = Disposition("rtp_timeout")
    MAX_DURATION = Disposition("max_duration")
    NO_ACK = Disposition("no_ack")
    SESSION_EXPIRED = Disposition("session_expired")
    DRAINED = Disposition("drained")
    SHUTDOWN = Disposition("shutdown")
    SIP_ERROR = Disposition("sip_error")
    # Either: a bug (500 before the answer, BYE after it)
    INTERNAL = Disposition("internal_error", 500, log_level=logging.ERROR)

    @property
    def disposition(self) -> Disposition:
        value: Disposition = self.value
        return value

    @property
    def result(self) -> str:
        return self.disposition.result


class OfferRefusal(enum.Enum):
    """A re-INVITE or UPDATE offer we refuse; the call goes on with the media it had."""

    PENDING = Disposition("offer_pending", 491)  # RFC 3261 §14.2: an offer of ours is pending
    REQUIRED = Disposition("offer_required", 488, warning=(399, "offer required"))
    NOT_ACCEPTABLE = Disposition("bad_offer", 488)  # the error's own Warning goes with it

    @property
    def disposition(self) -> Disposition:
        value: Disposition = self.value
        return value


def classify(exc: BaseException) -> Outcome:
    """The outcome of a setup failure: the error's own, `SETUP_TIMEOUT` for the setup budget
    (`asyncio.timeout` raises a plain TimeoutError), `INTERNAL` for anything else (a bug)."""
    outcome = getattr(exc, "outcome", None)
    if isinstance(outcome, Outcome):
        return outcome
    if isinstance(exc, TimeoutError):
        return Outcome.SETUP_TIMEOUT
    return Outcome.INTERNAL


def sip_warning(exc: BaseException | None) -> tuple[int, str] | None:
    """The RFC 3261 Warning (code, text) an error carries for its response, if any."""
    warning = getattr(exc, "sip_warning", None)
    return warning if isinstance(warning, tuple) else None


def response_headers(disposition: Disposition, *, agent: str = "-",
                     warning: tuple[int, str] | None = None) -> list[tuple[str, str]]:
    """The headers of a refusal: Retry-After when the outcome has one, and a Warning — the
    failure's own (`warning`, with our host as warn-agent) or the outcome's (agent "-")."""
    headers: list[tuple[str, str]] = []
    if disposition.retry_after_s is not None:
        headers.append(("Retry-After", str(disposition.retry_after_s)))
    if warning is None and disposition.warning is not None:
        warning, agent = disposition.warning, "-"
    if warning is not None:
        code, text = warning
        headers.append(("Warning", f'{code} {agent} "{text}"'))
    return headers

"""How a call ends: the one table from failure kind to SIP response and metric result.

Every way a call can fail before it is answered is an `Outcome` with its SIP status, reason,
optional Retry-After and the `result` label of `orga_gateway_calls_ended_total`; every way an
answered call can end is an `EndCause`. `classify_setup_error` maps the exceptions raised at
the Orga, SDP and port-pool boundaries onto the table, so `Call` has one teardown path.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from gateway.media.ports import PortsExhausted
from gateway.orga.errors import (
    OrgaAuthError,
    OrgaError,
    OrgaTimeoutError,
    OrgaUnavailableError,
    OrgaValidationError,
)
from gateway.sdp import NoCommonCodec, SdpNegotiationError


@dataclass(frozen=True, slots=True)
class Rejection:
    status: int
    result: str
    reason: str | None = None  # SIP reason phrase; None = the standard one
    retry_after_s: int | None = None
    log_level: int = logging.WARNING


class Outcome(enum.Enum):
    """Calls that never got a 200 OK. Values are the metric `result` label."""

    NO_ROUTE = Rejection(404, "no_route", log_level=logging.INFO)
    CAPACITY = Rejection(503, "capacity", "At Capacity", retry_after_s=30)
    TRUNK_CAPACITY = Rejection(503, "trunk_capacity", "Trunk At Capacity", retry_after_s=30)
    DRAINING = Rejection(503, "draining", "Draining", retry_after_s=60, log_level=logging.INFO)
    NO_CODEC = Rejection(488, "no_codec")
    BAD_OFFER = Rejection(488, "bad_offer")
    NO_PORT = Rejection(503, "no_port", "No Media Port", retry_after_s=10, log_level=logging.ERROR)
    ORGA_AUTH = Rejection(503, "orga_auth", "AI Service Unavailable", retry_after_s=60,
                          log_level=logging.ERROR)
    ORGA_INVALID = Rejection(500, "orga_invalid", "AI Session Rejected", log_level=logging.ERROR)
    ORGA_UNAVAILABLE = Rejection(503, "orga_unavailable", "AI Service Unavailable",
                                 retry_after_s=10)
    SETUP_TIMEOUT = Rejection(504, "setup_timeout", "AI Setup Timeout")
    CANCELLED = Rejection(487, "cancelled", log_level=logging.INFO)
    # Asked to end before the answer (operator API, agent tool): the callee side declines.
    API_HANGUP = Rejection(603, "api_hangup", log_level=logging.INFO)
    AGENT_HANGUP = Rejection(603, "agent_hangup", log_level=logging.INFO)
    INTERNAL = Rejection(500, "internal_error", log_level=logging.ERROR)

    @property
    def rejection(self) -> Rejection:
        value: Rejection = self.value
        return value


class EndCause(enum.Enum):
    """Why an answered call ended. Values are the metric `result` label."""

    CALLER_BYE = "caller_bye"
    ORGA_ENDED = "orga_ended"
    RTP_TIMEOUT = "rtp_timeout"
    MAX_DURATION = "max_duration"
    NO_ACK = "no_ack"
    SESSION_EXPIRED = "session_expired"
    DRAINED = "drained"
    SHUTDOWN = "shutdown"
    SIP_ERROR = "sip_error"
    INTERNAL = "internal_error"
    API_HANGUP = "api_hangup"  # POST /v1/calls/{id}/hangup
    AGENT_HANGUP = "agent_hangup"  # the agent's hang_up tool
    TRANSFERRED = "transferred"  # the transferee reported a 2xx for our REFER

    @property
    def before_answer(self) -> Outcome:
        """The outcome when this cause stops a call that is still being set up."""
        return _BEFORE_ANSWER.get(self, Outcome.DRAINING)


_BEFORE_ANSWER = {EndCause.API_HANGUP: Outcome.API_HANGUP,
                  EndCause.AGENT_HANGUP: Outcome.AGENT_HANGUP}


def classify_setup_error(exc: BaseException) -> Outcome:
    """Map a boundary exception raised during setup onto the table."""
    if isinstance(exc, NoCommonCodec):
        return Outcome.NO_CODEC
    if isinstance(exc, SdpNegotiationError):
        return Outcome.BAD_OFFER
    if isinstance(exc, PortsExhausted):
        return Outcome.NO_PORT
    if isinstance(exc, OrgaAuthError):
        return Outcome.ORGA_AUTH
    if isinstance(exc, OrgaValidationError):
        return Outcome.ORGA_INVALID
    if isinstance(exc, OrgaTimeoutError | TimeoutError):
        return Outcome.SETUP_TIMEOUT
    if isinstance(exc, OrgaUnavailableError | OrgaError):
        return Outcome.ORGA_UNAVAILABLE
    return Outcome.INTERNAL

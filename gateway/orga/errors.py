"""The one exception hierarchy for everything that can go wrong talking to Orga.

Foreign exceptions (httpx, JSON decoding, aiortc) are mapped to these types once, at the module
boundary that calls the foreign library (`api.py` for REST, `peer.py` for WebRTC). Each error
knows the endpoint and HTTP status (for metrics and logs), whether a retry can help, and a short
`reason` usable as a bounded metric label. No error ever carries the API key or an ephemeral
token: messages are built from fixed text plus what the server said, and `api.py` scrubs any
secret out of server text before it gets here.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.outcomes import Outcome


@dataclass(frozen=True, slots=True)
class ValidationIssue:
    """One entry of a FastAPI 422 `detail` list."""

    loc: tuple[str | int, ...]
    msg: str
    type: str | None = None

    def __str__(self) -> str:
        where = ".".join(str(part) for part in self.loc) or "?"
        return f"{where}: {self.msg}"


class OrgaError(Exception):
    """An Orga request or session failed.

    `endpoint` is a short fixed name ("client_secrets", "ice_config", "calls", "peer"), `status`
    the HTTP status when there was a response (None for timeouts, connection errors and WebRTC
    failures). `outcome` is how a call whose setup fails with this error ends (SIP status and
    metric result, `gateway/outcomes.py`); `reason` is the Orga request metric's label.
    """

    reason = "error"
    outcome = Outcome.ORGA_UNAVAILABLE

    def __init__(
        self, endpoint: str, status: int | None, message: str, *, retryable: bool = False
    ) -> None:
        self.endpoint = endpoint
        self.status = status
        self.message = message
        self.retryable = retryable
        super().__init__(str(self))

    def __str__(self) -> str:
        status = f" {self.status}" if self.status is not None else ""
        return f"orga {self.endpoint}{status}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(endpoint={self.endpoint!r}, status={self.status!r}, "
            f"message={self.message!r}, retryable={self.retryable!r})"
        )


class OrgaAuthError(OrgaError):
    """401/403: invalid, expired, consumed or missing API key or ephemeral token."""

    reason = "auth"
    outcome = Outcome.ORGA_AUTH


class OrgaValidationError(OrgaError):
    """422: the service rejected our request body or query (FastAPI `detail` list)."""

    reason = "validation"
    outcome = Outcome.ORGA_INVALID

    def __init__(
        self, endpoint: str, status: int | None, issues: list[ValidationIssue]
    ) -> None:
        self.issues = list(issues)
        message = "; ".join(str(issue) for issue in self.issues) or "validation failed"
        super().__init__(endpoint, status, message, retryable=False)


class OrgaRequestError(OrgaError):
    """Any other 4xx (400 malformed request, 404 unknown user in legacy email mode, ...).

    Permanent like a 422: asking again fails again, so the call gets 500 without the
    Retry-After that would invite the PBX to retry (it was 503 Retry-After 10)."""

    reason = "rejected"
    outcome = Outcome.ORGA_INVALID


class OrgaUnavailableError(OrgaError):
    """429, 5xx, timeouts and connection errors: the service may answer if asked again.

    `retry_after_s` is the server's `Retry-After` (429/503), when it sent one: the earliest
    time a retry is welcome.
    """

    reason = "unavailable"

    def __init__(
        self, endpoint: str, status: int | None, message: str,
        *, retry_after_s: float | None = None,
    ) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(endpoint, status, message, retryable=True)


class OrgaTimeoutError(OrgaUnavailableError):
    """A request, or the whole setup budget, ran out of time."""

    reason = "timeout"
    outcome = Outcome.SETUP_TIMEOUT


class OrgaProtocolError(OrgaError):
    """A 2xx response we cannot use (malformed JSON, missing fields), or a broken WebRTC answer."""

    reason = "protocol"


class OrgaIncompleteAnswer(OrgaProtocolError):
    """A /calls 2xx with an SDP answer but no `conversation_id`: Orga created a session we
    cannot use, but can still end (join it with `answer_sdp`, then close)."""

    def __init__(self, endpoint: str, status: int | None, message: str, answer_sdp: str) -> None:
        self.answer_sdp = answer_sdp
        super().__init__(endpoint, status, message)

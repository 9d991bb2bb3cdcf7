"""A blind transfer's progress (RFC 3515 REFER, transferor side), kept apart from any I/O.

We send REFER with `Refer-To: <target>` and `Referred-By` to the caller's side (the
transferee). Its answer and the NOTIFYs it sends (`message/sipfrag`, RFC 3420: the status line
of its INVITE to the target) move the transfer through these states:

    requested --REFER 2xx--> accepted --sipfrag 1xx--> trying
        |                        |  \\--sipfrag 2xx--> succeeded   (the call then ends: BYE)
        |                        \\-----sipfrag >=300 / no NOTIFY in time--> failed
        \\--REFER >=300 / timeout--> failed                          (the call goes on)

`sip_status` is the final status the transferee reported in its sipfrag, or the REFER's own
error status. The call asks `expired(now)` on its timer: the first NOTIFY must come within
`first_notify_s` of the 202 (RFC 3515 §2.4.4 makes it immediate), the final one within
`final_notify_s`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from gateway.control.actions import Actor

FIRST_NOTIFY_S = 10.0
FINAL_NOTIFY_S = 60.0
_STATUS_LINE = re.compile(r"^SIP/2\.0\s+(\d{3})(?:\s|$)")


class TransferState(enum.Enum):
    REQUESTED = "requested"
    ACCEPTED = "accepted"
    TRYING = "trying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class TransferResult(enum.Enum):
    """The `result` label of `transfers_total`."""

    TRANSFERRED = "transferred"
    REJECTED = "rejected"  # the REFER itself got a non-2xx
    FAILED = "failed"  # the transferee's call to the target failed (sipfrag >= 300)
    TIMEOUT = "timeout"  # no answer to the REFER, or no (final) NOTIFY in time


def parse_sipfrag(body: bytes) -> int | None:
    """The status code of a `message/sipfrag` body's status line, None if it has none."""
    first = body.decode("utf-8", "replace").lstrip().split("\n", 1)[0].strip()
    match = _STATUS_LINE.match(first)
    return int(match.group(1)) if match else None


@dataclass(slots=True)
class Transfer:
    target: str  # the name from the route's transfer_targets
    uri: str  # what it stands for (Refer-To)
    actor: Actor
    started_at: float
    state: TransferState = TransferState.REQUESTED
    sip_status: int | None = None
    result: TransferResult | None = None
    accepted_at: float | None = None
    notified: bool = False
    first_notify_s: float = FIRST_NOTIFY_S
    final_notify_s: float = FINAL_NOTIFY_S

    @property
    def finished(self) -> bool:
        return self.state in (TransferState.SUCCEEDED, TransferState.FAILED)

    def on_refer_response(self, status: int, now: float) -> None:
        if self.state is not TransferState.REQUESTED:
            return
        if 200 <= status < 300:
            self.state, self.accepted_at = TransferState.ACCEPTED, now
        elif status == 408:
            self._fail(TransferResult.TIMEOUT, status)
        else:
            self._fail(TransferResult.REJECTED, status)

    def on_notify(self, sipfrag: bytes, now: float) -> None:
        """One NOTIFY of the refer subscription (answered 200 by the SIP layer)."""
        if self.finished:
            return
        self.notified = True
        if self.state is TransferState.REQUESTED:  # NOTIFY overtook the 202 (allowed)
            self.state, self.accepted_at = TransferState.ACCEPTED, now
        status = parse_sipfrag(sipfrag)
        if status is None or status < 200:
            self.state = TransferState.TRYING
        elif status < 300:
            self.state, self.sip_status = TransferState.SUCCEEDED, status
            self.result = TransferResult.TRANSFERRED
        else:
            self._fail(TransferResult.FAILED, status)

    def expired(self, now: float) -> bool:
        """Fail the transfer if the transferee went quiet; True if it failed just now."""
        if self.finished or self.accepted_at is None:
            return False
        limit = self.final_notify_s if self.notified else self.first_notify_s
        if now - self.accepted_at < limit:
            return False
        self._fail(TransferResult.TIMEOUT, None)
        return True

    def describe(self) -> dict[str, object]:
        """`transfer` in `GET /v1/calls/{id}`."""
        return {"target": self.target, "state": self.state.value, "sip_status": self.sip_status,
                "requested_by": self.actor.value,
                "result": self.result.value if self.result else None}

    def outcome_text(self) -> str:
        """For the agent's tool result."""
        if self.state is TransferState.SUCCEEDED:
            return f"The caller was transferred to {self.target}; the call is ending."
        if self.result is TransferResult.REJECTED:
            return (f"The transfer to {self.target} was refused by the phone system "
                    f"(SIP {self.sip_status}); the caller is still with you.")
        if self.result is TransferResult.FAILED:
            return (f"{self.target} could not be reached (SIP {self.sip_status}); the caller "
                    "is still with you.")
        if self.result is TransferResult.TIMEOUT:
            return (f"The transfer to {self.target} got no answer in time; the caller is "
                    "still with you.")
        return f"The transfer to {self.target} is in progress."

    def _fail(self, result: TransferResult, status: int | None) -> None:
        self.state, self.result = TransferState.FAILED, result
        if status is not None:
            self.sip_status = status

"""What the control surfaces may ask of a call, and how a call says no.

The operator API, the agent's MCP tools and DTMF shortcuts never change a call themselves: they
find it through a `CallDirectory` and *ask* it (`request_hang_up`, `request_transfer`, ...).
The call decides against its own state and either accepts (the work then happens on the
call's own tasks) or raises `ActionRefused` with the HTTP status that explains why.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol


class Actor(enum.Enum):
    """Who asked; decides the `result` label when the request ends the call."""

    API = "api"
    AGENT = "agent"
    DTMF = "dtmf"
    FALLBACK = "fallback"  # the gateway itself: the route's on_orga_failure after the answer


class ActionRefused(Exception):
    """The call will not do this. `status`: 409 wrong state, 422 bad input, 404 unknown."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class OutboundRequest:
    """A validated `POST /v1/calls`."""

    to: str  # E.164 number or SIP URI
    trunk: str
    from_user: str | None = None
    instructions: str | None = None
    voice: str | None = None
    model: str | None = None
    temperature: float | None = None
    ring_timeout_s: float = 30.0


class ControlledCall(Protocol):
    @property
    def control_id(self) -> str: ...

    def info(self) -> Mapping[str, object]:
        """The call as the operator API shows it (no secrets, no audio)."""
        ...

    def request_hang_up(self, actor: Actor, reason: str | None = None) -> None: ...

    def request_transfer(self, target: str, actor: Actor) -> object: ...


class CallDirectory(Protocol):
    def controlled_calls(self) -> Iterable[ControlledCall]: ...

    def controlled_call(self, control_id: str) -> ControlledCall | None: ...

    def place_call(self, request: OutboundRequest) -> ControlledCall:
        """Start an outbound call (raises ActionRefused)."""
        ...

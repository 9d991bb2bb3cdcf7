"""Frozen settings for the Orga client, and the session parameters of one call.

The dataclasses are kept apart from the config so the Orga client, the emulator and the tests
can build them directly; `session_params` is where a call's route and the `[orga]` section
become the `params` of POST /calls, with the instructions template rendered for that call.
Defaults follow the official SDK (reference §9): voice "Sofía", model
"orga-1-beta", temperature 0.5, 10 s per request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.config.schema import PLACEHOLDER_RE

if TYPE_CHECKING:
    from gateway.config.schema import OrgaConfig, Route



@dataclass(frozen=True, slots=True)
class OrgaClientSettings:
    """Where and how to reach the Orga REST API. The key never appears in a repr."""

    base_url: str
    api_key: str = field(repr=False)
    email: str | None = None  # legacy `?email=` on client-secrets, sent only when set
    request_timeout_s: float = 10.0
    setup_timeout_s: float = 15.0


@dataclass(frozen=True, slots=True)
class SessionParams:
    """The `params` object of POST /calls, always sent complete (reference §12.1)."""

    voice: str = "Sofía"
    model: str = "orga-1-beta"
    temperature: float = 0.5
    return_transcription: bool = False
    instructions: str | None = None
    modalities: tuple[str, ...] = ("audio",)
    history: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "voice": self.voice,
            "model": self.model,
            "temperature": self.temperature,
            "return_transcription": self.return_transcription,
            "instructions": self.instructions,
            "modalities": list(self.modalities),
            "history": self.history,
        }


@dataclass(frozen=True, slots=True)
class PeerSettings:
    """WebRTC layout and ICE choices for the per-call peer connection.

    `ice_addresses`: the local addresses ICE gathers host candidates on. None means aioice's own
    choice (every non-loopback address); tests and the demo set ("127.0.0.1",).
    `media_timeout_s`: a connected session from which no RTP has arrived for this long is
    lost (0 turns the check off; see `peer.py`).
    """

    video_mline: bool = True
    ice_addresses: tuple[str, ...] | None = None
    disconnected_grace_s: float = 5.0
    media_timeout_s: float = 2.0


# Caller, callee and Call-ID come from SIP headers the caller controls (caller IDs can be
# spoofed): what reaches the model's instructions must not be able to carry words. A number
# keeps only digits and + * #; a Call-ID (an opaque token) its token characters.
_NOT_NUMBER_RE = re.compile(r"[^0-9+*#]")
_NOT_TOKEN_RE = re.compile(r"[^0-9A-Za-z.@-]")


def render_instructions(template: str, *, caller: str, callee: str, call_id: str) -> str:
    """Replace {caller} {callee} {call_id}; any other text, braces included, is left as is."""
    values = {"caller": _NOT_NUMBER_RE.sub("", caller)[:32],
              "callee": _NOT_NUMBER_RE.sub("", callee)[:32],
              "call_id": _NOT_TOKEN_RE.sub("", call_id)[:64]}

    def repl(m: re.Match[str]) -> str:
        return values.get(m.group(1), m.group(0))

    return PLACEHOLDER_RE.sub(repl, template)


def session_params(orga: OrgaConfig, route: Route, *, caller: str, callee: str,
                   call_id: str) -> SessionParams:
    """The Orga `params` for one call: the route's overrides over `[orga]`, placeholders filled.

    A route's `instructions = ""` means Orga's default (null), not the `[orga]` text.
    """
    instructions = route.instructions if route.instructions is not None else orga.instructions
    return SessionParams(
        model=route.model if route.model is not None else orga.model,
        voice=route.voice if route.voice is not None else orga.voice,
        temperature=route.temperature if route.temperature is not None else orga.temperature,
        instructions=(render_instructions(instructions, caller=caller, callee=callee,
                                          call_id=call_id) if instructions else None),
        return_transcription=(route.return_transcription
                              if route.return_transcription is not None
                              else orga.return_transcription),
        history=route.history if route.history is not None else orga.history,
    )

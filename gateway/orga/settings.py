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

MODELS: tuple[str, ...] = ("orga-1-beta",)
MODALITIES: tuple[str, ...] = ("audio", "video")
# Current voice ids from the SDK (OrgaVoices.ts), sent exactly as written (reference §9).
VOICES: tuple[str, ...] = (
    # Español
    "Sofía", "Juan", "Marta", "Emilio", "Clara", "Álvaro", "Lucía", "Ignacio", "Natalia",
    "Ricardo", "Teresa",
    # English
    "Victoria", "Ethan", "Chloe", "Harold", "Alex", "Hannah", "Valerie", "Max", "Adrian", "Emma",
    # Français
    "Julien", "Camille", "Chloé", "Aurélie", "Antoine", "Mathieu", "Bernard", "Élise", "Nadine",
    "Laurent",
    # Português
    "Bruno", "Mariana", "Carolina", "Joana", "André", "Rafael", "Gustavo", "Helena", "Henrique",
    # Italiano
    "Giada", "Marco", "Alessandro", "Matteo", "Davide", "Valentina", "Serena", "Roberto",
    "Lorenzo", "Paola",
)  # fmt: skip


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


# Caller and callee come from SIP headers the caller controls: only characters that a phone
# number or SIP user part needs reach the model's instructions (no prompt injection by From).
_UNSAFE_RE = re.compile(r"[^0-9A-Za-z+*#._@-]")


def render_instructions(template: str, *, caller: str, callee: str, call_id: str) -> str:
    """Replace {caller} {callee} {call_id}; any other text, braces included, is left as is."""
    values = {name: _UNSAFE_RE.sub("", value)[:64]
              for name, value in (("caller", caller), ("callee", callee), ("call_id", call_id))}

    def repl(m: re.Match[str]) -> str:
        return values.get(m.group(1), m.group(0))

    return PLACEHOLDER_RE.sub(repl, template)


def session_params(orga: OrgaConfig, route: Route, *, caller: str, callee: str,
                   call_id: str) -> SessionParams:
    """The Orga `params` for one call: the route's overrides over `[orga]`, placeholders filled."""
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

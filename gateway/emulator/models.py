"""Pydantic models of the POST /calls body: FastAPI turns their errors into the 422 `detail`.

The real service is a FastAPI app (reference §0: its 422 bodies are "the standard FastAPI
detail array"), so the emulator validates the same way instead of imitating the messages by
hand. `offer` and `params` are two separate body parameters, which is what makes a missing one
read `{"loc": ["body", "offer"], "msg": "Field required", "type": "missing", "input": null}`
exactly as the seed document shows.

Stricter than a bare schema, as the reference implies (§6, §11): the offer SDP must carry an
Opus audio m-line and the `webrtc-datachannel` application m-line, and every entry of
`offer.candidates` must name an m-line of that offer (`sdpMid` and/or `sdpMLineIndex`,
consistent with each other). Those checks are pydantic `value_error`s on `offer`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from gateway.orga.settings import SessionParams

_MLINE = re.compile(r"^m=(\w+) \d+ (\S+)", re.M)


class Candidate(BaseModel):
    model_config = ConfigDict(extra="allow")

    candidate: str
    sdpMid: str | None = None
    sdpMLineIndex: int | None = Field(default=None, ge=0)


def sdp_sections(sdp: str) -> list[tuple[str, str | None, str]]:
    """(media, mid, section text) of each m-line of an SDP, in order."""
    starts = [m.start() for m in _MLINE.finditer(sdp)]
    sections = []
    for i, start in enumerate(starts):
        text = sdp[start : starts[i + 1] if i + 1 < len(starts) else len(sdp)]
        mid = re.search(r"^a=mid:(\S+)", text, re.M)
        sections.append((text[2:].split(" ", 1)[0], mid.group(1) if mid else None, text))
    return sections


class OfferBody(BaseModel):
    sdp: str
    type: Literal["offer"]
    candidates: list[Candidate]

    @model_validator(mode="after")
    def _matches_the_sdk_layout(self) -> OfferBody:
        sections = sdp_sections(self.sdp)
        if not any(media == "audio" and re.search(r"^a=rtpmap:\d+ opus/48000", text, re.M | re.I)
                   for media, _, text in sections):
            raise ValueError("offer has no Opus audio m-line")
        if not any(media == "application" and "webrtc-datachannel" in text
                   for media, _, text in sections):
            raise ValueError("offer has no data channel (m=application webrtc-datachannel)")
        mids = [mid for _, mid, _ in sections]
        for i, cand in enumerate(self.candidates):
            if cand.sdpMid is None and cand.sdpMLineIndex is None:
                raise ValueError(f"candidates[{i}] has neither sdpMid nor sdpMLineIndex")
            if cand.sdpMid is not None and cand.sdpMid not in mids:
                raise ValueError(f"candidates[{i}].sdpMid {cand.sdpMid!r} is not a mid of "
                                 "the offer")
            if cand.sdpMLineIndex is not None:
                if cand.sdpMLineIndex >= len(sections):
                    raise ValueError(f"candidates[{i}].sdpMLineIndex {cand.sdpMLineIndex} is "
                                     f"past the offer's {len(sections)} m-lines")
                if cand.sdpMid is not None and mids[cand.sdpMLineIndex] != cand.sdpMid:
                    raise ValueError(f"candidates[{i}]: sdpMid and sdpMLineIndex name "
                                     "different m-lines")
        return self


class McpServer(BaseModel):
    """`params.mcp_server` (reference §5, SDK commit 820a3e29): the MCP server Orga's cloud
    calls for tools. Kept for the session (an extension may act on it); its URL is a secret."""

    id: str
    url: str
    alias: str


def params_model(voices: tuple[str, ...], models: tuple[str, ...],
                 modalities: tuple[str, ...]) -> type[BaseModel]:
    """The `params` model for a set of accepted voices (legacy voices are a switch)."""
    voice_type: Any = Literal.__getitem__(voices)
    model_type: Any = Literal.__getitem__(models)
    modality_type: Any = Literal.__getitem__(modalities)
    return create_model(
        "Params",
        voice=(voice_type | None, None),
        model=(model_type | None, None),
        temperature=(float | None, Field(default=None, ge=0.0, le=1.0)),
        return_transcription=(bool | None, None),
        instructions=(str | None, None),
        modalities=(list[modality_type] | None, None),
        history=(bool | None, None),
        mcp_server=(McpServer | None, None),
    )


def mcp_server(params: BaseModel | None) -> dict[str, str] | None:
    """The `params.mcp_server` object as sent, if any."""
    server = getattr(params, "mcp_server", None)
    return server.model_dump() if isinstance(server, McpServer) else None


def session_params(params: BaseModel | None) -> SessionParams:
    """Effective session values: what was sent, the service's defaults for the rest."""
    if params is None:
        return SessionParams(modalities=("audio", "video"))
    sent = {k: v for k, v in params.model_dump(exclude={"mcp_server"}).items() if v is not None}
    if "modalities" in sent:
        sent["modalities"] = tuple(sent["modalities"])
    sent.setdefault("modalities", ("audio", "video"))
    return SessionParams(**sent)

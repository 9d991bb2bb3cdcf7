"""Validation of the POST /calls body, with FastAPI/Pydantic-v2-style 422 `detail` entries.

Mirrors what a Pydantic model of the seed document would report (reference §4, §11): `offer`
(sdp, type "offer", candidates list) and `params` required (strict mode), `model` one of the
models, `voice` one of the SDK voices, `0 <= temperature <= 1`, `modalities` within
{audio, video}. Entries use the key order of the seed's examples (`loc`, `msg`, `type`,
`input`); `input` is null for missing fields, as there. All errors are collected, not just the
first, as Pydantic does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.orga.settings import MODALITIES, MODELS, VOICES, SessionParams

Detail = dict[str, Any]


def _err(loc: list[str | int], msg: str, kind: str, value: Any, **ctx: Any) -> Detail:
    entry: Detail = {"loc": loc, "msg": msg, "type": kind, "input": value}
    if ctx:
        entry["ctx"] = ctx
    return entry


def missing(loc: list[str | int]) -> Detail:
    return _err(loc, "Field required", "missing", None)


def _expected(options: tuple[str, ...]) -> str:
    """Pydantic's wording for a Literal: 'a', 'b' or 'c'."""
    quoted = [f"'{o}'" for o in options]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def _literal(loc: list[str | int], options: tuple[str, ...], value: Any) -> Detail:
    expected = _expected(options)
    return _err(loc, f"Input should be {expected}", "literal_error", value, expected=expected)


def json_invalid(error: str) -> Detail:
    return {"loc": ["body", 0], "msg": "JSON decode error", "type": "json_invalid",
            "input": {}, "ctx": {"error": error}}


@dataclass(frozen=True, slots=True)
class CallRequest:
    offer_sdp: str
    candidates: list[dict[str, Any]]
    params: SessionParams


def _string(value: Any, loc: list[str | int], errors: list[Detail]) -> str | None:
    if not isinstance(value, str):
        errors.append(_err(loc, "Input should be a valid string", "string_type", value))
        return None
    return value


def _bool(value: Any, loc: list[str | int], errors: list[Detail]) -> bool | None:
    if not isinstance(value, bool):
        errors.append(_err(loc, "Input should be a valid boolean", "bool_type", value))
        return None
    return value


def validate_call(
    body: Any, *, voices: tuple[str, ...] = VOICES, params_required: bool = True
) -> tuple[CallRequest | None, list[Detail]]:
    errors: list[Detail] = []
    if not isinstance(body, dict):
        return None, [_err(["body"], "Input should be a valid dictionary or object to extract "
                           "fields from", "model_attributes_type", body)]
    offer = body.get("offer")
    sdp: str | None = None
    candidates: list[dict[str, Any]] = []
    if "offer" not in body:
        errors.append(missing(["body", "offer"]))
    elif not isinstance(offer, dict):
        errors.append(_err(["body", "offer"], "Input should be a valid dictionary or object to "
                           "extract fields from", "model_attributes_type", offer))
    else:
        if "sdp" not in offer:
            errors.append(missing(["body", "offer", "sdp"]))
        else:
            sdp = _string(offer["sdp"], ["body", "offer", "sdp"], errors)
        if "type" not in offer:
            errors.append(missing(["body", "offer", "type"]))
        elif offer["type"] != "offer":
            errors.append(_literal(["body", "offer", "type"], ("offer",), offer["type"]))
        if "candidates" not in offer:
            errors.append(missing(["body", "offer", "candidates"]))
        elif not isinstance(offer["candidates"], list):
            errors.append(_err(["body", "offer", "candidates"], "Input should be a valid list",
                               "list_type", offer["candidates"]))
        else:
            for i, cand in enumerate(offer["candidates"]):
                loc: list[str | int] = ["body", "offer", "candidates", i]
                if not isinstance(cand, dict):
                    errors.append(_err(loc, "Input should be a valid dictionary or object to "
                                       "extract fields from", "model_attributes_type", cand))
                elif "candidate" not in cand:
                    errors.append(missing([*loc, "candidate"]))
                else:
                    _string(cand["candidate"], [*loc, "candidate"], errors)
                    candidates.append(cand)

    params = _validate_params(body, voices, params_required, errors)
    if errors or sdp is None or params is None:
        return None, errors
    return CallRequest(offer_sdp=sdp, candidates=candidates, params=params), []


def _validate_params(
    body: dict[str, Any], voices: tuple[str, ...], required: bool, errors: list[Detail]
) -> SessionParams | None:
    if "params" not in body:
        if required:
            errors.append(missing(["body", "params"]))
            return None
        return SessionParams(modalities=("audio", "video"))
    raw = body["params"]
    if not isinstance(raw, dict):
        errors.append(_err(["body", "params"], "Input should be a valid dictionary or object to "
                           "extract fields from", "model_attributes_type", raw))
        return None
    base = ["body", "params"]
    values: dict[str, Any] = {}
    before = len(errors)
    if "model" in raw and raw["model"] not in MODELS:
        errors.append(_literal([*base, "model"], MODELS, raw["model"]))
    elif "model" in raw:
        values["model"] = raw["model"]
    if "voice" in raw and raw["voice"] not in voices:
        errors.append(_literal([*base, "voice"], voices, raw["voice"]))
    elif "voice" in raw:
        values["voice"] = raw["voice"]
    if "temperature" in raw:
        temp = raw["temperature"]
        if isinstance(temp, bool) or not isinstance(temp, int | float):
            errors.append(_err([*base, "temperature"], "Input should be a valid number",
                               "float_type", temp))
        elif temp < 0:
            errors.append(_err([*base, "temperature"], "Input should be greater than or equal "
                               "to 0", "greater_than_equal", temp, ge=0.0))
        elif temp > 1:
            errors.append(_err([*base, "temperature"], "Input should be less than or equal to "
                               "1", "less_than_equal", temp, le=1.0))
        else:
            values["temperature"] = float(temp)
    for key in ("return_transcription", "history"):
        if key in raw:
            flag = _bool(raw[key], [*base, key], errors)
            if flag is not None:
                values[key] = flag
    if "instructions" in raw and raw["instructions"] is not None:
        text = _string(raw["instructions"], [*base, "instructions"], errors)
        if text is not None:
            values["instructions"] = text
    if "modalities" in raw:
        mods = raw["modalities"]
        if not isinstance(mods, list):
            errors.append(_err([*base, "modalities"], "Input should be a valid list",
                               "list_type", mods))
        else:
            for i, mod in enumerate(mods):
                if mod not in MODALITIES:
                    errors.append(_literal([*base, "modalities", i], MODALITIES, mod))
            values["modalities"] = tuple(m for m in mods if m in MODALITIES)
    if len(errors) != before:
        return None
    values.setdefault("modalities", ("audio", "video"))
    return SessionParams(**values)

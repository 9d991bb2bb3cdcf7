"""The generic part of config checking: one table against one dataclass, one field's checks.

`typed_table` type-checks a TOML table against a config dataclass from its annotations (unknown
keys with a did-you-mean, secrets refused); `check_value` applies what a field declared with
`schema.setting(...)` (range, IP address, instruction template, choices). `Problems` collects
every problem as `key: problem — fix`. Used by `rules.py` (sections) and `load.py` (trunks,
routes); knows no particular key.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import fields
from typing import Any, Union
from urllib.parse import urlsplit

from gateway.config.schema import PLACEHOLDER_RE, PLACEHOLDERS, Check, check_of

API_KEY_ENV = "ORGA_API_KEY"
API_KEY_FILE_ENV = "ORGA_API_KEY_FILE"
MISSING = object()  # a value of the wrong type
_SECRET_NAME = re.compile(r"(?i)(^key$|api_?key$|password$|secret$|token$)")


class Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, key: str, problem: str, fix: str) -> None:
        self.items.append(f"{key}: {problem} — {fix}")


def field_hints(cls: type) -> dict[str, Any]:
    """Resolved annotations of a config dataclass, for the generic type checks."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def hint_allows_none(hint: Any) -> bool:
    return typing.get_origin(hint) in (Union, types.UnionType) and type(None) in typing.get_args(
        hint)


def unknown_key(problems: Problems, key: str, name: str, known: Iterable[str]) -> None:
    known = list(known)
    close = difflib.get_close_matches(name, known, n=1)
    fix = f"did you mean {close[0]!r}?" if close else "remove it (known keys: " + ", ".join(
        known) + ")"
    problems.add(key, "unknown key", fix)


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def coerce(value: Any, hint: Any) -> Any:
    """The value converted to the field's type, or `MISSING` when it has the wrong type."""
    if hint_allows_none(hint):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        if inner is str and value == "":
            return None  # TOML has no null: an empty string means "not set"
        return coerce(value, inner)
    if typing.get_origin(hint) is tuple:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        return MISSING
    if hint is bool:
        return value if isinstance(value, bool) else MISSING
    if hint is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else MISSING
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        return MISSING
    if hint is str:
        return value if isinstance(value, str) else MISSING
    raise TypeError(hint)


def type_name(hint: Any) -> str:
    if hint_allows_none(hint):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return type_name(inner)
    if typing.get_origin(hint) is tuple:
        return "a list of strings"
    return _TYPE_NAMES[hint]


def typed_table(problems: Problems, prefix: str, table: Any, cls: type,
                 names: Iterable[str] | None = None) -> dict[str, Any]:
    """Type-check one table against a dataclass (or only the fields `names`); returns only the
    well-typed values. Unknown keys are reported unless `names` is given (the caller knows)."""
    if not isinstance(table, dict):
        problems.add(prefix, "must be a table", f"write it as [{prefix}] with key = value lines")
        return {}
    hints = field_hints(cls)
    if names is not None:
        hints = {name: hints[name] for name in names}
    out: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{prefix}.{name}"
        if name not in hints:
            if names is not None:
                continue
            if _SECRET_NAME.search(name):
                problems.add(key, "secrets are never read from the config file",
                             f"remove it; the Orga API key comes from {API_KEY_ENV} or "
                             f"{API_KEY_FILE_ENV}, trunk passwords from password_env/password_file")
            else:
                unknown_key(problems, key, name, hints)
            continue
        converted = coerce(value, hints[name])
        if converted is MISSING:
            problems.add(key, f"{value!r} is not {type_name(hints[name])}",
                         f"write {type_name(hints[name])}")
        else:
            out[name] = converted
    return out


def check_value(p: Problems, key: str, value: Any, check: Check | None) -> None:
    """The checks a field declared with `setting(...)`; unset values (None) pass."""
    if check is None or value is None:
        return
    if check.ip:
        for item in value if isinstance(value, tuple) else (value,):
            check_ip(p, key, item)
    if check.template:
        check_placeholders(p, key, value)
    if check.lo is not None and check.hi is not None:
        check_range(p, key, value, check.lo, check.hi, check.unit)
    if check.choices and value not in check.choices:
        p.add(key, f"{value!r} is not a choice",
              "use " + " or ".join(f'"{c}"' for c in check.choices))


def in_range(obj: Any, name: str) -> bool:
    check = check_of(type(obj), name)
    assert check is not None and check.lo is not None and check.hi is not None
    return bool(check.lo <= getattr(obj, name) <= check.hi)


def check_range(problems: Problems, key: str, value: float, lo: float, hi: float, unit: str = ""
           ) -> bool:
    if lo <= value <= hi:
        return True
    problems.add(key, f"{value}{unit} is out of range", f"use a value from {lo} to {hi}{unit}")
    return False


def check_ip(problems: Problems, key: str, value: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        problems.add(key, f"{value!r} is not an IP address",
                     "use a literal IPv4/IPv6 address such as 127.0.0.1 or 0.0.0.0")


def check_placeholders(p: Problems, key: str, text: str | None) -> None:
    for name in PLACEHOLDER_RE.findall(text or ""):
        if name not in PLACEHOLDERS:
            p.add(key, f"unknown placeholder {{{name}}}",
                  "use {caller}, {callee} or {call_id}")


def url_host(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

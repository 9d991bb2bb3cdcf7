"""Shared SIP header grammar (RFC 3261 §25.1): tokens, quoted strings and their escapes,
splitting at separators outside quotes and `<...>`, and generic header parameters.

Only ASCII counts as SIP whitespace, digits and token characters here: Python's `str.strip`,
`str.isdigit` and `str.split` also accept Unicode look-alikes, which a hostile peer could use to
make two elements read one value differently.
"""

from __future__ import annotations

import re

from gateway.sip.errors import ParseError
from gateway.sip.uri import Param, is_ipv6_address, parse_host_port

_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_DIGITS = re.compile(r"^[0-9]+$")
_LWS = " \t"  # the only whitespace SIP has once folded lines are joined (§25.1)
# Parameters whose value keys transactions, dialogs or response routing: a second copy would
# let two elements disagree about which one counts, so it is a parse error rather than a guess.
_SINGLE_PARAMS = frozenset({"tag", "branch", "received", "rport", "maddr"})


def is_token(text: str) -> bool:
    return bool(_TOKEN.match(text))


def is_digits(text: str) -> bool:
    """ASCII digits only (str.isdigit also accepts '²' and '١', which int() then rejects)."""
    return bool(_DIGITS.match(text))


_SPLIT_SPECIAL = {sep: re.compile(r'["<>\\' + re.escape(sep) + "]") for sep in ",;"}


def split_quoted(text: str, sep: str) -> list[str]:
    """Split on `sep` outside quoted strings and `<...>`; raise on an unterminated quote."""
    if '"' not in text and "<" not in text:
        return text.split(sep)  # the common case needs no scanning
    special = _SPLIT_SPECIAL.get(sep) or re.compile(r'["<>\\' + re.escape(sep) + "]")
    parts: list[str] = []
    depth = 0
    in_quote = False
    start = 0
    escaped = -1  # index of the character a backslash escapes inside quotes
    for match in special.finditer(text):  # jump from one significant character to the next
        i = match.start()
        if i == escaped:
            continue
        ch = text[i]
        if in_quote:
            if ch == "\\":
                escaped = i + 1
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if in_quote:
        raise ParseError(f"unterminated quoted string in {text[:60]!r}")
    parts.append(text[start:])
    return parts


def unquote_string(text: str) -> str:
    """`"a \\"b\\""` → `a "b"`; the caller checks the surrounding quotes."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise ParseError(f"not a quoted string: {text[:60]!r}")
    out = []
    i = 1
    while i < len(text) - 1:
        ch = text[i]
        if ch == "\\":
            i += 1
            if i >= len(text) - 1:
                raise ParseError("dangling escape in quoted string")
            ch = text[i]
        elif ch == '"':
            raise ParseError("unescaped quote inside quoted string")
        out.append(ch)
        i += 1
    return "".join(out)


_NEEDS_ESCAPE = re.compile(r'[\\"\x00-\x08\x0b\x0c\x0e-\x1f\x7f]')


def quote_string(text: str) -> str:
    """Quote for a header value: backslash-escape '\\', '"' and control octets (quoted-pair);
    CR and LF cannot be escaped in SIP, so they become spaces (no header injection)."""
    text = text.replace("\r", " ").replace("\n", " ")
    return '"' + _NEEDS_ESCAPE.sub(lambda m: "\\" + m.group(0), text) + '"'


def parse_header_params(text: str) -> tuple[Param, ...]:
    """Parse `;name=value;flag` header parameters; quoted values are unquoted."""
    params: list[Param] = []
    seen: set[str] = set()
    for piece in split_quoted(text, ";"):
        piece = piece.strip(_LWS)
        if not piece:
            raise ParseError("empty header parameter")
        key, sep, value = piece.partition("=")
        key, value = key.strip(_LWS), value.strip(_LWS)
        if not is_token(key):
            raise ParseError(f"bad header parameter name {key[:40]!r}")
        lkey = key.lower()
        if lkey in _SINGLE_PARAMS:
            if lkey in seen:
                raise ParseError(f"header parameter {key!r} given twice")
            seen.add(lkey)
        if not sep:
            params.append((key, None))
        elif value.startswith('"'):
            params.append((key, unquote_string(value)))
        elif is_token(value) or _host_like(value):
            params.append((key, value))
        else:
            raise ParseError(f"bad value for header parameter {key[:40]!r}")
    return tuple(params)


def _host_like(value: str) -> bool:
    if is_ipv6_address(value):  # RFC 5118 §4.5: received=2001:db8::9:255 without brackets
        return True
    try:
        parse_host_port(value)
    except ParseError:
        return False
    return True


def format_params(params: tuple[Param, ...]) -> str:
    out = ""
    for key, value in params:
        if value is None:
            out += f";{key}"
        elif is_token(value) or _host_like(value):
            out += f";{key}={value}"
        else:
            out += f";{key}={quote_string(value)}"
    return out

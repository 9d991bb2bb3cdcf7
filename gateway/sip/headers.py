"""SIP header fields: the ordered header container and the typed values we read from it.

RFC 3261 §7.3 and §20, §25.1: names are case-insensitive and have compact forms; a header may
repeat or hold a comma-separated list (only for the headers whose grammar is a list, never for
the authentication headers whose parameters contain commas); values may hold quoted strings with
backslash escapes and `<...>` URIs whose commas and semicolons do not separate anything.

Headers keep their values as written so a message serialises back to what was received; typed
views (`Via`, `NameAddr`, `CSeq`) are parsed from those strings on demand and raise
`ParseError` on bad grammar. Views are immutable and cached per header text (bounded LRU), so
the parser's check and every later reader share one parse. Token, quoted-string and parameter
grammar lives in grammar.py.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass

from gateway.sip.errors import ParseError

# The grammar helpers live in grammar.py; they stay importable from here (explicit re-exports).
from gateway.sip.grammar import format_params as format_params
from gateway.sip.grammar import is_digits as is_digits
from gateway.sip.grammar import is_token as is_token
from gateway.sip.grammar import parse_header_params as parse_header_params
from gateway.sip.grammar import quote_string as quote_string
from gateway.sip.grammar import split_quoted as split_quoted
from gateway.sip.grammar import unquote_string as unquote_string
from gateway.sip.uri import Param, SipUri, Uri, get_param, parse_host_port, parse_uri

COMPACT_FORMS: dict[str, str] = {
    "i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length",
    "c": "Content-Type", "f": "From", "s": "Subject", "k": "Supported", "t": "To",
    "v": "Via", "o": "Event", "r": "Refer-To", "b": "Referred-By", "u": "Allow-Events",
    "x": "Session-Expires", "a": "Accept-Contact", "j": "Reject-Contact",
    "d": "Request-Disposition", "y": "Identity", "n": "Identity-Info",
}

_CANONICAL: dict[str, str] = {
    name.lower(): name
    for name in (
        "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Allow-Events",
        "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
        "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
        "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "In-Reply-To",
        "Max-Forwards", "Min-Expires", "Min-SE", "MIME-Version", "Organization", "Priority",
        "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "Record-Route", "Refer-To",
        "Referred-By", "Reply-To", "Require", "Retry-After", "Route", "RSeq", "RAck", "Server",
        "Session-Expires", "Subject", "Supported", "Timestamp", "To", "Unsupported",
        "User-Agent", "Via", "Warning", "WWW-Authenticate", "P-Asserted-Identity",
    )
}

# Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1). The authentication headers
# are deliberately absent: their parameters are separated by commas too.
LIST_HEADERS = frozenset(
    n.lower()
    for n in (
        "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Allow-Events",
        "Call-Info", "Contact", "Content-Encoding", "Content-Language", "Error-Info",
        "In-Reply-To", "Proxy-Require", "Record-Route", "Require", "Route", "Supported",
        "Unsupported", "Via", "Warning", "P-Asserted-Identity",
    )
)

_LWS = " \t"  # the only whitespace SIP has once folded lines are joined (§25.1)
# Parsed views are cached per header text; bounded in entries and in text length (real values
# are far shorter), so hostile traffic only churns the cache: at most ~1.5 MB for all three.
_CACHE_SIZE = 512
_CACHE_MAX_TEXT = 512


def canonical_name(name: str) -> str:
    """Expand compact forms and normalise case of known names; keep unknown names as sent."""
    lower = name.lower()
    if lower in COMPACT_FORMS:
        return COMPACT_FORMS[lower]
    return _CANONICAL.get(lower, name)


@functools.lru_cache(maxsize=256)
def _names(name: str) -> tuple[str, str]:
    """Canonical name and its lower-case comparison key (bounded cache: names repeat)."""
    canonical = canonical_name(name)
    return canonical, canonical.lower()


def _key(name: str) -> str:
    return _names(name)[1]


class Headers:
    """Ordered, case-insensitive, multi-valued header fields, values kept as written."""

    __slots__ = ("_fields", "_keys")

    def __init__(self, fields: list[tuple[str, str]] | None = None) -> None:
        self._fields: list[tuple[str, str]] = []
        self._keys: list[str] = []  # _key() of each field, in step with _fields
        for name, value in fields or ():
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        canonical, key = _names(name)
        self._fields.append((canonical, value))
        self._keys.append(key)

    def prepend(self, name: str, value: str) -> None:
        canonical, key = _names(name)
        self._fields.insert(0, (canonical, value))
        self._keys.insert(0, key)

    def set(self, name: str, value: str) -> None:
        """Replace every field of this name with one, keeping the first one's position."""
        key = _key(name)
        if key not in self._keys:
            self.add(name, value)
            return
        first = self._keys.index(key)
        fields = [
            (canonical_name(name), value) if i == first else field
            for i, field in enumerate(self._fields)
            if i == first or self._keys[i] != key
        ]
        self._fields = []
        self._keys = []
        for field_name, field_value in fields:
            self._fields.append((field_name, field_value))
            self._keys.append(_key(field_name))

    def remove(self, name: str) -> None:
        key = _key(name)
        kept = [(f, k) for f, k in zip(self._fields, self._keys, strict=True) if k != key]
        self._fields = [f for f, _ in kept]
        self._keys = [k for _, k in kept]

    def get(self, name: str) -> str | None:
        """The first field's value as written (for list headers, the first list element)."""
        key = _key(name)
        if key not in self._keys:
            return None
        if key not in LIST_HEADERS:
            return self._fields[self._keys.index(key)][1]
        values = self.get_all(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        """Every value, with comma-separated list headers split into their elements."""
        key = _key(name)
        if key not in LIST_HEADERS:
            return [f[1] for f, k in zip(self._fields, self._keys, strict=True) if k == key]
        out: list[str] = []
        for (_, value), k in zip(self._fields, self._keys, strict=True):
            if k == key:
                out.extend(
                    part.strip(_LWS) for part in split_quoted(value, ",") if part.strip(_LWS)
                )
        return out

    def fields(self, name: str) -> list[str]:
        """Raw field values of one name, unsplit (for copying headers verbatim)."""
        key = _key(name)
        return [f[1] for f, k in zip(self._fields, self._keys, strict=True) if k == key]

    def count(self, name: str) -> int:
        """How many fields of this name (unsplit)."""
        return self._keys.count(_key(name))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _key(name) in self._keys

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._fields))

    def __len__(self) -> int:
        return len(self._fields)

    def copy(self) -> Headers:
        clone = Headers()
        clone._fields = list(self._fields)
        clone._keys = list(self._keys)
        return clone

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._fields == other._fields

    __hash__ = None  # type: ignore[assignment]  # mutable container

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"


@dataclass(frozen=True, slots=True)
class Via:
    """One Via hop (RFC 3261 §20.42, RFC 3581 rport)."""

    transport: str
    host: str
    port: int | None
    params: tuple[Param, ...]

    @property
    def branch(self) -> str | None:
        return get_param(self.params, "branch")

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    def __str__(self) -> str:
        hostport = self.host if self.port is None else f"{self.host}:{self.port}"
        return f"SIP/2.0/{self.transport} {hostport}{format_params(self.params)}"


# re.ASCII: with re.I alone, 'ſ' would match 's' and '\u212a' would match 'k'.
_VIA = re.compile(r"^SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+(.*)$", re.S | re.I | re.A)


def parse_via(value: str) -> Via:
    """One via-parm (cached: the parser's check, the transaction and dialog layers and
    retransmissions all view the same text, and the result is immutable)."""
    return _parse_via_cached(value) if len(value) <= _CACHE_MAX_TEXT else _parse_via(value)


def _parse_via(value: str) -> Via:
    """One via-parm; the version and protocol names are case-insensitive (§7.1, §25.1)."""
    match = _VIA.match(value.strip(_LWS))
    if not match:
        raise ParseError(f"bad Via {value[:80]!r}")
    transport, rest = match.group(1).upper(), match.group(2)
    sent_by, sep, param_text = rest.partition(";")
    sent_by = sent_by.strip(_LWS)
    if " " in sent_by or "\t" in sent_by:  # COLON = SWS ":" SWS (the port's, not IPv6's)
        host_text, colon, port_text = sent_by.rpartition(":")
        if colon and is_digits(port_text.strip(_LWS)):
            sent_by = host_text.rstrip(_LWS) + ":" + port_text.strip(_LWS)
    host, port = parse_host_port(sent_by)
    params = parse_header_params(param_text) if sep else ()
    return Via(transport, host, port, params)


_parse_via_cached = functools.lru_cache(maxsize=_CACHE_SIZE)(_parse_via)


@dataclass(frozen=True, slots=True)
class NameAddr:
    """From/To/Contact/Route value: optional display name, URI, header parameters."""

    uri: Uri
    display: str | None = None
    params: tuple[Param, ...] = ()
    wildcard: bool = False  # `Contact: *`

    @property
    def tag(self) -> str | None:
        return get_param(self.params, "tag")

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    @property
    def sip_uri(self) -> SipUri | None:
        return self.uri if isinstance(self.uri, SipUri) else None

    def with_params(self, params: tuple[Param, ...]) -> NameAddr:
        return NameAddr(self.uri, self.display, params, self.wildcard)

    def __str__(self) -> str:
        if self.wildcard:
            return "*"
        display = f"{quote_string(self.display)} " if self.display else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


def parse_name_addr(value: str) -> NameAddr:
    """name-addr or addr-spec (cached: the parser's check, the transaction and dialog layers and
    retransmissions all view the same text, and the result is immutable)."""
    if len(value) <= _CACHE_MAX_TEXT:
        return _parse_name_addr_cached(value)
    return _parse_name_addr(value)


def _parse_name_addr(value: str) -> NameAddr:
    """name-addr or addr-spec with header parameters (§20.10, §25.1)."""
    text = value.strip(_LWS)
    if text == "*":
        return NameAddr(parse_uri("sip:invalid"), wildcard=True)
    display: str | None = None
    if ("<" in text and not text.startswith("<")) or text.startswith('"'):
        if text.startswith('"'):
            end = _closing_quote(text)
            display = unquote_string(text[: end + 1])
            text = text[end + 1 :].lstrip(_LWS)
        else:
            lt = text.index("<")
            words = [word for word in text[:lt].replace("\t", " ").split(" ") if word]
            display = " ".join(words)
            if not all(is_token(word) for word in words):
                raise ParseError(f"bad display name {display[:60]!r}")
            text = text[lt:]
        if not text.startswith("<"):
            raise ParseError("display name not followed by <URI>")
    if text.startswith("<"):
        gt = text.find(">")
        if gt < 0:
            raise ParseError("unterminated <URI>")
        # No LWS inside <...>: LAQUOT/RAQUOT allow it only outside (RFC 4475 §3.1.2.14).
        uri = parse_uri(text[1:gt])
        rest = text[gt + 1 :].strip(_LWS)
    else:
        # addr-spec form: parameters after ';' belong to the header, not the URI (§20.10), and
        # a URI holding ',', ';' or '?' must be in <...> (RFC 4475 §3.1.2.13).
        uri_text, _, param_part = text.partition(";")
        uri_text = uri_text.strip(_LWS)
        if "?" in uri_text:
            raise ParseError("a URI with headers must be enclosed in <>")
        uri = parse_uri(uri_text)
        rest = ";" + param_part if param_part else ""
    if rest and not rest.startswith(";"):
        raise ParseError(f"junk after URI: {rest[:40]!r}")
    params = parse_header_params(rest[1:]) if rest else ()
    return NameAddr(uri, display or None, params)


_parse_name_addr_cached = functools.lru_cache(maxsize=_CACHE_SIZE)(_parse_name_addr)


def _closing_quote(text: str) -> int:
    i = 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i
        i += 1
    raise ParseError("unterminated quoted display name")


@dataclass(frozen=True, slots=True)
class CSeq:
    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


MAX_CSEQ = 2**31 - 1  # RFC 3261 §8.1.1.5: CSeq MUST be less than 2**31


def parse_cseq(value: str) -> CSeq:
    """CSeq (cached: the parser's check, the transaction and dialog layers and
    retransmissions all view the same text, and the result is immutable)."""
    return _parse_cseq_cached(value) if len(value) <= _CACHE_MAX_TEXT else _parse_cseq(value)


def _parse_cseq(value: str) -> CSeq:
    parts = value.replace("\t", " ").split(" ")
    parts = [part for part in parts if part]
    if len(parts) != 2 or not is_digits(parts[0]) or not is_token(parts[1]):
        raise ParseError(f"bad CSeq {value[:60]!r}")
    digits = parts[0].lstrip("0") or "0"  # leading zeros are legal (RFC 4475 §3.1.1.1)
    if len(digits) > 10 or int(digits) > MAX_CSEQ:  # length first: int() of huge text is slow
        raise ParseError(f"CSeq number out of range: {parts[0][:20]}")
    return CSeq(int(digits), parts[1])


_parse_cseq_cached = functools.lru_cache(maxsize=_CACHE_SIZE)(_parse_cseq)


def parse_option_tags(values: list[str]) -> list[str]:
    """Require/Supported/Unsupported/Allow: a list of tokens."""
    tags = []
    for value in values:
        tag = value.strip(_LWS)
        if not is_token(tag):
            raise ParseError(f"bad option tag {tag[:40]!r}")
        tags.append(tag)
    return tags

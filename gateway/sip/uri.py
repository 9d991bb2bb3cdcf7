"""SIP and other URIs (RFC 3261 §19.1, §25.1; RFC 3986 for non-SIP schemes).

`parse_uri` turns `sip:`/`sips:` URIs into a `SipUri` with user, host, port, parameters and
headers; IPv6 references stay bracketed in `host`. Any other scheme (`tel:`, `urn:`, ...) is
kept whole as an `AbsoluteUri`. `str()` of either gives text that parses back to an equal value.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from urllib.parse import unquote

from gateway.sip.errors import ParseError

Param = tuple[str, str | None]

# Every pattern is ASCII-only on purpose: `\d`, `\s` and re.I also match non-ASCII digits,
# spaces and letters ('١', NBSP, 'ſ'), which would let a hostile peer smuggle look-alikes into
# values that key transactions.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):(.*)$", re.S)
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9\-.]*[A-Za-z0-9.])?$")
_IPV4 = re.compile(r"^[0-9]{1,3}(\.[0-9]{1,3}){3}$")
_IPV6_CHARS = re.compile(r"^[0-9A-Fa-f:.]+$")
# RFC 3261 §25.1 user and param characters (unreserved, escaped, user/param-unreserved).
_USER_CHARS = re.compile(r"^([A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})*$")
_PARAM_CHARS = re.compile(r"^([A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+$")
# hname / hvalue: hnv-unreserved, unreserved, escaped (hvalue may be empty).
_HEADER_CHARS = re.compile(r"^([A-Za-z0-9\-_.!~*'()\[\]/?:+$]|%[0-9A-Fa-f]{2})*$")
# Other schemes (RFC 3986): printable ASCII except the delimiters that end a URI in SIP text.
_OPAQUE_CHARS = re.compile(r'^[\x21-\x7e]+$')
_OPAQUE_FORBIDDEN = frozenset('<>"\\')


def get_param(params: tuple[Param, ...], name: str) -> str | None:
    """Value of a parameter by case-insensitive name; "" for a flag, None when absent."""
    lname = name.lower()
    for key, value in params:
        if key.lower() == lname:
            return "" if value is None else value
    return None


@dataclass(frozen=True, slots=True)
class SipUri:
    """A `sip:` or `sips:` URI. `user` and `host` are stored as written (escapes intact)."""

    scheme: str
    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: tuple[Param, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()

    def param(self, name: str) -> str | None:
        """Value of a URI parameter (case-insensitive name); "" for a flag like `;lr`."""
        return get_param(self.params, name)

    def has_param(self, name: str) -> bool:
        return self.param(name) is not None

    @property
    def user_unescaped(self) -> str | None:
        return None if self.user is None else unquote(self.user)

    @property
    def host_port(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def with_params(self, params: tuple[Param, ...]) -> SipUri:
        return replace(self, params=params)

    def __str__(self) -> str:
        userinfo = ""
        if self.user is not None:
            userinfo = self.user
            if self.password is not None:
                userinfo += ":" + self.password
            userinfo += "@"
        text = f"{self.scheme}:{userinfo}{self.host_port}"
        for key, value in self.params:
            text += f";{key}" if value is None else f";{key}={value}"
        if self.headers:
            text += "?" + "&".join(f"{k}={v}" for k, v in self.headers)
        return text


@dataclass(frozen=True, slots=True)
class AbsoluteUri:
    """Any non-SIP URI (tel:, urn:, http:, ...), kept as written."""

    scheme: str
    rest: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"


Uri = SipUri | AbsoluteUri


def parse_host_port(text: str) -> tuple[str, int | None]:
    """Split `host[:port]` where host may be a bracketed IPv6 reference."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ParseError(f"unterminated IPv6 reference in {text[:60]!r}")
        host, rest = text[: end + 1], text[end + 1 :]
        if not is_ipv6_address(host[1:-1]):
            raise ParseError(f"bad IPv6 reference {host[:60]!r}")
        if rest == "":
            return host, None
        if not rest.startswith(":"):
            raise ParseError(f"junk after IPv6 reference in {text[:60]!r}")
        return host, _parse_port(rest[1:])
    host, sep, port_text = text.partition(":")
    if not host:
        raise ParseError(f"missing host in {text[:60]!r}")
    if _IPV4.match(host):
        if any(int(part) > 255 for part in host.split(".")):
            raise ParseError(f"bad IPv4 address {host!r}")
    elif not _HOSTNAME.match(host):
        raise ParseError(f"bad host {host[:60]!r}")
    return host, (_parse_port(port_text) if sep else None)


def is_ipv6_address(text: str) -> bool:
    """An IPv6 address without brackets (RFC 5118: also `received=2001:db8::1`)."""
    if not _IPV6_CHARS.match(text) or ":" not in text:
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _parse_port(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 5 or int(text) > 65535:
        raise ParseError(f"bad port {text[:20]!r}")
    return int(text)


def parse_params(
    text: str, *, allow_value_chars: re.Pattern[str] | None = None
) -> tuple[Param, ...]:
    """Parse `;a=b;c` (text without the leading ';' split already done by the caller)."""
    params: list[Param] = []
    for piece in text.split(";"):
        if piece == "":
            raise ParseError("empty URI parameter")
        key, sep, value = piece.partition("=")
        if not _PARAM_CHARS.match(key):
            raise ParseError(f"bad URI parameter name {key!r}")
        if sep and allow_value_chars is not None and not allow_value_chars.match(value):
            raise ParseError(f"bad URI parameter value {value!r}")
        params.append((key, value if sep else None))
    return tuple(params)


def parse_uri(text: str) -> Uri:
    """Parse a URI as it appears in a Request-Line or inside `<...>`."""
    match = _SCHEME.match(text)
    if not match:
        raise ParseError(f"URI without a scheme: {text[:60]!r}")
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme not in ("sip", "sips"):
        if not _OPAQUE_CHARS.match(rest) or not _OPAQUE_FORBIDDEN.isdisjoint(rest):
            raise ParseError(f"bad character in {scheme}: URI {text[:60]!r}")
        return AbsoluteUri(scheme, rest)
    # '@' can only end the userinfo: no other part of a SIP URI may hold one (§25.1), while the
    # user part may hold ';', '?' and '/' (RFC 4475 §3.1.1.9), so userinfo is cut off first.
    user = password = None
    if "@" in rest:
        userinfo, rest = rest.split("@", 1)
        if "@" in rest:
            raise ParseError(f"more than one '@' in URI {text[:60]!r}")
        user, colon, pw = userinfo.partition(":")
        password = pw if colon else None
        if not user or not _USER_CHARS.match(user):
            raise ParseError(f"bad user part {user[:60]!r}")
        if password is not None and not _USER_CHARS.match(password):
            raise ParseError("bad password part")
    headers: tuple[tuple[str, str], ...] = ()
    if "?" in rest:
        rest, header_text = rest.split("?", 1)
        pairs = []
        for item in header_text.split("&"):
            name, sep, value = item.partition("=")
            if not name or not sep or not _HEADER_CHARS.match(name + value):
                raise ParseError(f"bad URI header {item[:60]!r}")
            pairs.append((name, value))
        headers = tuple(pairs)
    hostport, _, param_text = rest.partition(";")
    params = parse_params(param_text, allow_value_chars=_PARAM_CHARS) if param_text else ()
    host, port = parse_host_port(hostport)
    return SipUri(scheme, host, user, password, port, params, headers)

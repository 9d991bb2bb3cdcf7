"""ICE server entries from ice-config, normalised into what aiortc can take (or skipped).

Owns the rule for every STUN/TURN URL the Orga ice-config endpoint can hand us (reference §6:
`turn:turn.orga-ai.com:3478?transport=udp`, RFC 7064 `stun:`/`stuns:`, RFC 7065
`turn:`/`turns:`, one URL or several per entry). aiortc 1.16 parses each URL when the peer
connection is built and raises on forms browsers accept — `stun:host:3478?transport=udp`
(a transport on a STUN URL), an unknown scheme, an IPv6 literal — which used to fail every call
with SIP 500. A call must never fail because of one odd URL, so here:

- kept as is: `stun:host[:port]`, `turn:host[:port][?transport=udp|tcp]`,
  `turns:host[:port][?transport=tcp]`;
- normalised: scheme and `transport` value lower-cased, surrounding blanks removed, and a
  `?transport=` on a `stun:` URL dropped (STUN binding requests are UDP here anyway);
- skipped: `stuns:` (aiortc ignores it silently), `turns:` over UDP (DTLS, unsupported), a TURN
  transport other than udp/tcp, TURN without username and credential, a credential type other
  than "password", IPv6 literals and other hosts aiortc cannot parse, bad ports, other schemes,
  and entries that are not objects or have no string URL.

Everything skipped is reported in one warning per ice-config response (never the credentials),
by `parse_ice_servers` in `api.py`, the only caller on the client side.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from aiortc import RTCIceServer

log = logging.getLogger(__name__)

# scheme ":" host [":" port] ["?" query]; a host aiortc can take has no ':', '?', '[' or '/'.
_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):(?P<host>[^?:\[\]/@\s]+)(?::(?P<port>[^?]*))?"
    r"(?:\?(?P<query>.*))?"
)
_SUPPORTED_TRANSPORTS = {"turn": ("udp", "tcp"), "turns": ("tcp",)}


@dataclass(frozen=True, slots=True)
class IceServerList:
    """The servers aiortc can use, and one line per URL or entry that was skipped."""

    servers: list[RTCIceServer]
    skipped: list[str]

    def warn_skipped(self) -> None:
        """One warning for the whole response, not one per URL."""
        if self.skipped:
            log.warning("ice-config: skipped %d ICE server URL(s) aiortc cannot use: %s",
                        len(self.skipped), "; ".join(self.skipped))


def normalise_url(url: str) -> tuple[str | None, str]:
    """(the URL in a form aiortc accepts, "") or (None, why it was skipped)."""
    match = _URL.fullmatch(url.strip())
    if match is None:
        return None, "not a host[:port] STUN/TURN URL"
    scheme = match["scheme"].lower()
    host, port, query = match["host"], match["port"], match["query"]
    if scheme not in ("stun", "stuns", "turn", "turns"):
        return None, f"scheme {scheme!r} is not STUN/TURN"
    if scheme == "stuns":
        return None, "stuns (STUN over TLS) is not supported by aiortc"
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        return None, "bad port"
    transport: str | None = None
    if query:
        for pair in query.split("&"):
            name, _, value = pair.partition("=")
            if name.lower() == "transport":
                transport = value.lower()
    location = host if port is None else f"{host}:{int(port)}"
    if scheme == "stun":
        return f"stun:{location}", ""  # a transport on a STUN URL is dropped (RFC 7064: none)
    allowed = _SUPPORTED_TRANSPORTS[scheme]
    if transport is None:
        return f"{scheme}:{location}", ""
    if transport not in allowed:
        return None, f"{scheme} over {transport!r} is not supported by aiortc"
    return f"{scheme}:{location}?transport={transport}", ""


def normalise_ice_servers(entries: list[object]) -> IceServerList:
    """Build aiortc `RTCIceServer`s from ice-config entries; never raises on one bad URL."""
    servers: list[RTCIceServer] = []
    skipped: list[str] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            skipped.append(f"entry {index}: not an object")
            continue
        raw = entry.get("urls", entry.get("url"))
        urls = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
        username, credential = entry.get("username"), entry.get("credential")
        has_credentials = isinstance(username, str) and isinstance(credential, str)
        credential_type = entry.get("credentialType", "password")
        kept: list[str] = []
        for url in urls:
            if not isinstance(url, str):
                skipped.append(f"entry {index}: a URL that is not a string")
                continue
            fixed, why = normalise_url(url)
            shown = _shown(url)
            if fixed is not None and fixed.startswith("turn"):
                if not has_credentials:
                    fixed, why = None, "TURN without username and credential"
                elif credential_type != "password":
                    fixed, why = None, "TURN credential type other than password"
            if fixed is None:
                skipped.append(f"{shown} ({why})")
            else:
                kept.append(fixed)
        if not urls:
            skipped.append(f"entry {index}: no urls")
        if kept:
            servers.append(RTCIceServer(
                urls=kept,
                username=username if isinstance(username, str) else None,
                credential=credential if isinstance(credential, str) else None,
            ))
    return IceServerList(servers, skipped)


def _shown(url: str) -> str:
    """The URL for a log line: bounded, no query (which could carry anything)."""
    return url.strip().split("?", 1)[0][:100]

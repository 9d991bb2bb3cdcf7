"""The gateway's configuration: one TOML file read with `tomllib` into frozen dataclasses.

This module owns every setting's name, type and default, route matching and the rendering of
`instructions` placeholders. `config_validate.py` owns the checks (ranges, cross-section rules)
and the loading of secrets: the Orga API key from `ORGA_API_KEY` or the file named by
`ORGA_API_KEY_FILE`, trunk digest passwords from the variable or file a trunk names — never
inline. Validation collects *all* problems and reports each as `key: problem — fix`, so an
operator fixes a file in one pass (`check-config`).

Secrets are held in `Secret`, whose repr and str never show the value.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.orga.settings import SessionParams

API_KEY_ENV = "ORGA_API_KEY"
API_KEY_FILE_ENV = "ORGA_API_KEY_FILE"
TRANSPORTS = ("udp", "tcp")
CODECS = ("PCMU", "PCMA")
DIGEST_ALGORITHMS = ("SHA-256", "MD5")
PLACEHOLDERS = ("caller", "callee", "call_id")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """Every problem found in a config file, each `key: problem — fix`."""

    def __init__(self, problems: list[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__("\n".join(self.problems))


class Secret:
    """A secret string that never shows itself in a repr, str, log record or traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(other._value.encode(),
                                                                 self._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class SipConfig:
    bind: str = "127.0.0.1"
    port: int = 5060
    transports: tuple[str, ...] = ("udp", "tcp")
    public_address: str | None = None


@dataclass(frozen=True, slots=True)
class RtpConfig:
    bind: str = "127.0.0.1"
    port_min: int = 10000
    port_max: int = 10999
    codecs: tuple[str, ...] = ("PCMU", "PCMA")
    inactivity_timeout_s: float = 30.0

    @property
    def call_capacity(self) -> int:
        """Calls the range can hold: one even RTP port per call, the odd one above it for RTCP."""
        first = self.port_min + (self.port_min % 2)
        return max(0, (self.port_max - first + 1) // 2)


@dataclass(frozen=True, slots=True)
class OrgaConfig:
    base_url: str = "https://api.orga-ai.com"
    model: str = "orga-1-beta"
    voice: str = "Sofía"
    temperature: float = 0.5
    instructions: str | None = None
    return_transcription: bool = True
    history: bool = True
    video_mline: bool = True
    ice_addresses: tuple[str, ...] = ()
    request_timeout_s: float = 10.0
    setup_timeout_s: float = 15.0
    email: str | None = None


@dataclass(frozen=True, slots=True)
class HttpConfig:
    listen: str = "127.0.0.1:9090"

    @property
    def host(self) -> str:
        return split_hostport(self.listen)[0]

    @property
    def port(self) -> int:
        return split_hostport(self.listen)[1]


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_calls: int = 50
    max_call_duration_s: float = 3600.0
    drain_timeout_s: float = 300.0


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    unknown_source: str = "drop"  # "drop" | "reject"
    allow_unauthenticated_public: bool = False
    invite_rate_per_source: float = 5.0
    invite_burst_per_source: int = 10
    request_rate_per_source: float = 20.0
    request_burst_per_source: int = 50
    calls_per_second: float = 10.0
    calls_burst: int = 20
    max_tracked_sources: int = 10000
    tcp_max_connections_per_source: int = 16
    tcp_max_connections: int = 1024
    tcp_idle_timeout_s: float = 120.0
    tcp_header_timeout_s: float = 5.0
    max_message_size: int = 65535
    rtp_max_packets_per_second: int = 200
    nonce_ttl_s: float = 300.0


@dataclass(frozen=True, slots=True)
class TrunkConfig:
    name: str
    allow: tuple[IPNetwork, ...]
    username: str | None = None
    realm: str = "orga-sip-gateway"
    password: Secret | None = field(default=None, repr=False, compare=False)
    max_calls: int | None = None
    # Offered in this order (RFC 8760 §2.4). Some UACs (SIPp 3.6, old PBXs) answer only the
    # first challenge and know only MD5: such a trunk lists ["MD5"].
    digest_algorithms: tuple[str, ...] = DIGEST_ALGORITHMS

    @property
    def requires_auth(self) -> bool:
        return self.username is not None


@dataclass(frozen=True, slots=True)
class Route:
    match: str = "*"
    trunk: str | None = None
    model: str | None = None
    voice: str | None = None
    temperature: float | None = None
    instructions: str | None = None
    return_transcription: bool | None = None
    history: bool | None = None

    @property
    def label(self) -> str:
        """Bounded metric label: the match pattern from the config, never the dialed number."""
        return self.match

    def matches(self, callee: str, trunk: str | None) -> bool:
        if self.trunk is not None and self.trunk != trunk:
            return False
        if self.match == "*":
            return True
        if self.match.endswith("*"):
            return callee.startswith(self.match[:-1])
        return callee == self.match

    def session_params(self, orga: OrgaConfig, *, caller: str, callee: str,
                       call_id: str) -> SessionParams:
        """The Orga `params` for one call: route overrides over `[orga]`, placeholders filled."""
        instructions = self.instructions if self.instructions is not None else orga.instructions
        return SessionParams(
            model=self.model if self.model is not None else orga.model,
            voice=self.voice if self.voice is not None else orga.voice,
            temperature=self.temperature if self.temperature is not None else orga.temperature,
            instructions=(render_instructions(instructions, caller=caller, callee=callee,
                                              call_id=call_id) if instructions else None),
            return_transcription=(self.return_transcription
                                  if self.return_transcription is not None
                                  else orga.return_transcription),
            history=self.history if self.history is not None else orga.history,
        )


DEFAULT_TRUNKS = (TrunkConfig(name="loopback", allow=(ipaddress.ip_network("127.0.0.0/8"),)),)
DEFAULT_ROUTES = (Route(match="*"),)


@dataclass(frozen=True, slots=True)
class Config:
    sip: SipConfig = SipConfig()
    rtp: RtpConfig = RtpConfig()
    orga: OrgaConfig = OrgaConfig()
    http: HttpConfig = HttpConfig()
    limits: LimitsConfig = LimitsConfig()
    security: SecurityConfig = SecurityConfig()
    trunks: tuple[TrunkConfig, ...] = DEFAULT_TRUNKS
    routes: tuple[Route, ...] = DEFAULT_ROUTES
    api_key: Secret = field(default=Secret(""), repr=False, compare=False)

    def warnings(self) -> list[str]:
        """Things that are allowed but must be logged at every start (issue 7 item 2)."""
        return [
            f"trunk {t.name!r} accepts calls from {', '.join(map(str, t.allow))} without "
            "authentication (security.allow_unauthenticated_public = true): every call opens "
            "a paid Orga session" for t in self.trunks if is_open_public(t)
        ]

    def secrets(self) -> list[str]:
        """Every secret value, for registration with the log redaction filter."""
        values = [self.api_key.reveal()] + [t.password.reveal() for t in self.trunks if t.password]
        return [v for v in values if v]


# --- route matching and placeholders -----------------------------------------------------------

PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Caller and callee come from SIP headers the caller controls: only characters that a phone
# number or SIP user part needs reach the model's instructions (no prompt injection by From).
_UNSAFE_RE = re.compile(r"[^0-9A-Za-z+*#._@-]")


def match_route(routes: tuple[Route, ...] | list[Route], callee: str,
                trunk: str | None) -> Route | None:
    """First route whose pattern matches the dialed user part (and trunk, if it names one)."""
    for route in routes:
        if route.matches(callee, trunk):
            return route
    return None


def render_instructions(template: str, *, caller: str, callee: str, call_id: str) -> str:
    """Replace {caller} {callee} {call_id}; any other text, braces included, is left as is."""
    values = {name: _UNSAFE_RE.sub("", value)[:64]
              for name, value in (("caller", caller), ("callee", callee), ("call_id", call_id))}

    def repl(m: re.Match[str]) -> str:
        return values.get(m.group(1), m.group(0))

    return PLACEHOLDER_RE.sub(repl, template)


def is_open_public(trunk: TrunkConfig) -> bool:
    """An unauthenticated trunk that admits a wide slice of the internet (e.g. 0.0.0.0/0)."""
    if trunk.requires_auth:
        return False
    return any(n.prefixlen < (8 if n.version == 4 else 16) for n in trunk.allow)


# --- loading ------------------------------------------------------------------------------------

def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file; raise `ConfigError` with every problem found."""
    env = os.environ if env is None else env
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror}) — check the path and "
                           "permissions"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: not valid TOML ({exc}) — fix the syntax"]) from None
    return parse_config(raw, env)


def parse_config(raw: Mapping[str, Any], env: Mapping[str, str]) -> Config:
    """Validate an already parsed TOML document (see `load_config`)."""
    from gateway import config_validate as v

    return v.build(raw, env)


def read_secret_file(path: str) -> str:
    """A secret file's content without the trailing newline editors and `echo` add."""
    return Path(path).read_text(encoding="utf-8").rstrip("\r\n")


def split_hostport(value: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port); ValueError otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{value!r} is not host:port")
    return host.strip("[]"), int(port)

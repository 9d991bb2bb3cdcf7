"""The config schema: every setting's name, type, default and bounds, as frozen dataclasses.

One TOML section is one dataclass; `[[trunks]]` and `[[routes]]` are tuples of `TrunkConfig` and
`Route`. A field declared with `setting(default, lo=..., hi=...)` carries its own checks (range,
IP address, instruction template), which `gateway/config/load.py` applies to every section,
trunk and route alike — so a new key with a simple check is one line here. Checks that involve
more than one key (port ranges vs `limits.max_calls`, trunk credentials) live in `load.py`.

This module reads nothing and imports nothing of the gateway: the loader builds these values,
everything else only reads them. Secrets are held in `Secret`, whose repr never shows the value.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from dataclasses import dataclass, field, fields, is_dataclass
from typing import TypeVar

TRANSPORTS = ("udp", "tcp", "tls")
SRTP_POLICIES = ("off", "optional", "required")  # per trunk: SDES-SRTP on the phone leg
CODECS = ("PCMU", "PCMA")
DIGEST_ALGORITHMS = ("SHA-256", "MD5")
WEBHOOK_EVENTS = ("call.started", "call.answered", "call.ended", "transcript")
RECORDING_FORMATS = ("ogg", "wav")
STATE_DIRECTORY = "/var/lib/orga-sip-gateway"  # systemd StateDirectory= of the units
# The placeholders an `instructions` template may use (rendered in `gateway/orga/settings.py`).
PLACEHOLDERS = ("caller", "callee", "call_id")
PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# Overload defaults, measured with bench/capacity.py (README "Capacity"): the loop lag p90 at
# which phone-side pacing gaps appear, and a CPU share that leaves the loop room to breathe.
OVERLOAD_LAG_MS = 10.0
OVERLOAD_CPU_PERCENT = 90.0

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Check:
    """What the loader checks on one field besides its type (None/empty values are not checked).

    `lo`/`hi`: inclusive range, reported as `use a value from {lo} to {hi}{unit}`. `ip`: an IP
    address literal (each item of a list). `template`: an instructions template, whose
    `{placeholders}` must be in `PLACEHOLDERS`. `choices`: the value must be one of these.
    """

    lo: float | None = None
    hi: float | None = None
    unit: str = ""
    ip: bool = False
    template: bool = False
    choices: tuple[str, ...] = ()


def setting(default: T, *, lo: float | None = None, hi: float | None = None, unit: str = "",
            ip: bool = False, template: bool = False, choices: tuple[str, ...] = ()) -> T:
    """A config field with its default and the checks `load.py` applies to it."""
    check = Check(lo, hi, unit, ip, template, choices)
    return field(default=default, metadata={"check": check})


def check_of(cls: type, name: str) -> Check | None:
    """The `Check` declared on a field with `setting`, if any."""
    for f in fields(cls):
        if f.name == name:
            check: Check | None = f.metadata.get("check")
            return check
    return None


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


# --- sections ([sip], [rtp], ...): one dataclass each, listed in `Config` ---------------------

@dataclass(frozen=True, slots=True)
class SipConfig:
    bind: str = setting("127.0.0.1", ip=True)
    port: int = setting(5060, lo=1, hi=65535)
    transports: tuple[str, ...] = ("udp", "tcp")
    public_address: str | None = None
    # SIP over TLS (transports has "tls"): its port, our certificate chain and key (PEM files,
    # reloaded on SIGHUP), and the CA bundle for servers we connect to (None: system store).
    tls_port: int = setting(5061, lo=1, hi=65535)
    tls_certificate: str | None = None
    tls_private_key: str | None = None
    tls_ca: str | None = None


@dataclass(frozen=True, slots=True)
class RtpConfig:
    bind: str = setting("127.0.0.1", ip=True)
    port_min: int = setting(10000, lo=1024, hi=65534)
    port_max: int = setting(10999, lo=1025, hi=65535)
    codecs: tuple[str, ...] = ("PCMU", "PCMA")
    inactivity_timeout_s: float = setting(30.0, lo=1, hi=3600, unit=" s")

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
    temperature: float = setting(0.5, lo=0.0, hi=1.0)
    instructions: str | None = setting(None, template=True)
    return_transcription: bool = True
    history: bool = True
    video_mline: bool = True
    ice_addresses: tuple[str, ...] = setting((), ip=True)
    request_timeout_s: float = setting(10.0, lo=0.5, hi=120, unit=" s")
    setup_timeout_s: float = setting(15.0, lo=1, hi=120, unit=" s")
    email: str | None = None
    # No RTP from a connected Orga session for this long: the leg is lost (0 = never check).
    media_timeout_s: float = setting(2.0, lo=0, hi=60, unit=" s")


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
    max_calls: int = setting(50, lo=1, hi=10000)
    max_call_duration_s: float = setting(3600.0, lo=10, hi=86400, unit=" s")
    drain_timeout_s: float = setting(300.0, lo=0, hi=86400, unit=" s")
    # Overload (gateway/overload.py): new calls get 503 while the event loop's lag p90 over
    # the window is above overload_loop_lag_ms, or the process used more than
    # overload_cpu_percent of one core over it (0 = not checked).
    overload_loop_lag_ms: float = setting(OVERLOAD_LAG_MS, lo=1, hi=1000, unit=" ms")
    overload_cpu_percent: float = setting(OVERLOAD_CPU_PERCENT, lo=0, hi=800, unit=" %")
    overload_window_s: float = setting(2.0, lo=0.5, hi=60, unit=" s")


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    unknown_source: str = "drop"  # "drop" | "reject"
    allow_unauthenticated_public: bool = False
    invite_rate_per_source: float = setting(5.0, lo=0.01, hi=10000)
    invite_burst_per_source: int = setting(10, lo=1, hi=100000)
    request_rate_per_source: float = setting(20.0, lo=0.01, hi=100000)
    request_burst_per_source: int = setting(50, lo=1, hi=100000)
    calls_per_second: float = setting(10.0, lo=0.01, hi=10000)
    calls_burst: int = setting(20, lo=1, hi=100000)
    max_tracked_sources: int = setting(10000, lo=16, hi=10_000_000)
    tcp_max_connections_per_source: int = setting(16, lo=1, hi=100000)
    tcp_max_connections: int = setting(1024, lo=1, hi=1_000_000)
    tcp_idle_timeout_s: float = setting(120.0, lo=1, hi=86400)
    tcp_header_timeout_s: float = setting(5.0, lo=0.1, hi=600)
    max_message_size: int = setting(65535, lo=1500, hi=1_048_576)
    rtp_max_packets_per_second: int = setting(200, lo=50, hi=100000)
    nonce_ttl_s: float = setting(300.0, lo=10, hi=86400)
    # Penalty box: this many failed digest answers from one source within the window drop
    # everything from it for auth_ban_s (gateway/security/penalty.py).
    auth_failures_max: int = setting(5, lo=1, hi=1000)
    auth_failures_window_s: float = setting(60.0, lo=1, hi=86400, unit=" s")
    auth_ban_s: float = setting(600.0, lo=1, hi=604800, unit=" s")


@dataclass(frozen=True, slots=True)
class WorkersConfig:
    """Worker processes on this host sharing this file; worker N derives its SIP port, HTTP
    port and RTP slice from it (gateway/workers.py, systemd orga-sip-gateway@N)."""

    count: int = setting(1, lo=1, hi=64)


@dataclass(frozen=True, slots=True)
class WebhooksConfig:
    """Where call records go (`gateway/records/webhooks.py`); no URL = no webhooks. The secret
    comes from `secret_env` or `secret_file` and is held on `Config.webhook_secret`."""

    url: str | None = None
    urls: tuple[str, ...] = ()
    secret_env: str | None = None
    secret_file: str | None = None
    events: tuple[str, ...] = ("call.ended",)
    spool_dir: str = f"{STATE_DIRECTORY}/spool"
    spool_max_mb: float = setting(100.0, lo=1, hi=100_000, unit=" MB")

    @property
    def targets(self) -> tuple[str, ...]:
        """The receiver URLs (`url` or `urls`)."""
        return self.urls or ((self.url,) if self.url else ())


@dataclass(frozen=True, slots=True)
class RecordingConfig:
    """How recorded calls are stored (`gateway/records/recording.py`); routes opt in with
    `record = true`."""

    directory: str = f"{STATE_DIRECTORY}/recordings"
    format: str = "ogg"  # "ogg" (Opus) | "wav" (16-bit PCM)
    retention_days: float = setting(0.0, lo=0, hi=36500, unit=" days")  # 0 = keep
    announcement: str | None = None  # WAV played to the caller before the agent


@dataclass(frozen=True, slots=True)
class PrivacyConfig:
    """Personal data in logs. Transcripts and DTMF digits (PINs, card numbers) are logged only
    when `log_content` is true; otherwise the log says that an event happened, not what."""

    log_content: bool = False


# --- [[trunks]] and [[routes]] ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TrunkConfig:
    """One `[[trunks]]` entry. The fields up to `digest_algorithms` have hand-written checks in
    `load.py` (credentials, CIDRs); any field added after them is checked generically (its type
    and its `setting` checks), like a section key."""

    name: str
    allow: tuple[IPNetwork, ...]
    username: str | None = None
    realm: str = "orga-sip-gateway"
    password: Secret | None = field(default=None, repr=False, compare=False)
    max_calls: int | None = None
    # Offered in this order (RFC 8760 §2.4). Some UACs (SIPp 3.6, old PBXs) answer only the
    # first challenge and know only MD5: such a trunk lists ["MD5"].
    digest_algorithms: tuple[str, ...] = DIGEST_ALGORITHMS
    # New calls per second this trunk may place, and its burst (issue 12: carriers sell
    # 10-100 CPS, and behind a balancer the whole cluster's calls come from one address).
    max_cps: float = setting(30.0, lo=0.01, hi=10000)
    cps_burst: int = setting(60, lo=1, hi=100000)
    # SDES-SRTP on the phone leg: "off", "optional" (SRTP when offered) or "required" (488).
    srtp: str = setting("optional", choices=SRTP_POLICIES)
    # Mutual TLS: a CA file; TLS clients from this trunk must present a certificate it signed.
    tls_client_ca: str | None = None

    @property
    def requires_auth(self) -> bool:
        return self.username is not None


@dataclass(frozen=True, slots=True)
class Route:
    """One `[[routes]]` entry: which calls it takes (`match`, `trunk`) and what it overrides.

    The fields from `model` to `history` override the `[orga]` key of the same name; None means
    "as in [orga]". `gateway/orga/settings.py` resolves them into the call's session parameters.
    `record` switches call recording on for this route (`[recording]`).
    """

    match: str = "*"
    trunk: str | None = None
    model: str | None = None
    voice: str | None = None
    temperature: float | None = setting(None, lo=0.0, hi=1.0)
    instructions: str | None = setting(None, template=True)
    return_transcription: bool | None = None
    history: bool | None = None
    record: bool = False  # not an [orga] override: record this route's calls ([recording])
    # Route-only keys (not [orga] overrides). Named SIP/tel URIs a call of this route may be
    # sent to (`name = "sip:desk@pbx.example"` / `"tel:+4930123"`): the Orga fallback uses one,
    # call control (REFER transfer) names them too. Read with `transfer_target(name)`.
    transfer_targets: tuple[tuple[str, str], ...] = ()
    # When Orga cannot take the call: "reject" (SIP 5xx) or the name of a transfer target.
    on_orga_failure: str = "reject"
    orga_failure_announcement: str | None = None  # WAV played to the caller before the fallback

    def transfer_target(self, name: str) -> str | None:
        """The URI of the transfer target `name`, None if the route has none by that name."""
        return dict(self.transfer_targets).get(name)

    @property
    def label(self) -> str:
        """Bounded metric label: the match pattern from the config, never the dialed number."""
        return self.match


DEFAULT_TRUNKS = (TrunkConfig(name="loopback", allow=(ipaddress.ip_network("127.0.0.0/8"),)),)
DEFAULT_ROUTES = (Route(match="*"),)


@dataclass(frozen=True, slots=True)
class Config:
    """The whole file. Every field whose default is a dataclass is a `[section]` of the file."""

    sip: SipConfig = SipConfig()
    rtp: RtpConfig = RtpConfig()
    orga: OrgaConfig = OrgaConfig()
    http: HttpConfig = HttpConfig()
    limits: LimitsConfig = LimitsConfig()
    security: SecurityConfig = SecurityConfig()
    workers: WorkersConfig = WorkersConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    recording: RecordingConfig = RecordingConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    trunks: tuple[TrunkConfig, ...] = DEFAULT_TRUNKS
    routes: tuple[Route, ...] = DEFAULT_ROUTES
    api_key: Secret = field(default=Secret(""), repr=False, compare=False)
    webhook_secret: Secret = field(default=Secret(""), repr=False, compare=False)

    def warnings(self) -> list[str]:
        """Things that are allowed but must be logged at every start (issue 7 item 2)."""
        open_public = [
            f"trunk {t.name!r} accepts calls from {', '.join(map(str, t.allow))} without "
            "authentication (security.allow_unauthenticated_public = true): every call opens "
            "a paid Orga session" for t in self.trunks if is_open_public(t)
        ]
        clear_keys = [
            f"trunk {t.name!r} requires SRTP but sip.transports has no \"tls\": its SDES keys "
            "travel readable in the SDP" for t in self.trunks
            if t.srtp == "required" and "tls" not in self.sip.transports
        ]
        return open_public + clear_keys

    def secrets(self) -> list[str]:
        """Every secret value, for registration with the log redaction filter."""
        values = [self.api_key.reveal(), self.webhook_secret.reveal()] + [
            t.password.reveal() for t in self.trunks if t.password]
        return [v for v in values if v]


def sections() -> dict[str, type]:
    """`[section]` name → its dataclass, in file order (derived from `Config`'s fields)."""
    return {f.name: type(f.default) for f in fields(Config) if is_dataclass(f.default)}


def is_open_public(trunk: TrunkConfig) -> bool:
    """An unauthenticated trunk that admits a wide slice of the internet (e.g. 0.0.0.0/0)."""
    if trunk.requires_auth:
        return False
    return any(n.prefixlen < (8 if n.version == 4 else 16) for n in trunk.allow)


def split_hostport(value: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port); ValueError otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{value!r} is not host:port")
    return host.strip("[]"), int(port)

"""Validation of a parsed config document into `gateway.config.Config`.

Owns the checks behind `check-config`: unknown keys (with a did-you-mean), types, ranges,
cross-section rules (RTP port range vs `limits.max_calls`, routes naming unknown trunks, open
public trunks, API key present) and secret loading. Every problem is collected, never the first
only, and phrased `key: problem — fix`.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, Union
from urllib.parse import urlsplit

from gateway import config as config_module
from gateway.config import (
    API_KEY_ENV,
    API_KEY_FILE_ENV,
    CODECS,
    DEFAULT_ROUTES,
    DEFAULT_TRUNKS,
    DIGEST_ALGORITHMS,
    PLACEHOLDER_RE,
    PLACEHOLDERS,
    TRANSPORTS,
    Config,
    ConfigError,
    HttpConfig,
    LimitsConfig,
    OrgaConfig,
    Route,
    RtpConfig,
    Secret,
    SecurityConfig,
    SipConfig,
    TrunkConfig,
    is_open_public,
    read_secret_file,
    split_hostport,
)

SECTIONS: dict[str, type] = {
    "sip": SipConfig, "rtp": RtpConfig, "orga": OrgaConfig, "http": HttpConfig,
    "limits": LimitsConfig, "security": SecurityConfig,
}
TRUNK_KEYS = ("name", "allow", "username", "realm", "password_env", "password_file", "max_calls",
              "digest_algorithms")
_MISSING = object()
_SECRET_NAME = re.compile(r"(?i)(^key$|api_?key$|password$|secret$|token$)")


def field_hints(cls: type) -> dict[str, Any]:
    """Resolved annotations of a config dataclass, for the generic type checks."""
    hints = typing.get_type_hints(cls, globalns=vars(config_module))
    return {f.name: hints[f.name] for f in fields(cls)}


def hint_allows_none(hint: Any) -> bool:
    return typing.get_origin(hint) in (Union, types.UnionType) and type(None) in typing.get_args(
        hint)


def url_host(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


class Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, key: str, problem: str, fix: str) -> None:
        self.items.append(f"{key}: {problem} — {fix}")


def _unknown(problems: Problems, key: str, name: str, known: typing.Iterable[str]) -> None:
    known = list(known)
    close = difflib.get_close_matches(name, known, n=1)
    fix = f"did you mean {close[0]!r}?" if close else "remove it (known keys: " + ", ".join(
        known) + ")"
    problems.add(key, "unknown key", fix)


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _coerce(value: Any, hint: Any) -> Any:
    """The value converted to the field's type, or `_MISSING` when it has the wrong type."""
    if hint_allows_none(hint):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        if inner is str and value == "":
            return None  # TOML has no null: an empty string means "not set"
        return _coerce(value, inner)
    if typing.get_origin(hint) is tuple:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        return _MISSING
    if hint is bool:
        return value if isinstance(value, bool) else _MISSING
    if hint is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _MISSING
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        return _MISSING
    if hint is str:
        return value if isinstance(value, str) else _MISSING
    raise TypeError(hint)


def _type_name(hint: Any) -> str:
    if hint_allows_none(hint):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return _type_name(inner)
    if typing.get_origin(hint) is tuple:
        return "a list of strings"
    return _TYPE_NAMES[hint]


def _typed_table(problems: Problems, prefix: str, table: Any, cls: type) -> dict[str, Any]:
    """Type-check one table against a dataclass; returns only the well-typed values."""
    if not isinstance(table, dict):
        problems.add(prefix, "must be a table", f"write it as [{prefix}] with key = value lines")
        return {}
    hints = field_hints(cls)
    out: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{prefix}.{name}"
        if name not in hints:
            if _SECRET_NAME.search(name):
                problems.add(key, "secrets are never read from the config file",
                             f"remove it; the Orga API key comes from {API_KEY_ENV} or "
                             f"{API_KEY_FILE_ENV}, trunk passwords from password_env/password_file")
            else:
                _unknown(problems, key, name, hints)
            continue
        converted = _coerce(value, hints[name])
        if converted is _MISSING:
            problems.add(key, f"{value!r} is not {_type_name(hints[name])}",
                         f"write {_type_name(hints[name])}")
        else:
            out[name] = converted
    return out


def _range(problems: Problems, key: str, value: float, lo: float, hi: float, unit: str = ""
           ) -> bool:
    if lo <= value <= hi:
        return True
    problems.add(key, f"{value}{unit} is out of range", f"use a value from {lo} to {hi}{unit}")
    return False


def _check_ip(problems: Problems, key: str, value: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        problems.add(key, f"{value!r} is not an IP address",
                     "use a literal IPv4/IPv6 address such as 127.0.0.1 or 0.0.0.0")


def _sections(raw: Mapping[str, Any], p: Problems) -> dict[str, Any]:
    built: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        built[name] = cls(**_typed_table(p, name, raw.get(name, {}), cls))
    sip: SipConfig = built["sip"]
    _check_ip(p, "sip.bind", sip.bind)
    _range(p, "sip.port", sip.port, 1, 65535)
    for t in sip.transports:
        if t not in TRANSPORTS:
            p.add("sip.transports", f"{t!r} is not a transport we offer", 'use "udp" and/or "tcp"')
    if not sip.transports or len(set(sip.transports)) != len(sip.transports):
        p.add("sip.transports", "must list each transport once and at least one",
              'use ["udp", "tcp"]')

    rtp: RtpConfig = built["rtp"]
    _check_ip(p, "rtp.bind", rtp.bind)
    ok = _range(p, "rtp.port_min", rtp.port_min, 1024, 65534)
    ok = _range(p, "rtp.port_max", rtp.port_max, 1025, 65535) and ok
    if ok and rtp.port_min >= rtp.port_max:
        p.add("rtp.port_max", f"{rtp.port_max} is not above rtp.port_min {rtp.port_min}",
              "make port_max larger than port_min")
    if ok and rtp.port_min <= sip.port <= rtp.port_max:
        p.add("rtp.port_min", f"the RTP range {rtp.port_min}-{rtp.port_max} contains sip.port "
              f"{sip.port}", "move the RTP range or the SIP port")
    for c in rtp.codecs:
        if c not in CODECS:
            p.add("rtp.codecs", f"{c!r} is not a codec we offer", 'use "PCMU" and/or "PCMA"')
    if not rtp.codecs:
        p.add("rtp.codecs", "is empty", 'use ["PCMU", "PCMA"]')
    _range(p, "rtp.inactivity_timeout_s", rtp.inactivity_timeout_s, 1, 3600, " s")

    orga: OrgaConfig = built["orga"]
    host = url_host(orga.base_url)
    scheme = orga.base_url.split(":", 1)[0]
    if scheme not in ("http", "https") or not host:
        p.add("orga.base_url", f"{orga.base_url!r} is not an http(s) URL",
              "use https://api.orga-ai.com")
    elif scheme == "http" and not _is_loopback_host(host):
        p.add("orga.base_url", "plain http to a non-loopback host would send the API key "
              "unencrypted", "use https:// (http:// is only for a local emulator on 127.0.0.1)")
    for key in ("model", "voice"):
        if not getattr(orga, key):
            p.add(f"orga.{key}", "is empty", f"set it (default {getattr(OrgaConfig(), key)!r})")
    _range(p, "orga.temperature", orga.temperature, 0.0, 1.0)
    _check_placeholders(p, "orga.instructions", orga.instructions)
    for addr in orga.ice_addresses:
        _check_ip(p, "orga.ice_addresses", addr)
    _range(p, "orga.request_timeout_s", orga.request_timeout_s, 0.5, 120, " s")
    _range(p, "orga.setup_timeout_s", orga.setup_timeout_s, 1, 120, " s")

    try:
        split_hostport(built["http"].listen)
    except ValueError:
        p.add("http.listen", f"{built['http'].listen!r} is not host:port",
              'use "127.0.0.1:9090" (or "[::1]:9090")')
    else:
        _check_ip(p, "http.listen", built["http"].host)
        _range(p, "http.listen", built["http"].port, 0, 65535)

    lim: LimitsConfig = built["limits"]
    _range(p, "limits.max_calls", lim.max_calls, 1, 10000)
    _range(p, "limits.max_call_duration_s", lim.max_call_duration_s, 10, 86400, " s")
    _range(p, "limits.drain_timeout_s", lim.drain_timeout_s, 0, 86400, " s")
    if ok and rtp.call_capacity < lim.max_calls:
        first = rtp.port_min + rtp.port_min % 2
        p.add("rtp.port_max", f"{rtp.port_max} leaves room for {rtp.call_capacity} calls but "
              f"limits.max_calls is {lim.max_calls}", "raise rtp.port_max to at least "
              f"{first + 2 * lim.max_calls - 1} or lower limits.max_calls")

    sec: SecurityConfig = built["security"]
    if sec.unknown_source not in ("drop", "reject"):
        p.add("security.unknown_source", f"{sec.unknown_source!r} is not a choice",
              'use "drop" (silent, default) or "reject" (403)')
    for key, lo, hi in (("invite_rate_per_source", 0.01, 10000),
                        ("invite_burst_per_source", 1, 100000),
                        ("request_rate_per_source", 0.01, 100000),
                        ("request_burst_per_source", 1, 100000),
                        ("calls_per_second", 0.01, 10000), ("calls_burst", 1, 100000),
                        ("max_tracked_sources", 16, 10_000_000),
                        ("tcp_max_connections_per_source", 1, 100000),
                        ("tcp_max_connections", 1, 1_000_000),
                        ("tcp_idle_timeout_s", 1, 86400), ("tcp_header_timeout_s", 0.1, 600),
                        ("max_message_size", 1500, 1_048_576),
                        ("rtp_max_packets_per_second", 50, 100000),
                        ("nonce_ttl_s", 10, 86400)):
        _range(p, f"security.{key}", getattr(sec, key), lo, hi)
    return built


def _is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_placeholders(p: Problems, key: str, text: str | None) -> None:
    for name in PLACEHOLDER_RE.findall(text or ""):
        if name not in PLACEHOLDERS:
            p.add(key, f"unknown placeholder {{{name}}}",
                  "use {caller}, {callee} or {call_id}")


def _trunks(raw: Any, env: Mapping[str, str], allow_public: bool, p: Problems
            ) -> tuple[TrunkConfig, ...]:
    if raw is None:
        return DEFAULT_TRUNKS
    if not isinstance(raw, list):
        p.add("trunks", "must be an array of tables", "write each trunk as [[trunks]]")
        return ()
    out: list[TrunkConfig] = []
    names: set[str] = set()
    for i, table in enumerate(raw):
        pre = f"trunks[{i}]"
        if not isinstance(table, dict):
            p.add(pre, "must be a table", "write it as [[trunks]]")
            continue
        bad = False
        for k in table:
            if k == "password":
                p.add(f"{pre}.password", "inline passwords are not allowed",
                      "remove it and set password_env (a variable name) or password_file")
                bad = True
            elif k not in TRUNK_KEYS:
                _unknown(p, f"{pre}.{k}", k, TRUNK_KEYS)
                bad = True
        name = table.get("name")
        if not isinstance(name, str) or not name:
            p.add(f"{pre}.name", "missing or not a string", 'give each trunk a name = "..."')
            bad = True
        elif name in names:
            p.add(f"{pre}.name", f"duplicate trunk name {name!r}", "give each trunk its own name")
            bad = True
        else:
            names.add(name)
        allow = _networks(p, f"{pre}.allow", table.get("allow"))
        bad = bad or allow is None
        strs: dict[str, str | None] = {}
        for k in ("username", "realm", "password_env", "password_file"):
            v = table.get(k)
            if v is not None and (not isinstance(v, str) or not v):
                p.add(f"{pre}.{k}", f"{v!r} is not a non-empty string", "write a quoted string")
                bad = True
                v = None
            strs[k] = v
        max_calls = table.get("max_calls")
        if max_calls is not None and (not isinstance(max_calls, int) or isinstance(
                max_calls, bool) or max_calls < 1):
            p.add(f"{pre}.max_calls", f"{max_calls!r} is not a positive integer",
                  "use a whole number ≥ 1, or remove it for limits.max_calls")
            bad = True
        algorithms = table.get("digest_algorithms", list(DIGEST_ALGORITHMS))
        if (not isinstance(algorithms, list) or not algorithms
                or any(a not in DIGEST_ALGORITHMS for a in algorithms)
                or len(set(algorithms)) != len(algorithms)):
            p.add(f"{pre}.digest_algorithms", f"{algorithms!r} is not a list of distinct "
                  f"{' / '.join(DIGEST_ALGORITHMS)}", 'use ["SHA-256", "MD5"] (the default) or '
                  '["MD5"] for clients that answer only the first challenge')
            bad = True
        password = _password(p, pre, strs, env)
        if strs["username"] is None and (strs["password_env"] or strs["password_file"]):
            p.add(f"{pre}.username", "a password is configured without a username",
                  "add username = \"...\" or remove password_env/password_file")
            bad = True
        if bad or password is _MISSING or allow is None:
            continue
        trunk = TrunkConfig(name=str(name), allow=allow, username=strs["username"],
                            realm=strs["realm"] or "orga-sip-gateway",
                            password=typing.cast("Secret | None", password), max_calls=max_calls,
                            digest_algorithms=tuple(algorithms))
        if is_open_public(trunk) and not allow_public:
            p.add(f"{pre}.allow", "admits a wide public range without authentication: anyone "
                  "could open paid Orga sessions", "add username and password_env, narrow allow, "
                  "or set security.allow_unauthenticated_public = true")
        out.append(trunk)
    return tuple(out)


def _networks(p: Problems, key: str, value: Any) -> tuple[Any, ...] | None:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        p.add(key, "missing or not a non-empty list of CIDRs", 'write allow = ["192.0.2.0/24"]')
        return None
    nets = []
    for v in value:
        try:
            nets.append(ipaddress.ip_network(v, strict=True))
        except ValueError as exc:
            p.add(key, f"{v!r} is not a network ({exc})", 'write CIDRs like "192.0.2.0/24"')
            return None
    return tuple(nets)


def _password(p: Problems, pre: str, strs: Mapping[str, str | None], env: Mapping[str, str]
              ) -> Any:
    """The trunk's password as a `Secret`, None without credentials, `_MISSING` on a problem."""
    if strs["username"] is None:
        return None
    var, path = strs["password_env"], strs["password_file"]
    if (var is None) == (path is None):
        p.add(f"{pre}.password_env", "a trunk with a username needs exactly one password source",
              "set password_env (name of an environment variable) or password_file")
        return _MISSING
    if var is not None:
        value = env.get(var, "")
        if not value:
            p.add(f"{pre}.password_env", f"environment variable {var} is not set or empty",
                  f"export {var}=... before starting, or use password_file")
            return _MISSING
        return Secret(value)
    return _secret_file(p, f"{pre}.password_file", str(path), "the password")


def _secret_file(p: Problems, key: str, path: str, what: str, *, strip: bool = False
                 ) -> Secret | object:
    """A secret read from a file (systemd credential, 0600 file); `_MISSING` on a problem.
    Passwords keep inner and trailing spaces (they may be part of them); keys are stripped."""
    try:
        value = read_secret_file(path)
        value = value.strip() if strip else value
    except (OSError, UnicodeDecodeError) as exc:
        p.add(key, f"cannot read {path} ({exc.__class__.__name__})",
              "make it a file readable by the gateway's user (systemd: LoadCredential=)")
        return _MISSING
    if not value:
        p.add(key, f"{path} is empty", f"write {what} into it")
        return _MISSING
    return Secret(value)


def _routes(raw: Any, trunk_names: set[str], p: Problems) -> tuple[Route, ...]:
    if raw is None:
        return DEFAULT_ROUTES
    if not isinstance(raw, list) or not raw:
        p.add("routes", "must be a non-empty array of tables",
              'write at least one [[routes]] with match = "*"')
        return ()
    out = []
    for i, table in enumerate(raw):
        pre = f"routes[{i}]"
        values = _typed_table(p, pre, table, Route)
        match = values.get("match")
        if not isinstance(table, dict):
            continue
        if match is None:
            p.add(f"{pre}.match", "missing", 'add match = "+4930*" (or "*" for every number)')
            continue
        if not match or "*" in match[:-1]:
            p.add(f"{pre}.match", f"{match!r} is not a pattern",
                  'use an exact number, a prefix ending in "*", or "*"')
        trunk = values.get("trunk")
        if trunk is not None and trunk not in trunk_names:
            p.add(f"{pre}.trunk", f"no trunk is named {trunk!r}",
                  "use one of: " + ", ".join(sorted(trunk_names)))
        if "temperature" in values:
            _range(p, f"{pre}.temperature", values["temperature"], 0.0, 1.0)
        _check_placeholders(p, f"{pre}.instructions", values.get("instructions"))
        out.append(Route(**values))
    return tuple(out)


def _api_key(env: Mapping[str, str], p: Problems) -> Secret:
    value = env.get(API_KEY_ENV, "").strip()
    if value:
        return Secret(value)
    path = env.get(API_KEY_FILE_ENV, "")
    if path:
        secret = _secret_file(p, API_KEY_FILE_ENV, path, "the Orga API key", strip=True)
        return secret if isinstance(secret, Secret) else Secret("")
    p.add(API_KEY_ENV, "no Orga API key", f"export {API_KEY_ENV}=... or set {API_KEY_FILE_ENV} to "
          "a file holding it (systemd: LoadCredential=)")
    return Secret("")


def build(raw: Mapping[str, Any], env: Mapping[str, str]) -> Config:
    p = Problems()
    for name in raw:
        if name not in SECTIONS and name not in ("trunks", "routes"):
            _unknown(p, name, name, [*SECTIONS, "trunks", "routes"])
    sections = _sections(raw, p)
    trunks = _trunks(raw.get("trunks"), env,
                     sections["security"].allow_unauthenticated_public, p)
    routes = _routes(raw.get("routes"), {t.name for t in trunks}, p)
    if "trunks" in raw and isinstance(raw["trunks"], list) and not raw["trunks"]:
        p.add("trunks", "is empty: no call would ever be accepted",
              'add a [[trunks]] entry (e.g. name = "pbx", allow = ["192.0.2.10/32"])')
    api_key = _api_key(env, p)
    if p.items:
        raise ConfigError(p.items)
    return Config(trunks=trunks, routes=routes, api_key=api_key, **sections)

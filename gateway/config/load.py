"""Loading a config file into `gateway.config.schema.Config`, and every check behind it.

Owns reading the TOML file, the checks behind `check-config` — unknown keys (with a
did-you-mean), types, the per-field checks declared in the schema with `setting(...)`, the
rules that involve more than one key (RTP port range vs `limits.max_calls`, routes naming
unknown trunks, open public trunks, API key present) — and secret loading: the Orga API key
from `ORGA_API_KEY` or the file named by `ORGA_API_KEY_FILE`, trunk digest passwords from the
variable or file a trunk names, never inline. Every problem is collected, never the first only,
and phrased `key: problem — fix`, so an operator fixes a file in one pass.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, Union
from urllib.parse import urlsplit

from gateway.config.schema import (
    CODECS,
    DEFAULT_ROUTES,
    DEFAULT_TRUNKS,
    DIGEST_ALGORITHMS,
    PLACEHOLDER_RE,
    PLACEHOLDERS,
    RECORDING_FORMATS,
    TRANSPORTS,
    WEBHOOK_EVENTS,
    Check,
    Config,
    ConfigError,
    Route,
    RtpConfig,
    Secret,
    SipConfig,
    TrunkConfig,
    WebhooksConfig,
    check_of,
    is_open_public,
    sections,
    split_hostport,
)
from gateway.orga.catalog import MODELS, VOICES
from gateway.records.announcement import wav_problem
from gateway.transport.tls_context import TlsFiles, check_files

API_KEY_ENV = "ORGA_API_KEY"
API_KEY_FILE_ENV = "ORGA_API_KEY_FILE"
# Trunk keys with hand-written checks below; `password` is read from one of the two sources.
TRUNK_KEYS = ("name", "allow", "username", "realm", "password_env", "password_file", "max_calls",
              "digest_algorithms")
_TRUNK_FIELDS_BY_HAND = {"name", "allow", "username", "realm", "password", "max_calls",
                         "digest_algorithms"}
_MISSING = object()
_SECRET_NAME = re.compile(r"(?i)(^key$|api_?key$|password$|secret$|token$)")


# --- entry points ------------------------------------------------------------------------------

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
    p = Problems()
    known = sections()
    for name in raw:
        if name not in known and name not in ("trunks", "routes"):
            _unknown(p, name, name, [*known, "trunks", "routes"])
    built = _sections(raw, p)
    trunks = _trunks(raw.get("trunks"), env, built["security"].allow_unauthenticated_public, p)
    routes = _routes(raw.get("routes"), {t.name for t in trunks}, p)
    if "trunks" in raw and isinstance(raw["trunks"], list) and not raw["trunks"]:
        p.add("trunks", "is empty: no call would ever be accepted",
              'add a [[trunks]] entry (e.g. name = "pbx", allow = ["192.0.2.10/32"])')
    _tls(p, built["sip"], trunks)
    api_key = _api_key(env, p)
    webhook_secret = _webhook_secret(built["webhooks"], env, p)
    if p.items:
        raise ConfigError(p.items)
    return Config(trunks=trunks, routes=routes, api_key=api_key, webhook_secret=webhook_secret,
                  **built)


def read_secret_file(path: str) -> str:
    """A secret file's content without the trailing newline editors and `echo` add."""
    return Path(path).read_text(encoding="utf-8").rstrip("\r\n")


# --- the generic part: a table against a dataclass ---------------------------------------------

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


def _unknown(problems: Problems, key: str, name: str, known: Iterable[str]) -> None:
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


def _typed_table(problems: Problems, prefix: str, table: Any, cls: type,
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
                _unknown(problems, key, name, hints)
            continue
        converted = _coerce(value, hints[name])
        if converted is _MISSING:
            problems.add(key, f"{value!r} is not {_type_name(hints[name])}",
                         f"write {_type_name(hints[name])}")
        else:
            out[name] = converted
    return out


def _check_value(p: Problems, key: str, value: Any, check: Check | None) -> None:
    """The checks a field declared with `setting(...)`; unset values (None) pass."""
    if check is None or value is None:
        return
    if check.ip:
        for item in value if isinstance(value, tuple) else (value,):
            _check_ip(p, key, item)
    if check.template:
        _check_placeholders(p, key, value)
    if check.lo is not None and check.hi is not None:
        _range(p, key, value, check.lo, check.hi, check.unit)
    if check.choices and value not in check.choices:
        p.add(key, f"{value!r} is not a choice",
              "use " + " or ".join(f'"{c}"' for c in check.choices))


def _in_range(obj: Any, name: str) -> bool:
    check = check_of(type(obj), name)
    assert check is not None and check.lo is not None and check.hi is not None
    return bool(check.lo <= getattr(obj, name) <= check.hi)


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


def _check_placeholders(p: Problems, key: str, text: str | None) -> None:
    for name in PLACEHOLDER_RE.findall(text or ""):
        if name not in PLACEHOLDERS:
            p.add(key, f"unknown placeholder {{{name}}}",
                  "use {caller}, {callee} or {call_id}")


# --- sections: generic checks per field, then the rules below --------------------------------

Rule = Callable[[Problems, dict[str, Any]], None]


def _sections(raw: Mapping[str, Any], p: Problems) -> dict[str, Any]:
    """Build each `[section]` in file order. After a field's own checks run the `RULES` keyed
    `section.field`, after the whole section those keyed `section`: problems come out in the
    order of the example file."""
    built: dict[str, Any] = {}
    for name, cls in sections().items():
        section = built[name] = cls(**_typed_table(p, name, raw.get(name, {}), cls))
        for f in fields(cls):
            key = f"{name}.{f.name}"
            _check_value(p, key, getattr(section, f.name), f.metadata.get("check"))
            if key in RULES:
                RULES[key](p, built)
        if name in RULES:
            RULES[name](p, built)
    return built


def _sip_transports(p: Problems, built: dict[str, Any]) -> None:
    transports = built["sip"].transports
    for t in transports:
        if t not in TRANSPORTS:
            p.add("sip.transports", f"{t!r} is not a transport we offer",
                  'use any of "udp", "tcp", "tls"')
    if not transports or len(set(transports)) != len(transports):
        p.add("sip.transports", "must list each transport once and at least one",
              'use ["udp", "tcp"]')


def _rtp_ports_in_range(rtp: RtpConfig) -> bool:
    return _in_range(rtp, "port_min") and _in_range(rtp, "port_max")


def _rtp_port_order(p: Problems, built: dict[str, Any]) -> None:
    rtp: RtpConfig = built["rtp"]
    if not _rtp_ports_in_range(rtp):
        return
    if rtp.port_min >= rtp.port_max:
        p.add("rtp.port_max", f"{rtp.port_max} is not above rtp.port_min {rtp.port_min}",
              "make port_max larger than port_min")
    sip_port = built["sip"].port
    if rtp.port_min <= sip_port <= rtp.port_max:
        p.add("rtp.port_min", f"the RTP range {rtp.port_min}-{rtp.port_max} contains sip.port "
              f"{sip_port}", "move the RTP range or the SIP port")


def _rtp_codecs(p: Problems, built: dict[str, Any]) -> None:
    codecs = built["rtp"].codecs
    for c in codecs:
        if c not in CODECS:
            p.add("rtp.codecs", f"{c!r} is not a codec we offer", 'use "PCMU" and/or "PCMA"')
    if not codecs:
        p.add("rtp.codecs", "is empty", 'use ["PCMU", "PCMA"]')


def _orga_base_url(p: Problems, built: dict[str, Any]) -> None:
    url = built["orga"].base_url
    host = _url_host(url)
    scheme = url.split(":", 1)[0]
    if scheme not in ("http", "https") or not host:
        p.add("orga.base_url", f"{url!r} is not an http(s) URL", "use https://api.orga-ai.com")
    elif scheme == "http" and not _is_loopback_host(host):
        p.add("orga.base_url", "plain http to a non-loopback host would send the API key "
              "unencrypted", "use https:// (http:// is only for a local emulator on 127.0.0.1)")


def _http_listen(p: Problems, built: dict[str, Any]) -> None:
    http = built["http"]
    try:
        split_hostport(http.listen)
    except ValueError:
        p.add("http.listen", f"{http.listen!r} is not host:port",
              'use "127.0.0.1:9090" (or "[::1]:9090")')
    else:
        _check_ip(p, "http.listen", http.host)
        _range(p, "http.listen", http.port, 0, 65535)


def _limits_vs_rtp(p: Problems, built: dict[str, Any]) -> None:
    rtp: RtpConfig = built["rtp"]
    max_calls = built["limits"].max_calls
    if _rtp_ports_in_range(rtp) and rtp.call_capacity < max_calls:
        first = rtp.port_min + rtp.port_min % 2
        p.add("rtp.port_max", f"{rtp.port_max} leaves room for {rtp.call_capacity} calls but "
              f"limits.max_calls is {max_calls}", "raise rtp.port_max to at least "
              f"{first + 2 * max_calls - 1} or lower limits.max_calls")


def _workers(p: Problems, built: dict[str, Any]) -> None:
    """Several workers from this file must not clash (gateway/workers.py)."""
    from gateway.workers import layout_problems

    if not (_rtp_ports_in_range(built["rtp"]) and _in_range(built["workers"], "count")):
        return
    try:
        split_hostport(built["http"].listen)
    except ValueError:
        return  # reported under http.listen
    for key, problem, fix in layout_problems(built["sip"], built["rtp"], built["http"],
                                             built["limits"], built["workers"].count):
        p.add(key, problem, fix)


def _unknown_source(p: Problems, built: dict[str, Any]) -> None:
    value = built["security"].unknown_source
    if value not in ("drop", "reject"):
        p.add("security.unknown_source", f"{value!r} is not a choice",
              'use "drop" (silent, default) or "reject" (403)')


def _webhooks(p: Problems, built: dict[str, Any]) -> None:
    hooks: WebhooksConfig = built["webhooks"]
    if hooks.url is not None and hooks.urls:
        p.add("webhooks.url", "both url and urls are set", "keep one of them")
    for url in hooks.targets:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            p.add("webhooks.url", f"{url!r} is not an http(s) URL",
                  'write a full URL, e.g. "https://crm.example/hooks/calls"')
    unknown = [e for e in hooks.events if e not in WEBHOOK_EVENTS]
    if unknown or not hooks.events:
        p.add("webhooks.events", f"{list(hooks.events)!r} is not a list of known events",
              "use some of: " + ", ".join(f'"{e}"' for e in WEBHOOK_EVENTS))
    if hooks.targets and (hooks.secret_env is None) == (hooks.secret_file is None):
        p.add("webhooks.secret_env", "webhooks need exactly one secret source",
              "set secret_env (name of an environment variable) or secret_file")


def _recording_format(p: Problems, built: dict[str, Any]) -> None:
    value = built["recording"].format
    if value not in RECORDING_FORMATS:
        p.add("recording.format", f"{value!r} is not a format",
              'use "ogg" (Opus, small) or "wav" (16-bit PCM)')


def _recording_announcement(p: Problems, built: dict[str, Any]) -> None:
    path = built["recording"].announcement
    problem = wav_problem(path) if path is not None else None
    if problem is not None:
        p.add("recording.announcement", problem,
              "name a 16-bit PCM WAV file the gateway's user can read, or remove the key")


# Rules a field's `setting` cannot express. "section.field": run right after that field's own
# checks; "section": after the whole section (it may read sections built before it).
RULES: dict[str, Rule] = {
    "sip.transports": _sip_transports,
    "rtp.port_max": _rtp_port_order,
    "rtp.codecs": _rtp_codecs,
    "orga.base_url": _orga_base_url,
    "orga.model": lambda p, built: _orga_choice(p, "orga.model", built["orga"].model, MODELS),
    "orga.voice": lambda p, built: _orga_choice(p, "orga.voice", built["orga"].voice, VOICES),
    "http.listen": _http_listen,
    "limits": _limits_vs_rtp,
    "security.unknown_source": _unknown_source,
    "workers": _workers,
    "webhooks": _webhooks,
    "recording.format": _recording_format,
    "recording.announcement": _recording_announcement,
}


def tls_files(config: Config) -> TlsFiles:
    """The TLS files a config names: `[sip]` certificate, key and CA, each trunk's client CA."""
    sip = config.sip
    return TlsFiles(
        certificate=sip.tls_certificate or "", private_key=sip.tls_private_key or "",
        client_cas={t.name: t.tls_client_ca for t in config.trunks if t.tls_client_ca},
        server_ca=sip.tls_ca or None,
    )


def _tls(p: Problems, sip: SipConfig, trunks: tuple[TrunkConfig, ...]) -> None:
    """SIP over TLS: the files must be there, match, be valid now and name public_address."""
    cas = {t.name: t.tls_client_ca for t in trunks if t.tls_client_ca}
    if "tls" not in sip.transports:
        for name in cas:
            p.add(f"trunks.{name}.tls_client_ca", 'has no effect without "tls" in '
                  "sip.transports", 'add "tls" to sip.transports or remove tls_client_ca')
        return
    if "tcp" in sip.transports and sip.tls_port == sip.port:
        p.add("sip.tls_port", f"{sip.tls_port} is sip.port, which TCP already listens on",
              "use another port (5061 is the standard)")
    missing = False
    for key in ("tls_certificate", "tls_private_key"):
        if not getattr(sip, key):
            p.add(f"sip.{key}", 'is required with "tls" in sip.transports',
                  "set it to a PEM file (the certificate chain / its private key)")
            missing = True
    if missing:
        return
    files = TlsFiles(sip.tls_certificate or "", sip.tls_private_key or "", client_cas=cas,
                     server_ca=sip.tls_ca or None)
    names = [sip.public_address] if sip.public_address else []
    problems, _ = check_files(files, names)  # warnings (expiry soon) are logged at start
    p.items.extend(problems)  # already `key: problem — fix`
    if sip.tls_ca and not Path(sip.tls_ca).is_file():
        p.add("sip.tls_ca", f"cannot read {sip.tls_ca}",
              'check the path, or remove it for the system store')


def _url_host(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def _is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- [[trunks]] ----------------------------------------------------------------------------------

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
        trunk = _trunk(p, pre, table, env, names)
        if trunk is None:
            continue
        if is_open_public(trunk) and not allow_public:
            p.add(f"{pre}.allow", "admits a wide public range without authentication: anyone "
                  "could open paid Orga sessions", "add username and password_env, narrow allow, "
                  "or set security.allow_unauthenticated_public = true")
        out.append(trunk)
    return tuple(out)


def _generic_trunk_fields() -> list[str]:
    """`TrunkConfig` fields added after the hand-checked ones: typed and checked generically."""
    return [f.name for f in fields(TrunkConfig) if f.name not in _TRUNK_FIELDS_BY_HAND]


def _trunk(p: Problems, pre: str, table: dict[str, Any], env: Mapping[str, str],
           names: set[str]) -> TrunkConfig | None:
    """One `[[trunks]]` table, or None when it has a problem (reported)."""
    generic = _generic_trunk_fields()
    bad = False
    for k in table:
        if k == "password":
            p.add(f"{pre}.password", "inline passwords are not allowed",
                  "remove it and set password_env (a variable name) or password_file")
            bad = True
        elif k not in TRUNK_KEYS and k not in generic:
            _unknown(p, f"{pre}.{k}", k, [*TRUNK_KEYS, *generic])
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
    extra = _typed_table(p, pre, table, TrunkConfig, generic) if generic else {}
    for k in generic:
        _check_value(p, f"{pre}.{k}", extra.get(k), check_of(TrunkConfig, k))
    bad = bad or any(k in table and k not in extra for k in generic)
    password = _password(p, pre, strs, env)
    if strs["username"] is None and (strs["password_env"] or strs["password_file"]):
        p.add(f"{pre}.username", "a password is configured without a username",
              "add username = \"...\" or remove password_env/password_file")
        bad = True
    if bad or password is _MISSING or allow is None:
        return None
    return TrunkConfig(name=str(name), allow=allow, username=strs["username"],
                       realm=strs["realm"] or "orga-sip-gateway",
                       password=typing.cast("Secret | None", password), max_calls=max_calls,
                       digest_algorithms=tuple(algorithms), **extra)


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


# --- [[routes]] and the API key ------------------------------------------------------------------

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
        by_hand = {"transfer_targets"}
        values = _typed_table(p, pre, {k: v for k, v in table.items() if k not in by_hand}
                              if isinstance(table, dict) else table, Route)
        match = values.get("match")
        if not isinstance(table, dict):
            continue
        if table.get("instructions") == "":
            values["instructions"] = ""  # Orga's default, not [orga].instructions (the example)
        targets = _transfer_targets(p, f"{pre}.transfer_targets", table.get("transfer_targets"))
        values["transfer_targets"] = targets
        _route_orga_values(p, pre, values)
        _orga_fallback(p, pre, values, targets)
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
        for f in fields(Route):
            _check_value(p, f"{pre}.{f.name}", values.get(f.name), f.metadata.get("check"))
        out.append(Route(**values))
    return tuple(out)


# A transfer target: a SIP(S) URI with a host, or a global tel: number (RFC 3966).
_TARGET_RE = re.compile(r"(sips?:[^\s<>\"@]+@[^\s<>\"@]+|sips?:[^\s<>\"@:;]+(:\d+)?"
                        r"(;[^\s<>\"]*)?|tel:\+[0-9][0-9().-]*)")
_TARGET_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")


def _transfer_targets(p: Problems, key: str, raw: Any) -> tuple[tuple[str, str], ...]:
    """`transfer_targets = { name = "sip:..." | "tel:+..." }` as (name, uri) pairs."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        p.add(key, "must be a table of name = URI", 'write transfer_targets = { desk = '
              '"sip:desk@pbx.example.com" }')
        return ()
    out = []
    for name, uri in raw.items():
        if not _TARGET_NAME_RE.fullmatch(name) or name == "reject":
            p.add(f"{key}.{name}", "is not a usable target name",
                  'use letters, digits, "_" or "-" (at most 32; "reject" is reserved)')
        elif not isinstance(uri, str) or not _TARGET_RE.fullmatch(uri):
            p.add(f"{key}.{name}", f"{uri!r} is not a SIP or tel URI",
                  'write "sip:user@host" or "tel:+4930123456"')
        else:
            out.append((name, uri))
    return tuple(out)


def _route_orga_values(p: Problems, pre: str, values: dict[str, Any]) -> None:
    """A route's model and voice are the reference's ids (a typo fails here, not per call)."""
    _orga_choice(p, f"{pre}.model", values.get("model"), MODELS)
    _orga_choice(p, f"{pre}.voice", values.get("voice"), VOICES)


def _orga_choice(p: Problems, key: str, value: str | None, choices: tuple[str, ...]) -> None:
    if value is not None and value not in choices:
        close = difflib.get_close_matches(value, choices, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "use one of: " + ", ".join(
            choices[:12]) + (" ..." if len(choices) > 12 else "")
        p.add(key, f"{value!r} is not an Orga {key.rsplit('.', 1)[-1]}", hint)


def _orga_fallback(p: Problems, pre: str, values: dict[str, Any],
                   targets: tuple[tuple[str, str], ...]) -> None:
    choice = values.get("on_orga_failure", "reject")
    names = [name for name, _ in targets]
    if choice != "reject" and choice not in names:
        p.add(f"{pre}.on_orga_failure", f"{choice!r} is not \"reject\" or a transfer target "
              "of this route", "use \"reject\" or one of: " + (", ".join(names) or
                                                           "(add transfer_targets first)"))
    path = values.get("orga_failure_announcement")
    if path is not None:
        problem = wav_problem(path)  # the recording announcement's rules
        if problem is not None:
            p.add(f"{pre}.orga_failure_announcement", problem,
                  "give a 16-bit PCM WAV file of at most 60 s")
        if choice == "reject":
            p.add(f"{pre}.orga_failure_announcement", "is set but on_orga_failure is "
                  "\"reject\": it would never play", "set on_orga_failure to a transfer target")


def _webhook_secret(hooks: WebhooksConfig, env: Mapping[str, str], p: Problems) -> Secret:
    """The HMAC key for webhook signatures, from `secret_env` or `secret_file` (never inline)."""
    if not hooks.targets:
        return Secret("")
    if hooks.secret_env is not None:
        value = env.get(hooks.secret_env, "").strip()
        if not value:
            p.add("webhooks.secret_env", f"environment variable {hooks.secret_env} is not set "
                  "or empty", f"export {hooks.secret_env}=... before starting, or use secret_file")
        return Secret(value)
    if hooks.secret_file is not None:
        secret = _secret_file(p, "webhooks.secret_file", hooks.secret_file,
                              "the webhook secret", strip=True)
        return secret if isinstance(secret, Secret) else Secret("")
    return Secret("")


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

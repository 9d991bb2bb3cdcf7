"""Loading a config file into `gateway.config.schema.Config`.

Owns reading the TOML file and putting the document together: unknown top-level names, the
`[section]` tables (built and checked by `rules.py`), the `[[trunks]]` and `[[routes]]` tables,
the TLS files, and secret loading: the Orga API key from `ORGA_API_KEY` or the file named by
`ORGA_API_KEY_FILE`, trunk digest passwords and the webhook secret from the variable or file
they name, never inline. Every problem is collected, never the first only, and phrased
`key: problem — fix`, so an operator fixes a file in one pass (`check-config`). The generic
checks are in `check.py`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from gateway.config.check import (
    API_KEY_ENV,
    API_KEY_FILE_ENV,
    MISSING,
    Problems,
    check_value,
    typed_table,
    unknown_key,
)
from gateway.config.rules import build_sections, check_tls, orga_choice, tls_files
from gateway.config.schema import (
    DEFAULT_ROUTES,
    DEFAULT_TRUNKS,
    DIGEST_ALGORITHMS,
    ApiConfig,
    Config,
    ConfigError,
    Route,
    Secret,
    TrunkConfig,
    WebhooksConfig,
    check_of,
    is_open_public,
    sections,
)
from gateway.orga.catalog import MODELS, VOICES
from gateway.records.announcement import wav_problem

__all__ = ["API_KEY_ENV", "API_KEY_FILE_ENV", "load_config", "parse_config", "read_secret_file",
           "tls_files"]

# Trunk keys with hand-written checks below; `password` is read from one of the two sources.
TRUNK_KEYS = ("name", "allow", "username", "realm", "password_env", "password_file", "max_calls",
              "digest_algorithms", "outbound_password_env", "outbound_password_file")
_TRUNK_FIELDS_BY_HAND = {"name", "allow", "username", "realm", "password", "max_calls",
                         "digest_algorithms", "outbound_password"}


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
            unknown_key(p, name, name, [*known, "trunks", "routes"])
    built = build_sections(raw, p)
    trunks = _trunks(raw.get("trunks"), env, built["security"].allow_unauthenticated_public, p)
    routes = _routes(raw.get("routes"), {t.name for t in trunks}, p)
    if "trunks" in raw and isinstance(raw["trunks"], list) and not raw["trunks"]:
        p.add("trunks", "is empty: no call would ever be accepted",
              'add a [[trunks]] entry (e.g. name = "pbx", allow = ["192.0.2.10/32"])')
    check_tls(p, built["sip"], trunks)
    api_key = _api_key(env, p)
    api_token = _api_token(built["api"], env, p)
    webhook_secret = _webhook_secret(built["webhooks"], env, p)
    if p.items:
        raise ConfigError(p.items)
    return Config(trunks=trunks, routes=routes, api_key=api_key, api_token=api_token,
                  webhook_secret=webhook_secret, **built)


def read_secret_file(path: str) -> str:
    """A secret file's content without the trailing newline editors and `echo` add."""
    return Path(path).read_text(encoding="utf-8").rstrip("\r\n")


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
        _outbound(p, pre, trunk)
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
        if k in ("password", "outbound_password"):
            p.add(f"{pre}.{k}", "inline passwords are not allowed",
                  f"remove it and set {k}_env (a variable name) or {k}_file")
            bad = True
        elif k not in TRUNK_KEYS and k not in generic:
            unknown_key(p, f"{pre}.{k}", k, [*TRUNK_KEYS, *generic])
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
    extra = typed_table(p, pre, table, TrunkConfig, generic) if generic else {}
    for k in generic:
        check_value(p, f"{pre}.{k}", extra.get(k), check_of(TrunkConfig, k))
    bad = bad or any(k in table and k not in extra for k in generic)
    password = _password(p, pre, strs, env)
    if strs["username"] is None and (strs["password_env"] or strs["password_file"]):
        p.add(f"{pre}.username", "a password is configured without a username",
              "add username = \"...\" or remove password_env/password_file")
        bad = True
    outbound_password = _outbound_password(p, pre, table, extra.get("outbound_username"), env)
    if bad or password is MISSING or outbound_password is MISSING or allow is None:
        return None
    return TrunkConfig(name=str(name), allow=allow, username=strs["username"],
                       realm=strs["realm"] or "orga-sip-gateway",
                       password=typing.cast("Secret | None", password), max_calls=max_calls,
                       digest_algorithms=tuple(algorithms),
                       outbound_password=typing.cast("Secret | None", outbound_password), **extra)


def _outbound_password(p: Problems, pre: str, table: Mapping[str, Any],
                       username: str | None, env: Mapping[str, str]) -> Any:
    """The password answering a proxy's challenge to our INVITEs: None without
    outbound_username, `MISSING` on a problem."""
    var, path = table.get("outbound_password_env"), table.get("outbound_password_file")
    for key, value in (("outbound_password_env", var), ("outbound_password_file", path)):
        if value is not None and (not isinstance(value, str) or not value):
            p.add(f"{pre}.{key}", f"{value!r} is not a non-empty string", "write a quoted string")
            return MISSING
    if username is None:
        if var or path:
            p.add(f"{pre}.outbound_username", "an outbound password is configured without a "
                  "username", 'add outbound_username = "..." or remove the password source')
            return MISSING
        return None
    if (var is None) == (path is None):
        p.add(f"{pre}.outbound_password_env", "outbound_username needs exactly one password "
              "source", "set outbound_password_env (a variable name) or outbound_password_file")
        return MISSING
    if var is not None:
        value = env.get(var, "")
        if not value:
            p.add(f"{pre}.outbound_password_env", f"environment variable {var} is not set or "
                  "empty", f"export {var}=... before starting, or use outbound_password_file")
            return MISSING
        return Secret(value)
    return _secret_file(p, f"{pre}.outbound_password_file", str(path), "the password")


_PROXY_URI = re.compile(r"^sip:[A-Za-z0-9.\-\[\]:]+(:\d{1,5})?(;transport=(udp|tcp))?$", re.I)
_FROM_USER = re.compile(r"^\+?[0-9A-Za-z._-]{1,32}$")


def _outbound(p: Problems, pre: str, trunk: TrunkConfig) -> None:
    if trunk.outbound_proxy is not None and not _PROXY_URI.match(trunk.outbound_proxy):
        p.add(f"{pre}.outbound_proxy", f"{trunk.outbound_proxy!r} is not a SIP proxy URI",
              'write "sip:192.0.2.10:5060;transport=udp" (host and port, udp or tcp)')
    if trunk.from_user is not None and not _FROM_USER.match(trunk.from_user):
        p.add(f"{pre}.from_user", f"{trunk.from_user!r} is not a SIP user part",
              'use a number such as "+4930123456" or a name of letters and digits')


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
    """The trunk's password as a `Secret`, None without credentials, `MISSING` on a problem."""
    if strs["username"] is None:
        return None
    var, path = strs["password_env"], strs["password_file"]
    if (var is None) == (path is None):
        p.add(f"{pre}.password_env", "a trunk with a username needs exactly one password source",
              "set password_env (name of an environment variable) or password_file")
        return MISSING
    if var is not None:
        value = env.get(var, "")
        if not value:
            p.add(f"{pre}.password_env", f"environment variable {var} is not set or empty",
                  f"export {var}=... before starting, or use password_file")
            return MISSING
        return Secret(value)
    return _secret_file(p, f"{pre}.password_file", str(path), "the password")


def _secret_file(p: Problems, key: str, path: str, what: str, *, strip: bool = False
                 ) -> Secret | object:
    """A secret read from a file (systemd credential, 0600 file); `MISSING` on a problem.
    Passwords keep inner and trailing spaces (they may be part of them); keys are stripped."""
    try:
        value = read_secret_file(path)
        value = value.strip() if strip else value
    except (OSError, UnicodeDecodeError) as exc:
        p.add(key, f"cannot read {path} ({exc.__class__.__name__})",
              "make it a file readable by the gateway's user (systemd: LoadCredential=)")
        return MISSING
    if not value:
        p.add(key, f"{path} is empty", f"write {what} into it")
        return MISSING
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
        by_hand = {"transfer_targets", "dtmf_transfer"}
        values = typed_table(p, pre, {k: v for k, v in table.items() if k not in by_hand}
                             if isinstance(table, dict) else table, Route)
        match = values.get("match")
        if not isinstance(table, dict):
            continue
        if table.get("instructions") == "":
            values["instructions"] = ""  # Orga's default, not [orga].instructions (the example)
        targets = _transfer_targets(p, f"{pre}.transfer_targets", table.get("transfer_targets"))
        values["transfer_targets"] = targets
        values["dtmf_transfer"] = _dtmf_transfer(p, f"{pre}.dtmf_transfer",
                                                 table.get("dtmf_transfer"), targets)
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
            check_value(p, f"{pre}.{f.name}", values.get(f.name), f.metadata.get("check"))
        out.append(Route(**values))
    return tuple(out)


# A transfer target: a SIP(S) URI with a host, or a global tel: number (RFC 3966).
_TARGET_RE = re.compile(r"(sips?:[^\s<>\"@]+@[^\s<>\"@]+|sips?:[^\s<>\"@:;]+(:\d+)?"
                        r"(;[^\s<>\"]*)?|tel:\+[0-9][0-9().-]*)")
_TARGET_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
_DTMF_KEYS = frozenset("0123456789*#ABCD")


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
    orga_choice(p, f"{pre}.model", values.get("model"), MODELS)
    orga_choice(p, f"{pre}.voice", values.get("voice"), VOICES)


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


def _dtmf_transfer(p: Problems, key: str, raw: Any, targets: tuple[tuple[str, str], ...]
                   ) -> tuple[tuple[str, str], ...]:
    """`dtmf_transfer = { "0" = "operator" }`: one DTMF key to a name of transfer_targets."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        p.add(key, "must be a table of key = target name", 'write dtmf_transfer = { "0" = '
              '"operator" }')
        return ()
    names = [name for name, _ in targets]
    out = []
    for digit, name in raw.items():
        if digit not in _DTMF_KEYS:
            p.add(f"{key}.{digit}", "is not one DTMF key", "use one of 0-9 * # A-D")
        elif name not in names:
            p.add(f"{key}.{digit}", f"{name!r} is not in this route's transfer_targets",
                  f"name one of them ({', '.join(names) or 'none yet'}) or add it there")
        else:
            out.append((digit, name))
    return tuple(out)


def _api_token(api: ApiConfig, env: Mapping[str, str], p: Problems) -> Secret | None:
    """The operator API's bearer token from `[api] token_env` or `token_file`; None: API off."""
    if api.token_env and api.token_file:
        p.add("api.token_env", "both token_env and token_file are set", "keep one of them")
        return None
    if api.token_env:
        value = env.get(api.token_env, "").strip()
        if not value:
            p.add("api.token_env", f"the environment variable {api.token_env} is not set or "
                  "empty", f"export {api.token_env}=<a long random token> (or remove [api] to "
                  "keep the control API off)")
            return None
        return _strong_token(p, "api.token_env", value)
    if api.token_file:
        secret = _secret_file(p, "api.token_file", api.token_file, "the API token", strip=True)
        return _strong_token(p, "api.token_file", secret.reveal()) if isinstance(
            secret, Secret) else None
    return None


def _strong_token(p: Problems, key: str, value: str) -> Secret | None:
    if len(value) < 16:
        p.add(key, f"the token is {len(value)} characters long",
              "use at least 16 random characters (e.g. openssl rand -hex 24)")
        return None
    return Secret(value)


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

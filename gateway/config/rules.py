"""The `[section]` tables: each field's own checks, then the rules between keys (`RULES`).

`build_sections` builds every section of `Config` in file order; after a field's checks it runs
the rule keyed `section.field`, after the whole section the rule keyed `section`, so problems
come out in the order of the example file. A new rule between keys is a function here and one
line in `RULES`. `check_tls` checks the TLS files a config names (needs the trunks too).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.config.check import (
    Problems,
    check_ip,
    check_range,
    check_value,
    in_range,
    is_loopback_host,
    typed_table,
    url_host,
)
from gateway.config.schema import (
    CODECS,
    RECORDING_FORMATS,
    TRANSPORTS,
    WEBHOOK_EVENTS,
    Config,
    RtpConfig,
    SipConfig,
    TrunkConfig,
    WebhooksConfig,
    sections,
    split_hostport,
)
from gateway.orga.catalog import MODELS, VOICES
from gateway.records.announcement import wav_problem
from gateway.transport.tls_context import TlsFiles, check_files
from gateway.workers import layout_problems

Rule = Callable[[Problems, dict[str, Any]], None]


def build_sections(raw: Mapping[str, Any], p: Problems) -> dict[str, Any]:
    """Build each `[section]` in file order. After a field's own checks run the `RULES` keyed
    `section.field`, after the whole section those keyed `section`: problems come out in the
    order of the example file."""
    built: dict[str, Any] = {}
    for name, cls in sections().items():
        section = built[name] = cls(**typed_table(p, name, raw.get(name, {}), cls))
        for f in fields(cls):
            key = f"{name}.{f.name}"
            check_value(p, key, getattr(section, f.name), f.metadata.get("check"))
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
    return in_range(rtp, "port_min") and in_range(rtp, "port_max")


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
    host = url_host(url)
    scheme = url.split(":", 1)[0]
    if scheme not in ("http", "https") or not host:
        p.add("orga.base_url", f"{url!r} is not an http(s) URL", "use https://api.orga-ai.com")
    elif scheme == "http" and not is_loopback_host(host):
        p.add("orga.base_url", "plain http to a non-loopback host would send the API key "
              "unencrypted", "use https:// (http:// is only for a local emulator on 127.0.0.1)")


def orga_choice(p: Problems, key: str, value: str | None, choices: tuple[str, ...]) -> None:
    """A model or voice id must be one the Orga reference lists (a typo fails here, not per
    call); for `[orga]` and for each route's override."""
    if value is not None and value not in choices:
        close = difflib.get_close_matches(value, choices, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "use one of: " + ", ".join(
            choices[:12]) + (" ..." if len(choices) > 12 else "")
        p.add(key, f"{value!r} is not an Orga {key.rsplit('.', 1)[-1]}", hint)


def _http_listen(p: Problems, built: dict[str, Any]) -> None:
    http = built["http"]
    try:
        split_hostport(http.listen)
    except ValueError:
        p.add("http.listen", f"{http.listen!r} is not host:port",
              'use "127.0.0.1:9090" (or "[::1]:9090")')
    else:
        check_ip(p, "http.listen", http.host)
        check_range(p, "http.listen", http.port, 0, 65535)


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
    if not (_rtp_ports_in_range(built["rtp"]) and in_range(built["workers"], "count")):
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


def _mcp_public_url(p: Problems, built: dict[str, Any]) -> None:
    url = built["mcp"].public_url
    if url is None:
        return
    host = url_host(url)
    scheme = url.split(":", 1)[0]
    if scheme not in ("http", "https") or not host:
        p.add("mcp.public_url", f"{url!r} is not an http(s) URL",
              'use the https:// address Orga reaches this gateway at, e.g. "https://gw.example.com"')
    elif scheme == "http" and not is_loopback_host(host):
        p.add("mcp.public_url", "plain http would send each call's tool secret unencrypted",
              "put the gateway behind TLS (a reverse proxy) and use https://")


# Rules a field's `setting` cannot express. "section.field": run right after that field's own
# checks; "section": after the whole section (it may read sections built before it).
RULES: dict[str, Rule] = {
    "sip.transports": _sip_transports,
    "rtp.port_max": _rtp_port_order,
    "rtp.codecs": _rtp_codecs,
    "orga.base_url": _orga_base_url,
    "orga.model": lambda p, built: orga_choice(p, "orga.model", built["orga"].model, MODELS),
    "orga.voice": lambda p, built: orga_choice(p, "orga.voice", built["orga"].voice, VOICES),
    "http.listen": _http_listen,
    "mcp.public_url": _mcp_public_url,
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


def check_tls(p: Problems, sip: SipConfig, trunks: tuple[TrunkConfig, ...]) -> None:
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

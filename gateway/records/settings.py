"""`[webhooks]` and `[recording]`: their settings, defaults and checks.

The config loader hands each raw TOML table to `webhooks_config` / `recording_config` with its
problem reporter; every problem is reported as `key: problem — fix` like the rest of the
config. The webhook secret comes from an environment variable (`secret_env`) or a file
(`secret_file`, e.g. a systemd credential) — never inline — and is held in a `Secret`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.config import Secret, read_secret_file
from gateway.records.record import EVENTS

Report = Callable[[str, str, str], None]  # (key, problem, fix)

DEFAULT_SPOOL_DIR = "/var/lib/orga-sip-gateway/spool"
DEFAULT_RECORDING_DIR = "/var/lib/orga-sip-gateway/recordings"
FORMATS = ("ogg", "wav")
WEBHOOK_KEYS = ("url", "urls", "secret_env", "secret_file", "events", "spool_dir", "spool_max_mb")
RECORDING_KEYS = ("directory", "format", "retention_days", "announcement")


@dataclass(frozen=True, slots=True)
class WebhooksConfig:
    urls: tuple[str, ...] = ()
    events: tuple[str, ...] = ("call.ended",)
    spool_dir: str = DEFAULT_SPOOL_DIR
    spool_max_mb: float = 100.0
    secret: Secret = field(default=Secret(""), repr=False, compare=False)

    @property
    def enabled(self) -> bool:
        return bool(self.urls)


@dataclass(frozen=True, slots=True)
class RecordingConfig:
    directory: str = DEFAULT_RECORDING_DIR
    format: str = "ogg"
    retention_days: float = 0.0  # 0 = keep until the operator deletes them
    announcement: str | None = None


def webhooks_config(raw: Any, env: Mapping[str, str], report: Report) -> WebhooksConfig:
    """`[webhooks]` checked; an absent table means no webhooks."""
    if raw is None:
        return WebhooksConfig()
    if not isinstance(raw, dict):
        report("webhooks", "must be a table", 'write [webhooks] with url = "https://..."')
        return WebhooksConfig()
    for key in raw:
        if key not in WEBHOOK_KEYS:
            report(f"webhooks.{key}", "unknown key", "remove it (known keys: "
                   + ", ".join(WEBHOOK_KEYS) + ")")
    urls = _urls(raw, report)
    events = _events(raw.get("events", ["call.ended"]), report)
    spool_dir = raw.get("spool_dir", DEFAULT_SPOOL_DIR)
    if not isinstance(spool_dir, str) or not spool_dir:
        report("webhooks.spool_dir", "must be a directory path",
               f'set spool_dir = "{DEFAULT_SPOOL_DIR}"')
        spool_dir = DEFAULT_SPOOL_DIR
    max_mb = raw.get("spool_max_mb", 100)
    if not _number(max_mb) or not 1 <= max_mb <= 100_000:
        report("webhooks.spool_max_mb", f"{max_mb!r} is not between 1 and 100000",
               "set the spool's bound in MB, e.g. spool_max_mb = 100")
        max_mb = 100
    secret = _secret(raw, env, report) if urls else Secret("")
    return WebhooksConfig(urls=urls, events=events, spool_dir=spool_dir,
                          spool_max_mb=float(max_mb), secret=secret)


def recording_config(raw: Any, report: Report) -> RecordingConfig:
    """`[recording]` checked; recording itself is switched on per route (`record = true`)."""
    if raw is None:
        return RecordingConfig()
    if not isinstance(raw, dict):
        report("recording", "must be a table", 'write [recording] with format = "ogg"')
        return RecordingConfig()
    for key in raw:
        if key not in RECORDING_KEYS:
            report(f"recording.{key}", "unknown key", "remove it (known keys: "
                   + ", ".join(RECORDING_KEYS) + ")")
    directory = raw.get("directory", DEFAULT_RECORDING_DIR)
    if not isinstance(directory, str) or not directory:
        report("recording.directory", "must be a directory path",
               f'set directory = "{DEFAULT_RECORDING_DIR}"')
        directory = DEFAULT_RECORDING_DIR
    fmt = raw.get("format", "ogg")
    if fmt not in FORMATS:
        report("recording.format", f"{fmt!r} is not a known format",
               'use "ogg" (Opus, small) or "wav" (16-bit PCM)')
        fmt = "ogg"
    days = raw.get("retention_days", 0)
    if not _number(days) or not 0 <= days <= 36500:
        report("recording.retention_days", f"{days!r} is not between 0 and 36500",
               "set the days to keep recordings (0 keeps them until you delete them)")
        days = 0
    announcement = raw.get("announcement")
    if announcement is not None and (not isinstance(announcement, str)
                                     or not os.access(announcement, os.R_OK)):
        report("recording.announcement", f"cannot read {announcement!r}",
               "name a readable WAV file, or remove the key")
        announcement = None
    return RecordingConfig(directory=directory, format=str(fmt), retention_days=float(days),
                           announcement=announcement)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _urls(raw: Mapping[str, Any], report: Report) -> tuple[str, ...]:
    if "url" in raw and "urls" in raw:
        report("webhooks.url", "both url and urls are set", "keep one of them")
    value = raw.get("urls", raw.get("url"))
    if value is None:
        report("webhooks.url", "missing", 'add url = "https://crm.example/hooks/calls"')
        return ()
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values:
        report("webhooks.urls", "must be a URL or a non-empty array of URLs",
               'write urls = ["https://a.example/hook", "https://b.example/hook"]')
        return ()
    good = []
    for url in values:
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            report("webhooks.url", f"{url!r} is not an http(s) URL",
                   'write a full URL, e.g. "https://crm.example/hooks/calls"')
        else:
            good.append(url)
    return tuple(good)


def _events(value: Any, report: Report) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or any(e not in EVENTS for e in value):
        report("webhooks.events", f"{value!r} is not a list of known events",
               "use some of: " + ", ".join(f'"{e}"' for e in EVENTS))
        return ("call.ended",)
    return tuple(dict.fromkeys(value))


def _secret(raw: Mapping[str, Any], env: Mapping[str, str], report: Report) -> Secret:
    var, path = raw.get("secret_env"), raw.get("secret_file")
    if (var is None) == (path is None):
        report("webhooks.secret_env", "webhooks need exactly one secret source",
               "set secret_env (name of an environment variable) or secret_file")
        return Secret("")
    if var is not None:
        value = env.get(str(var), "").strip()
        if not value:
            report("webhooks.secret_env", f"environment variable {var} is not set or empty",
                   f"export {var}=... before starting, or use secret_file")
        return Secret(value)
    try:
        value = read_secret_file(str(path)).strip()
    except (OSError, UnicodeDecodeError) as exc:
        report("webhooks.secret_file", f"cannot read {path} ({exc.__class__.__name__})",
               "make it a file readable by the gateway's user (systemd: LoadCredential=)")
        return Secret("")
    if not value:
        report("webhooks.secret_file", f"{path} is empty", "write the webhook secret into it")
    return Secret(value)


def spool_directory(config: WebhooksConfig, url: str) -> Path:
    """Each receiver has its own spool (its own order and its own outages)."""
    return Path(config.spool_dir) / hashlib.sha256(url.encode()).hexdigest()[:16]

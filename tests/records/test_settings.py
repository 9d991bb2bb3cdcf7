"""`[webhooks]` and `[recording]`: defaults, secrets from env or file, `key: problem — fix`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.records.settings import (
    RecordingConfig,
    WebhooksConfig,
    recording_config,
    webhooks_config,
)


def _check(raw: Any, env: dict[str, str] | None = None) -> tuple[WebhooksConfig, list[str]]:
    problems: list[str] = []
    cfg = webhooks_config(raw, env or {}, lambda k, p, f: problems.append(f"{k}: {p} — {f}"))
    return cfg, problems


def test_absent_table_means_no_webhooks() -> None:
    cfg, problems = _check(None)
    assert not cfg.enabled and problems == []


def test_url_secret_from_env_and_defaults() -> None:
    cfg, problems = _check({"url": "https://crm.example/h", "secret_env": "HOOK"},
                           {"HOOK": "k1 "})
    assert problems == []
    assert cfg.urls == ("https://crm.example/h",) and cfg.events == ("call.ended",)
    assert cfg.secret.reveal() == "k1" and "k1" not in repr(cfg)
    assert cfg.spool_max_mb == 100.0


def test_secret_from_file(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("from-file\n")
    cfg, problems = _check({"urls": ["http://127.0.0.1:1/a", "http://127.0.0.1:2/b"],
                            "secret_file": str(path), "events": ["call.ended", "transcript"]})
    assert problems == [] and cfg.secret.reveal() == "from-file" and len(cfg.urls) == 2


@pytest.mark.parametrize("raw, key", [
    ({"url": "ftp://x/y", "secret_env": "HOOK"}, "webhooks.url"),
    ({"secret_env": "HOOK"}, "webhooks.url"),
    ({"url": "https://x/y"}, "webhooks.secret_env"),
    ({"url": "https://x/y", "secret_env": "MISSING"}, "webhooks.secret_env"),
    ({"url": "https://x/y", "secret_file": "/nonexistent/secret"}, "webhooks.secret_file"),
    ({"url": "https://x/y", "secret_env": "HOOK", "events": ["call.done"]}, "webhooks.events"),
    ({"url": "https://x/y", "secret_env": "HOOK", "spool_max_mb": 0}, "webhooks.spool_max_mb"),
    ({"url": "https://x/y", "secret_env": "HOOK", "spool": "/x"}, "webhooks.spool"),
])
def test_bad_webhooks_are_reported(raw: dict[str, Any], key: str) -> None:
    _, problems = _check(raw, {"HOOK": "k"})
    assert len(problems) == 1 and problems[0].startswith(f"{key}: ") and " — " in problems[0]


def test_recording_defaults_and_problems(tmp_path: Path) -> None:
    problems: list[str] = []

    def report(k: str, p: str, f: str) -> None:
        problems.append(f"{k}: {p} — {f}")

    assert recording_config(None, report) == RecordingConfig()
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"RIFF")
    cfg = recording_config({"format": "wav", "retention_days": 30, "announcement": str(wav),
                            "directory": str(tmp_path)}, report)
    assert problems == [] and cfg.format == "wav" and cfg.retention_days == 30
    recording_config({"format": "mp3", "retention_days": -1, "announcement": "/no/such.wav"},
                     report)
    assert [p.split(":")[0] for p in problems] == ["recording.format", "recording.retention_days",
                                                   "recording.announcement"]

"""`[webhooks]`, `[recording]` and `record = true`: defaults, secrets from env or file, and
every problem as `key: problem — fix`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.config import ConfigError, RecordingConfig, WebhooksConfig, parse_config
from tests.integration.baresip import write_wav

ENV = {"ORGA_API_KEY": "sk_test", "HOOK": "k1 "}


def _parse(raw: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    return parse_config(raw, {**ENV, **(env or {})})


def _problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        _parse(raw)
    return list(err.value.problems)


def test_defaults_mean_no_webhooks_and_no_recording() -> None:
    cfg = _parse({})
    assert cfg.webhooks == WebhooksConfig() and not cfg.webhooks.targets
    assert cfg.recording == RecordingConfig() and cfg.recording.format == "ogg"
    assert cfg.webhooks.events == ("call.ended",) and cfg.webhooks.spool_max_mb == 100
    assert not any(route.record for route in cfg.routes)


def test_url_secret_from_env() -> None:
    cfg = _parse({"webhooks": {"url": "https://crm.example/h", "secret_env": "HOOK"}})
    assert cfg.webhooks.targets == ("https://crm.example/h",)
    assert cfg.webhook_secret.reveal() == "k1"
    assert "k1" in cfg.secrets() and "k1" not in repr(cfg)


def test_urls_secret_from_file_events_and_recording(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    wav = write_wav(tmp_path / "a.wav", np.zeros(800, np.int16))
    cfg = _parse({
        "webhooks": {"urls": ["http://127.0.0.1:1/a", "http://127.0.0.1:2/b"],
                     "secret_file": str(secret), "events": ["call.ended", "transcript"]},
        "recording": {"format": "wav", "retention_days": 30, "announcement": str(wav),
                      "directory": str(tmp_path)},
        "routes": [{"match": "800*", "record": True}, {"match": "*"}],
    })
    assert cfg.webhook_secret.reveal() == "from-file" and len(cfg.webhooks.targets) == 2
    assert cfg.webhooks.events == ("call.ended", "transcript")
    assert cfg.recording.format == "wav" and cfg.recording.retention_days == 30
    assert [r.record for r in cfg.routes] == [True, False]


@pytest.mark.parametrize("table, key", [
    ({"webhooks": {"url": "ftp://x/y", "secret_env": "HOOK"}}, "webhooks.url"),
    ({"webhooks": {"url": "https://x/y", "urls": ["https://x/z"], "secret_env": "HOOK"}},
     "webhooks.url"),
    ({"webhooks": {"url": "https://x/y"}}, "webhooks.secret_env"),
    ({"webhooks": {"url": "https://x/y", "secret_env": "MISSING"}}, "webhooks.secret_env"),
    ({"webhooks": {"url": "https://x/y", "secret_file": "/nonexistent/s"}},
     "webhooks.secret_file"),
    ({"webhooks": {"url": "https://x/y", "secret_env": "HOOK", "events": ["call.done"]}},
     "webhooks.events"),
    ({"webhooks": {"url": "https://x/y", "secret_env": "HOOK", "spool_max_mb": 0}},
     "webhooks.spool_max_mb"),
    ({"webhooks": {"url": "https://x/y", "secret": "inline"}}, "webhooks.secret"),
    ({"recording": {"format": "mp3"}}, "recording.format"),
    ({"recording": {"retention_days": -1}}, "recording.retention_days"),
    ({"recording": {"announcement": "/no/such.wav"}}, "recording.announcement"),
    ({"routes": [{"match": "*", "record": "yes"}]}, "routes[0].record"),
])
def test_bad_values_are_reported(table: dict[str, Any], key: str) -> None:
    problems = _problems(table)
    assert problems and problems[0].startswith(f"{key}: ") and " — " in problems[0], problems

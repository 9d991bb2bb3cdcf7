import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNITS = [ROOT / "systemd" / "orga-sip-gateway.service",
         ROOT / "systemd" / "orga-sip-gateway@.service"]


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """systemd unit syntax: sections, repeatable keys, comments; no continuation lines used."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: key outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not key=value: {line}"
        assert not line.endswith("\\"), "continuation lines are not expected"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def default_drain_timeout() -> float:
    raw = tomllib.loads((ROOT / "config" / "gateway.example.toml").read_text())
    return float(raw["limits"]["drain_timeout_s"])


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_unit_has_required_directives(path: Path) -> None:
    unit = parse_unit(path)
    svc = unit["Service"]

    def one(key: str) -> str:
        assert key in svc, f"{key} missing"
        return svc[key][-1]

    assert one("Type") == "notify"
    assert int(one("WatchdogSec")) > 0
    assert int(one("TimeoutStopSec")) > default_drain_timeout()
    assert one("ExecStart").startswith("/usr/bin/env orga-sip-gateway run --config /etc/")
    assert one("LoadCredential").startswith("orga-api-key:/etc/orga-sip-gateway/")
    assert "ORGA_API_KEY_FILE=%d/orga-api-key" in svc["Environment"]
    assert not any(e.startswith("ORGA_API_KEY=") for e in svc["Environment"])
    assert one("DynamicUser") == "yes" and one("User")
    # Records, spool and recordings live under a directory only this service can read.
    assert one("StateDirectory").startswith("orga-sip-gateway")
    assert one("StateDirectoryMode") == "0700"
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices",
                "ProtectKernelTunables", "ProtectKernelModules", "ProtectControlGroups",
                "RestrictNamespaces", "RestrictSUIDSGID", "LockPersonality"):
        assert one(key) == "yes", key
    assert one("ProtectSystem") == "strict"
    assert one("CapabilityBoundingSet") == ""
    assert set(one("RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX",
                                                            "AF_NETLINK"}
    assert "@system-service" in svc["SystemCallFilter"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    assert "network-online.target" in unit["Unit"]["After"][0]


def test_template_runs_worker_n_of_one_shared_config() -> None:
    """orga-sip-gateway@2 is `run --worker 2` of gateway.toml (its ports derived from it)."""
    from gateway.cli import build_parser

    svc = parse_unit(UNITS[1])["Service"]
    command = svc["ExecStart"][0]
    assert command.endswith("run --config /etc/orga-sip-gateway/gateway.toml --worker %i")
    args = build_parser().parse_args(command.split(" orga-sip-gateway ", 1)[1]
                                     .replace("%i", "2").split())
    assert (args.config, args.worker) == ("/etc/orga-sip-gateway/gateway.toml", 2)
    assert "%i" in svc["User"][0]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_systemd_analyze_verify_is_clean(path: Path) -> None:
    out = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True,
                         text=True, timeout=60)
    # verify prints "Unknown key", "Failed to parse" etc. on stderr while often exiting 0.
    assert out.returncode == 0 and out.stderr.strip() == "", out.stderr

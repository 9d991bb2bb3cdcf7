"""deploy/kamailio as an operator installs it: the config parses with the defines the docs and
the systemd drop-in pass (`kamailio -c`), and the drop-in keeps Debian's unit's own options."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from tests.integration.cluster import KAMAILIO, KAMAILIO_CFG

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kamailio"

pytestmark = pytest.mark.skipif(KAMAILIO is None, reason="kamailio is not installed")


def check(*defines: str) -> subprocess.CompletedProcess[str]:
    assert KAMAILIO is not None
    args = [KAMAILIO, "-c", "-f", str(KAMAILIO_CFG)]
    for define in defines:
        args += ["-A", define]
    return subprocess.run(args, capture_output=True, text=True, timeout=30)


def test_config_parses_with_the_documented_defines() -> None:
    run = check("LISTEN=udp:127.0.0.1:5999", f'DISPATCHER_LIST="{DEPLOY / "dispatcher.list"}"')
    assert run.returncode == 0 and "config file ok" in run.stdout + run.stderr, run.stderr


def test_systemd_drop_in_passes_listen_and_keeps_debians_options() -> None:
    text = (DEPLOY / "kamailio.service.d-orga.conf").read_text()
    starts = [line.split("=", 1)[1] for line in text.splitlines()
              if line.startswith("ExecStart=")]
    assert starts[0] == ""  # clears Debian's ExecStart before setting ours
    argv = shlex.split(starts[1])
    assert argv[0] == "/usr/sbin/kamailio"
    assert {"-P", "-f", "-m", "-M"} <= set(argv)  # Debian's pid file, config and memory
    defines = [argv[i + 1] for i, a in enumerate(argv) if a == "-A"]
    assert [d.split("=", 1)[0] for d in defines] == ["LISTEN"]
    run = check(*defines)
    assert run.returncode == 0, run.stderr

"""The README's first quick-start command: `orga-sip-gateway demo` (what `make demo` runs).

Runs it as a newcomer would, as a subprocess, on a copy of config/demo.toml moved to free
ports so it cannot collide with anything else on the machine.
"""

import re
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_demo_places_a_call_and_hears_the_agent(tmp_path: Path) -> None:
    text = (ROOT / "config" / "demo.toml").read_text()
    sip, emu, http = _free_port(socket.SOCK_DGRAM), _free_port(), _free_port()
    text = re.sub(r"(?m)^port = 5080$", f"port = {sip}", text)
    text = text.replace("127.0.0.1:8089", f"127.0.0.1:{emu}")
    text = text.replace("127.0.0.1:9090", f"127.0.0.1:{http}")
    text = re.sub(r"port_min = \d+", "port_min = 47200", text)
    text = re.sub(r"port_max = \d+", "port_max = 47299", text)
    config = tmp_path / "demo.toml"
    config.write_text(text)
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--config", str(config), "--seconds", "6"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "PASS: call connected and a reply was heard" in out.stdout
    ended = r'calls_ended_total\{result="caller_bye",route="\*",trunk="loopback"\} 1'
    assert re.search(ended, out.stdout)
    assert "demo: stopped" in out.stdout

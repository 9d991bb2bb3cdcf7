import subprocess
import sys

import pytest

from gateway.clock import FakeClock


def test_cli_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("orga-sip-gateway ")


def test_fake_clock_steps_and_never_goes_back() -> None:
    clock = FakeClock(10.0)
    assert clock.advance(0.5) == 10.5
    with pytest.raises(ValueError):
        clock.set(1.0)

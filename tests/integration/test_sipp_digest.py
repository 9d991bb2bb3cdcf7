"""SIPp as a digest-authenticating PBX (issue 7 item 1) against the whole gateway: INVITE → 401
→ ACK → INVITE with SIPp's own `[authentication]` answer → 200 → ACK → BYE, over UDP and TCP.
SIPp computes the digest itself, so this proves a third-party client interoperates.

SIPp 3.6 answers only the first `WWW-Authenticate` and knows only MD5 (RFC 8760 §2.4 asks a
UAC to use the first it *supports*): with our default SHA-256-first challenge it gives up.
That is what `digest_algorithms = ["MD5"]` on a trunk is for; both cases are tested."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import Config
from gateway.emulator.server import Emulator
from tests.edge.harness import DIGEST_PASSWORD, DIGEST_USER, make_config, running, trunk
from tests.integration.sipp import SIPP, run_sipp

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SIPP is None, reason="sipp is not installed (apt-get install sip-tester)"),
]


def config(emu: Emulator) -> Config:
    return make_config(emu, trunks=(trunk("pbx", "127.0.0.1/32", auth=True,
                                          algorithms=("MD5",)),))


def auth_uri(port: int) -> tuple[str, str]:
    """SIPp's digest uri defaults to sip:host:port; ours must equal the Request-URI (RFC 7616
    §3.4.6), so name it (SIPp adds the "sip:")."""
    return ("-auth_uri", f"agent@127.0.0.1:{port}")


@pytest.mark.parametrize("transport", ["u1", "t1"])
async def test_sipp_digest_call(tmp_path: Path, transport: str) -> None:
    async with running(config) as rig:
        port = rig.udp[1] if transport == "u1" else rig.tcp[1]
        run = await run_sipp("uac_digest_call.xml", port, tmp_path, transport=transport,
                             extra=("-au", DIGEST_USER, "-ap", DIGEST_PASSWORD, *auth_uri(port)))
        assert run.returncode == 0, run.stderr
        assert (run.successful, run.failed) == (1, 0)
        assert len(run.received("SIP/2.0 401")) == 1
        assert len(run.received("SIP/2.0 200")) == 2  # the authenticated INVITE and the BYE
        assert rig.emulator.stats.client_secrets_requests == 1
        await rig.idle()
        metrics = (await rig.http_get("/metrics")).decode()
        assert 'orga_gateway_calls_ended_total{result="caller_bye",route="*",trunk="pbx"} 1.0' \
            in metrics


async def test_sipp_wrong_password_never_reaches_orga(tmp_path: Path) -> None:
    async with running(config) as rig:
        run = await run_sipp("uac_digest_call.xml", rig.udp[1], tmp_path, timeout=5,
                             extra=("-au", DIGEST_USER, "-ap", "not-the-password",
                                    *auth_uri(rig.udp[1])))
        assert run.successful == 0 and run.returncode != 0
        assert len(run.received("SIP/2.0 401")) >= 2  # the wrong answer is challenged again
        assert not run.received("SIP/2.0 200")
        assert rig.emulator.stats.client_secrets_requests == 0


async def test_sipp_3_6_cannot_answer_a_sha256_first_challenge(tmp_path: Path) -> None:
    """Documents the interop limit that `digest_algorithms` exists for."""
    def default_trunk(emu: Emulator) -> Config:
        return make_config(emu, trunks=(trunk("pbx", "127.0.0.1/32", auth=True),))

    async with running(default_trunk) as rig:
        run = await run_sipp("uac_digest_call.xml", rig.udp[1], tmp_path, timeout=5,
                             extra=("-au", DIGEST_USER, "-ap", DIGEST_PASSWORD,
                                    *auth_uri(rig.udp[1])))
        assert run.successful == 0
        assert "MD5" in run.stderr
        assert rig.emulator.stats.client_secrets_requests == 0

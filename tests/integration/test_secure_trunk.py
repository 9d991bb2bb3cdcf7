"""Secure trunks end to end (issue 15 item 3), the gateway and the emulator in this process:

- baresip dials over SIP/TLS with `mediaenc=srtp-mand` (RTP/SAVP + a=crypto): the emulator hears
  its 440 Hz utterance through our SRTP receive path and baresip records the agent's 660/880 Hz
  reply through our SRTP send path — audio checked by content both ways. While that call runs a
  client connects to the TLS port and stalls its handshake: the header timeout closes it and the
  call is not disturbed;
- a plain-RTP caller against a `srtp = "required"` trunk gets 488 with Warning 302;
- on a trunk with `tls_client_ca`, clients with no or a foreign certificate are refused in the
  handshake, and baresip presenting a certificate the CA signed gets its call through.

Certificates are made in the test with `cryptography` (tests/certs.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest

from gateway.config import TrunkConfig
from gateway.emulator.audio import REPLY_DOMINANT_HZ, dominant_frequency, level_dbfs
from tests.certs import Ca, Issued, issue, make_ca
from tests.edge.harness import Caller, final_for
from tests.integration.baresip import BARESIP, BaresipTls, baresip_call, write_wav
from tests.integration.pcap import silence, tone
from tests.integration.stack import Stack, free_sip_port, value_of, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(BARESIP is None, reason="baresip is not installed (apt-get install "
                       "baresip)"),
]
LOOPBACK_NET = (ipaddress.ip_network("127.0.0.0/8"),)


class Pki:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(exist_ok=True)
        self.ca: Ca = make_ca(directory, "Gateway CA")
        self.other: Ca = make_ca(directory, "Other CA")
        self.server: Issued = issue(self.ca, directory, "gateway")
        self.client: Issued = issue(self.ca, directory, "pbx", names=("pbx.example",),
                                    client=True)
        self.stranger: Issued = issue(self.other, directory, "stranger",
                                      names=("pbx.example",), client=True)

    def bundle(self, leaf: Issued) -> Path:
        """Certificate and key in one PEM, as baresip's sip_certificate wants them."""
        path = self.dir / f"{leaf.cert.stem}-bundle.pem"
        path.write_bytes(leaf.cert.read_bytes() + leaf.key.read_bytes())
        path.chmod(0o600)
        return path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@asynccontextmanager
async def secure_stack(pki: Pki, *, srtp: str = "required", mtls: bool = False,
                       header_timeout: float = 5.0) -> AsyncIterator[Stack]:
    trunk = TrunkConfig(name="pbx", allow=LOOPBACK_NET, srtp=srtp,
                        tls_client_ca=str(pki.ca.cert) if mtls else None)
    stack = Stack(sip={"transports": ("udp", "tcp", "tls"), "tls_port": free_sip_port(),
                       "tls_certificate": str(pki.server.cert),
                       "tls_private_key": str(pki.server.key)},
                  security={"tcp_header_timeout_s": header_timeout}, trunks=(trunk,))
    await stack.start()
    try:
        yield stack
    finally:
        await stack.stop()


def tls_target(stack: Stack) -> str:
    return f"sip:+4930123@127.0.0.1:{stack.gw.config.sip.tls_port};transport=tls"


def loud_frames(heard: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
    pcm = heard.astype(np.float32) / 32768.0
    frames = [pcm[i:i + 160] for i in range(0, pcm.size - 159, 160)]
    return frames, [level_dbfs(f) for f in frames]


async def test_baresip_tls_srtp_mandatory_audio_both_ways_while_a_handshake_stalls(
        pki: Pki, tmp_path: Path) -> None:
    async with secure_stack(pki, header_timeout=1.0) as stack:
        wav = write_wav(tmp_path / "talk.wav", np.concatenate([tone(440.0, 1.0), silence(6.0)]))
        call = asyncio.create_task(baresip_call(
            tls_target(stack), tmp_path / "baresip", wav, seconds=6,
            tls=BaresipTls(pki.ca.cert), mediaenc="srtp-mand"))
        await wait_until(lambda: bool(stack.gw.registry and stack.gw.registry.calls), 10,
                         "the TLS call to arrive")
        # A client that connects to the TLS port and never finishes its handshake.
        loop = asyncio.get_running_loop()
        stalled_at = loop.time()
        reader, writer = await asyncio.open_connection("127.0.0.1",
                                                       stack.gw.config.sip.tls_port)
        writer.write(b"\x16\x03\x01\x00")
        assert await asyncio.wait_for(reader.read(), 10) == b""
        closed_after = loop.time() - stalled_at
        writer.close()
        calls = await stack.calls()
        run = await call

        # Closed by the 1 s header timeout (not before it; the bound above allows a busy box).
        assert 0.8 < closed_after < 6.0, closed_after
        assert "Call established" in run.output, run.output[-2000:]
        assert "SRTP is Enabled" in run.output, run.output[-2000:]
        assert len(calls) == 1 and calls[0].get("srtp") == "AES_CM_128_HMAC_SHA1_80", calls
        # Phone → AI: the emulator heard the caller's tone through our SRTP receive path.
        (session,) = stack.emulator_sessions()
        (utterance,) = session["utterances"]
        assert utterance["dominant_hz"] == pytest.approx(440, abs=10)
        # AI → phone: baresip decrypted and decoded the agent's reply.
        frames, levels = loud_frames(run.heard)
        loud = [f for f, level in zip(frames, levels, strict=True) if level > -30]
        assert len(loud) * 0.02 >= 0.9, levels
        reply = np.concatenate(loud)
        assert dominant_frequency(reply, 8000) == pytest.approx(REPLY_DOMINANT_HZ, abs=10)

        await stack.assert_clean()
        metrics = await stack.metrics()
        assert value_of(metrics, "orga_gateway_calls_ended_total", result="caller_bye") == 1
        assert value_of(metrics, "orga_gateway_security_rejections_total",
                        reason="tls_handshake_timeout") == 1
        srtp_failures = [s for s in metrics if s.name == "orga_gateway_rtp_srtp_failures_total"]
        assert sum(s.value for s in srtp_failures) == 0


async def test_plain_caller_against_srtp_required_trunk_gets_488(pki: Pki) -> None:
    async with secure_stack(pki) as stack:
        caller = Caller(("127.0.0.1", stack.sip_port))
        await caller.start()
        try:
            uri = f"sip:+4930123@127.0.0.1:{stack.sip_port}"
            offer = (b"v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
                     b"t=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
            data, _ = caller.request("INVITE", uri, call_id="plain@test", cseq=1,
                                     from_tag="p1", body=offer)
            caller.send(data)
            final = await caller.wait(final_for("plain@test", 1), 10)
            assert final.status == 488
            warning = final.header("Warning") or ""
            assert warning.startswith("302 ") and "SRTP" in warning, warning
        finally:
            caller.close()
        await stack.assert_clean()


async def test_mtls_trunk_refuses_strangers_at_the_handshake_and_takes_its_pbx(
        pki: Pki, tmp_path: Path) -> None:
    async with secure_stack(pki, srtp="optional", mtls=True) as stack:
        port = stack.gw.config.sip.tls_port
        for cert in (None, pki.stranger):
            ctx = ssl.create_default_context(cafile=str(pki.ca.cert))
            if cert is not None:
                ctx.load_cert_chain(str(cert.cert), str(cert.key))
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                           server_hostname="127.0.0.1")
            with pytest.raises((ssl.SSLError, ConnectionResetError)):
                writer.write(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n\r\n")
                if await asyncio.wait_for(reader.read(), 5) == b"":
                    raise ConnectionResetError("closed")
            writer.close()
        wav = write_wav(tmp_path / "talk.wav", np.concatenate([tone(440.0, 1.0), silence(2.0)]))
        run = await baresip_call(tls_target(stack), tmp_path / "baresip", wav, seconds=3,
                                 tls=BaresipTls(pki.ca.cert, pki.bundle(pki.client)),
                                 mediaenc="srtp-mand")
        assert "Call established" in run.output, run.output[-2000:]
        await stack.assert_clean()
        metrics = await stack.metrics()
        assert value_of(metrics, "orga_gateway_security_rejections_total",
                        reason="tls_client_certificate") == 2
        assert value_of(metrics, "orga_gateway_calls_ended_total", result="caller_bye") == 1


async def test_reload_swaps_the_certificate_and_keeps_connections(pki: Pki) -> None:
    """SIGHUP's handler: renewed files are used for new connections, an established one goes
    on; a broken file keeps the certificate in use."""
    async with secure_stack(pki, srtp="optional") as stack:
        port = stack.gw.config.sip.tls_port
        ctx = ssl.create_default_context(cafile=str(pki.ca.cert))

        async def options(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          branch: str) -> bytes:
            writer.write((f"OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;"
                          f"branch={branch}\r\nFrom: <sip:t@127.0.0.1>;tag=1\r\nTo: "
                          f"<sip:gw@127.0.0.1>\r\nCall-ID: {branch}\r\nCSeq: 1 OPTIONS\r\n"
                          "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode())
            return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)

        def peer_cert(writer: asyncio.StreamWriter) -> bytes:
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            assert der is not None
            return bytes(der)

        old = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                            server_hostname="127.0.0.1")
        before = peer_cert(old[1])
        renewed = issue(pki.ca, pki.dir, "renewed")
        pki.server.cert.write_bytes(renewed.cert.read_bytes())
        pki.server.key.write_bytes(renewed.key.read_bytes())
        assert stack.gw.reload_tls()
        assert (await options(*old, "z9hG4bK-old")).startswith(b"SIP/2.0 200")
        new = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                            server_hostname="127.0.0.1")
        after = peer_cert(new[1])
        assert after != before
        pki.server.key.write_text("not a key\n")
        assert not stack.gw.reload_tls()  # logged; the renewed certificate stays in use
        third = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                              server_hostname="127.0.0.1")
        assert peer_cert(third[1]) == after
        assert (await options(*third, "z9hG4bK-third")).startswith(b"SIP/2.0 200")
        for _, writer in (old, new, third):
            writer.close()


async def test_daemon_reloads_its_certificate_on_sighup(pki: Pki, tmp_path: Path) -> None:
    """`orga-sip-gateway run` as a process: SIGHUP swaps the certificate for new connections,
    an established connection goes on, and SIGTERM still drains and exits 0."""
    import os
    import signal

    from tests.integration.stack import API_KEY, free_udp_range
    from tests.integration.test_e2e_cli import Process

    sip_port, tls_port = free_sip_port(), free_sip_port()
    rtp_min, rtp_max = free_udp_range(10)
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[sip]\nbind = "127.0.0.1"\nport = {sip_port}\ntransports = ["udp", "tls"]\n'
        f'tls_port = {tls_port}\ntls_certificate = "{pki.server.cert}"\n'
        f'tls_private_key = "{pki.server.key}"\n\n[rtp]\nbind = "127.0.0.1"\n'
        f"port_min = {rtp_min}\nport_max = {rtp_max}\n\n"
        '[orga]\nbase_url = "http://127.0.0.1:9"\n\n[http]\nlisten = "127.0.0.1:0"\n\n'
        "[limits]\nmax_calls = 4\n\n"
        '[[trunks]]\nname = "pbx"\nallow = ["127.0.0.0/8"]\nsrtp = "required"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORGA_", "NOTIFY_"))}
    gateway = await Process.start("run", "--config", str(config),
                                  env={**env, "ORGA_API_KEY": API_KEY})
    ctx = ssl.create_default_context(cafile=str(pki.ca.cert))

    async def peer_cert() -> tuple[bytes, asyncio.StreamWriter]:
        _, writer = await asyncio.open_connection("127.0.0.1", tls_port, ssl=ctx,
                                                  server_hostname="127.0.0.1")
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert der is not None
        return bytes(der), writer

    try:
        await gateway.wait_for_line(r"gateway ready: .*TLS :\d+")
        try:
            before, old = await peer_cert()
        except Exception:
            await asyncio.sleep(0.5)
            print("\n".join(gateway.lines))
            raise
        renewed = issue(pki.ca, pki.dir, "renewed")
        pki.server.cert.write_bytes(renewed.cert.read_bytes())
        pki.server.key.write_bytes(renewed.key.read_bytes())
        assert gateway.proc.returncode is None
        gateway.proc.send_signal(signal.SIGHUP)
        await gateway.wait_for_line(r"TLS certificate reloaded \(generation 2\)")
        after, new = await peer_cert()
        assert after != before and not old.is_closing()
        old.close()
        new.close()
        assert await gateway.stop(signal.SIGTERM) == 0
        log = "\n".join(gateway.lines)
        assert pki.server.key.read_text().splitlines()[1] not in log
    finally:
        await gateway.stop(signal.SIGINT)


async def test_probe_places_a_tls_srtp_call_and_a_plain_one_is_refused(pki: Pki) -> None:
    """The operator's probe speaks TLS and SDES-SRTP: it hears the agent over an encrypted
    call, and the same trunk refuses its plain-RTP offer with 488."""
    from gateway.probe.phone import ProbeOptions, place_call

    async with secure_stack(pki) as stack:
        target = tls_target(stack)
        report = await place_call(target, ProbeOptions(srtp=True, ca_file=str(pki.ca.cert),
                                                       seconds=4.0))
        assert report.connected and report.transport == "tls", report
        assert report.srtp == "AES_CM_128_HMAC_SHA1_80"
        assert report.reply_heard and report.packets_received > 50, report
        plain = await place_call(target, ProbeOptions(ca_file=str(pki.ca.cert), seconds=1.0))
        assert not plain.connected and plain.status == 488, plain
        # A probe that does not trust the gateway's CA (system store only) never connects: the
        # INVITE is not sent over an unverified connection.
        untrusted = await place_call(target, ProbeOptions(srtp=True, seconds=1.0,
                                                          answer_timeout_s=2.0))
        assert not untrusted.connected and untrusted.status is None, untrusted
        assert untrusted.error is not None and "no answer" in untrusted.error
        await stack.assert_clean()
        metrics = await stack.metrics()
        assert sum(s.value for s in metrics
                   if s.name == "orga_gateway_rtp_srtp_failures_total") == 0

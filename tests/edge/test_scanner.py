"""A SIPVicious-style sweep (issue 7 item 10): OPTIONS, REGISTER and INVITE to 200 numbers each,
from a source no trunk allows (127.0.0.2; the trunk allows only 127.0.0.1/32) and from the
allowed source without credentials (the trunk requires digest auth). No Orga session is ever
created (the emulator sees zero client-secrets requests), and only the configured answers come
back: nothing in drop mode, 403/405 in reject mode, 401 (or 503 once rate-limited) for the
unauthenticated INVITEs — never a 404 or anything else that tells numbers apart. A sweep this
fast trips the per-source request rate (burst 50): one 503 with Retry-After, then silence
(dropped unparsed) for that second; an unknown source in reject mode gets 403s up to the same
burst, then silence too."""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections import Counter, defaultdict

import pytest

from gateway.config import SecurityConfig
from tests.edge.harness import make_config, parse_response, running, trunk

NUMBERS = [f"+4930{n:06d}" for n in range(200)]


def sweep_messages(target: tuple[str, int], host: str, port: int) -> list[bytes]:
    out = []
    for method in ("INVITE", "OPTIONS", "REGISTER"):
        for number in NUMBERS:
            uri = f"sip:{number}@{target[0]}:{target[1]}"
            body = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                    b"m=audio 4000 RTP/AVP 0\r\n") if method == "INVITE" else b""
            ctype = "Content-Type: application/sdp\r\n" if body else ""
            out.append((
                f"{method} {uri} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-{secrets.token_hex(6)};rport\r\n"
                "Max-Forwards: 70\r\n"
                f"From: \"sipvicious\" <sip:100@{host}>;tag={secrets.token_hex(4)}\r\n"
                f"To: <{uri}>\r\nCall-ID: {secrets.token_hex(10)}\r\nCSeq: 1 {method}\r\n"
                f"Contact: <sip:100@{host}:{port}>\r\nUser-Agent: friendly-scanner\r\n"
                f"{ctype}Content-Length: {len(body)}\r\n\r\n"
            ).encode() + body)
    return out


async def sweep(target: tuple[str, int], source: str) -> dict[str, Counter[int]]:
    """Send the sweep (~2,000 requests/s), then listen 1.5 s; statuses by CSeq method."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    got: dict[str, Counter[int]] = defaultdict(Counter)
    seen: set[tuple[str, int]] = set()

    async def listen(until: float) -> None:
        while (left := until - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 65535), left)
            except TimeoutError:
                return
            r = parse_response(data)
            assert r is not None, data[:100]
            key = (r.header("Call-ID") or "", r.status)
            if key not in seen:  # a retransmitted 401 counts once
                seen.add(key)
                got[(r.header("CSeq") or "").split()[-1]][r.status] += 1

    try:
        listener = asyncio.create_task(listen(loop.time() + 1e9))
        for n, data in enumerate(sweep_messages(target, source, sock.getsockname()[1])):
            await loop.sock_sendto(sock, data, target)
            if n % 5 == 4:
                await asyncio.sleep(0.002)
        listener.cancel()
        await listen(loop.time() + 1.5)
    finally:
        sock.close()
    return dict(got)


def rejections(metrics_text: str) -> dict[str, float]:
    return {line.split('"')[1]: float(line.rsplit(" ", 1)[1])
            for line in metrics_text.splitlines()
            if line.startswith("orga_gateway_security_rejections_total{")}


@pytest.mark.parametrize("mode", ["drop", "reject"])
async def test_scanner_sweep(mode: str) -> None:
    def config(emu):  # type: ignore[no-untyped-def]
        return make_config(emu, trunks=(trunk("pbx", "127.0.0.1/32", auth=True),),
                           security=SecurityConfig(unknown_source=mode))

    async with running(config) as rig:
        outsider = await sweep(rig.udp, "127.0.0.2")
        insider = await sweep(rig.udp, "127.0.0.1")
        counts = rejections((await rig.http_get("/metrics")).decode())

        burst = SecurityConfig().request_burst_per_source
        if mode == "drop":
            assert outsider == {}
            assert counts["unknown_source"] == 600
        else:
            assert {s for c in outsider.values() for s in c} == {403}
            # The burst, plus what the bucket refills (20/s) while the sweep runs; then silence.
            answered = sum(sum(c.values()) for c in outsider.values())
            assert burst <= answered == counts["unknown_source"] < 600 / 2
        assert counts["rate_source_request"] >= 1
        # The allowed source without credentials: its first INVITEs (the INVITE burst) are
        # challenged, the next get 503 (INVITE rate) until the request rate trips: one more 503,
        # then nothing. OPTIONS and REGISTER come too fast to get anything but silence.
        invite_burst = SecurityConfig().invite_burst_per_source
        assert invite_burst <= insider["INVITE"][401] == counts["auth_missing"]
        assert set(insider["INVITE"]) == {401, 503}
        assert set(insider) <= {"INVITE", "OPTIONS", "REGISTER"}
        assert set(insider.get("OPTIONS", ())) <= {200, 503}
        assert set(insider.get("REGISTER", ())) <= ({405} if mode == "reject" else set())
        assert all(404 not in statuses for statuses in insider.values())
        # No Orga session, no call.
        assert rig.emulator.stats.client_secrets_requests == 0
        assert rig.emulator.state()["sessions_active"] == 0
        assert rig.gateway.registry is not None and rig.gateway.registry.calls == {}

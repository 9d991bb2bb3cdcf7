"""A SIPVicious-style sweep (issue 7 item 10): OPTIONS, REGISTER and INVITE to 200 numbers each,
from a source no trunk allows (127.0.0.2; the trunk allows only 127.0.0.1/32) and from the
allowed source without credentials (the trunk requires digest auth). No Orga session is ever
created (the emulator sees zero client-secrets requests), and only the configured answers come
back: nothing in drop mode, 403/405 in reject mode, 401 (or 503 once rate-limited) for the
unauthenticated INVITEs — never a 404 or anything else that tells numbers apart."""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections import defaultdict

import pytest

from gateway.config import SecurityConfig
from tests.edge.harness import make_config, parse_response, running, trunk

NUMBERS = [f"+4930{n:06d}" for n in range(200)]


def sweep_messages(target: tuple[str, int], host: str, port: int) -> list[bytes]:
    out = []
    for method in ("OPTIONS", "REGISTER", "INVITE"):
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


async def sweep(target: tuple[str, int], source: str) -> dict[str, set[int]]:
    """Send the sweep (~2,000 requests/s), then listen 1.5 s; statuses by CSeq method."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    got: dict[str, set[int]] = defaultdict(set)

    async def listen(until: float) -> None:
        while (left := until - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 65535), left)
            except TimeoutError:
                return
            r = parse_response(data)
            assert r is not None, data[:100]
            got[(r.header("CSeq") or "").split()[-1]].add(r.status)

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

        if mode == "drop":
            assert outsider == {}
            assert counts["unknown_source"] == 600
        else:
            assert outsider == {"OPTIONS": {403}, "REGISTER": {403}, "INVITE": {403}}
            assert counts["unknown_source"] == 600
        # The allowed source without credentials: OPTIONS is the same capability answer for
        # every number (or 503 when over the request rate); REGISTER is not offered; every
        # INVITE is challenged (or 503 when over the INVITE rate). Nothing tells numbers apart.
        assert insider["OPTIONS"] <= {200, 503}
        assert insider.get("REGISTER", set()) == (set() if mode == "drop" else {405})
        assert 401 in insider["INVITE"] and insider["INVITE"] <= {401, 503}
        assert counts["auth_missing"] >= 1
        assert counts.get("rate_source_invite", 0) + counts.get("rate_source_request", 0) >= 1
        assert all(404 not in statuses for statuses in insider.values())
        # No Orga session, no call.
        assert rig.emulator.stats.client_secrets_requests == 0
        assert rig.emulator.state()["sessions_active"] == 0
        assert rig.gateway.registry is not None and rig.gateway.registry.calls == {}

"""The `[security]` TCP and size limits as the running gateway applies them: connections per
source, the header-read timeout and `max_message_size` close the offending connection, are
counted in `security_rejections_total`, and leave a call on another connection working."""

from __future__ import annotations

import asyncio

from gateway.app import endpoint_config
from gateway.config import Config, SecurityConfig
from gateway.emulator.server import Emulator
from tests.edge.harness import make_config, running

SECURITY = SecurityConfig(tcp_max_connections_per_source=2, tcp_header_timeout_s=0.3,
                          max_message_size=4000)


def config(emu: Emulator) -> Config:
    return make_config(emu, security=SECURITY)


def options(port: int, n: int) -> bytes:
    return (f"OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:{port};"
            f"branch=z9hG4bK-tcp{n}\r\nFrom: <sip:a@127.0.0.1>;tag=a\r\nTo: <sip:gw@127.0.0.1>"
            f"\r\nCall-ID: tcp{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


async def closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), 2) == b""
    except ConnectionResetError:
        return True


def test_message_size_limit_comes_from_security() -> None:
    limits = endpoint_config(Config(security=SECURITY)).limits
    assert limits.max_message_bytes == 4000 and limits.max_body_bytes <= 4000


async def test_gateway_tcp_limits_counted_and_isolated() -> None:
    async with running(config) as rig:
        host, port = rig.tcp
        (r1, w1), (r2, w2) = [await asyncio.open_connection(host, port) for _ in range(2)]
        r3, w3 = await asyncio.open_connection(host, port)
        assert await closed(r3)  # third from the same source: refused at once
        w2.write(b"OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP")  # slow loris
        w1.write(b"OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\nX: " + b"a" * 5000 + b"\r\n\r\n")
        assert await closed(r1)  # over max_message_size
        assert await closed(r2)  # header-read timeout
        r4, w4 = await asyncio.open_connection(host, port)  # slots were released
        w4.write(options(w4.get_extra_info("sockname")[1], 4))
        head = await asyncio.wait_for(r4.readuntil(b"\r\n\r\n"), 2)
        assert head.startswith(b"SIP/2.0 200 OK")
        metrics = (await rig.http_get("/metrics")).decode()
        for reason in ("tcp_connections_source", "tcp_header_timeout", "malformed"):
            assert f'orga_gateway_security_rejections_total{{reason="{reason}"}} 1.0' in metrics
        for w in (w1, w2, w3, w4):
            w.close()

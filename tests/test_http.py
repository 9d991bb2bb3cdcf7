import asyncio
import json

import pytest

from gateway.control.app import operator_app
from gateway.control.health import GatewayState
from gateway.control.server import OperatorServer
from gateway.metrics import ConversationStats, Metrics


def HttpServer(metrics: Metrics, state: object, calls: object = None,
               **kwargs: object) -> OperatorServer:
    return OperatorServer(operator_app(metrics, state, calls), **kwargs)  # type: ignore[arg-type]


async def get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.fixture
def state() -> dict[str, GatewayState]:
    return {"s": GatewayState(draining=False, active_calls=0, max_calls=2)}


async def test_endpoints(state: dict[str, GatewayState]) -> None:
    metrics = Metrics()
    metrics.sip_request("INVITE")
    calls = [{"call_id": "c1", "conversation_id": "conv", "turns": 1}]
    async with HttpServer(metrics, lambda: state["s"], lambda: calls) as server:
        status, headers, body = await get(server.port, "/metrics")
        assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
        assert b'orga_gateway_sip_requests_total{direction="in",method="INVITE"} 1.0' in body
        assert (await get(server.port, "/healthz"))[:1] == (200,)
        status, _, body = await get(server.port, "/ready")
        assert status == 200 and json.loads(body)["ready"] is True
        state["s"] = GatewayState(draining=False, active_calls=2, max_calls=2)
        status, _, body = await get(server.port, "/ready")
        assert status == 503 and json.loads(body)["reason"] == "at capacity"
        state["s"] = GatewayState(draining=True, active_calls=0, max_calls=2)
        status, _, body = await get(server.port, "/ready")
        assert status == 503 and json.loads(body)["reason"] == "draining"
        state["s"] = GatewayState(draining=False, active_calls=0, max_calls=2, overloaded=True)
        status, _, body = await get(server.port, "/ready")
        assert status == 503 and json.loads(body)["reason"] == "overloaded"
        status, headers, body = await get(server.port, "/calls")
        assert status == 200 and json.loads(body) == calls
        assert (await get(server.port, "/nope"))[0] == 404
        assert (await get(server.port, "/metrics", "POST"))[0] == 405
        status, headers, body = await get(server.port, "/healthz", "HEAD")
        assert status == 200 and body == b"" and headers["content-length"] == "3"


async def test_calls_defaults_to_metrics_conversations(state: dict[str, GatewayState]) -> None:
    metrics = Metrics()
    metrics.add_conversation("conv-9", "*", lambda: ConversationStats(turns=4))
    async with HttpServer(metrics, lambda: state["s"]) as server:
        _, _, body = await get(server.port, "/calls")
    (call,) = json.loads(body)
    assert call["conversation_id"] == "conv-9" and call["turns"] == 4


async def test_broken_provider_is_500_not_a_dead_server(state: dict[str, GatewayState]) -> None:
    def broken() -> list[dict[str, object]]:
        raise RuntimeError("boom")

    async with HttpServer(Metrics(), lambda: state["s"], broken) as server:
        assert (await get(server.port, "/calls"))[0] == 500
        assert (await get(server.port, "/healthz"))[0] == 200


async def test_slow_and_oversized_clients(state: dict[str, GatewayState]) -> None:
    async with HttpServer(Metrics(), lambda: state["s"], header_timeout_s=0.05) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /metrics HTTP/1.1\r\n")  # never finishes its headers
        data = await asyncio.wait_for(reader.read(), 5)
        assert data.startswith(b"HTTP/1.1 408 ")
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nX: " + b"a" * 12000 + b"\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 5)
        assert data.startswith(b"HTTP/1.1 400 ")  # h11's bound on header bytes
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"garbage\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 400 ")
        writer.close()
        # A keep-alive client that sends nothing after its first answer is closed too.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 5)
        assert data.startswith(b"HTTP/1.1 200 ") and b"ok\n" in data
        writer.close()


async def test_connection_cap_answers_503(state: dict[str, GatewayState]) -> None:
    async with HttpServer(Metrics(), lambda: state["s"], max_connections=2,
                          header_timeout_s=5) as server:
        idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
        await asyncio.sleep(0.05)  # let the server accept the idle connections first
        status, _, _ = await get(server.port, "/healthz")
        assert status == 503
        for _, writer in idle:
            writer.close()
        # Once the idle clients are gone there is room again.
        for _ in range(100):
            if (await get(server.port, "/healthz"))[0] == 200:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the server stayed at its connection cap")

"""OrgaApi against httpx.MockTransport: request shapes and every error shape of the reference."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import pytest

from gateway.orga.api import OrgaApi, candidates_from_sdp, parse_expires_at, parse_retry_after
from gateway.orga.errors import (
    OrgaAuthError,
    OrgaError,
    OrgaProtocolError,
    OrgaRequestError,
    OrgaTimeoutError,
    OrgaUnavailableError,
    OrgaValidationError,
)
from gateway.orga.settings import OrgaClientSettings, SessionParams

KEY = "sk_orga_ai_secretkey123"
TOKEN = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.sig"
BASE = "https://api.orga.test"

NESTED_401 = {
    "error": {
        "message": {
            "error": {
                "message": "Incorrect or inactive API key provided.",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        },
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
}
PLAIN_401 = {
    "error": {
        "message": "Invalid ephemeral token",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
}
PLAIN_403 = {
    "error": {
        "message": "Not authenticated",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
}
DETAIL_422 = {
    "detail": [
        {"loc": ["body", "offer"], "msg": "Field required", "type": "missing", "input": None},
        {"loc": ["body", "params"], "msg": "Field required", "type": "missing", "input": None},
    ]
}
NOT_FOUND_404 = {
    "error": {"message": "User not found.", "type": "not_found_error", "param": None,
              "code": None}
}

SDP = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n"
    "a=candidate:abc 1 udp 2130706431 127.0.0.1 5000 typ host\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 97\r\na=mid:1\r\n"
    "a=candidate:def 1 udp 2130706431 127.0.0.1 5002 typ host\r\n"
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n"
)

Handler = Callable[[httpx.Request], httpx.Response]


def make_api(handler: Handler, **settings: Any) -> tuple[OrgaApi, list[float]]:
    sleeps: list[float] = []

    async def fake_sleep(delay: float) -> None:
        sleeps.append(delay)

    api = OrgaApi(
        OrgaClientSettings(base_url=BASE, api_key=KEY, **settings),
        transport=httpx.MockTransport(handler),
        rng=lambda: 0.5,
        sleep=fake_sleep,
    )
    return api, sleeps


async def test_client_secret_request_shape_and_minimal_response() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ephemeral_token": TOKEN})

    api, _ = make_api(handler)
    secret = await api.create_client_secret()
    await api.aclose()
    assert secret.token == TOKEN and secret.expires_at is None
    req = seen[0]
    assert req.method == "POST"
    assert req.url.path == "/v1/realtime/client-secrets"
    assert req.url.query == b""
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.content == b""
    assert TOKEN not in repr(secret)


async def test_client_secret_sends_email_only_when_configured_and_reads_expiry() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["email"] == "ops@example.org"
        return httpx.Response(
            200,
            json={"ephemeral_token": TOKEN, "token_type": "bearer",
                  "expires_at": "2025-11-11T11:49:43.252934"},
        )

    api, _ = make_api(handler, email="ops@example.org")
    secret = await api.create_client_secret()
    await api.aclose()
    assert secret.expires_at == datetime(2025, 11, 11, 11, 49, 43, 252934)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-11-11T11:49:43.252934", datetime(2025, 11, 11, 11, 49, 43, 252934)),
        ("2025-11-11T11:49:43Z", datetime(2025, 11, 11, 11, 49, 43)),
        ("2025-11-11T12:49:43+01:00", datetime(2025, 11, 11, 11, 49, 43)),
        ("not a date", None),
        (17, None),
    ],
)
def test_parse_expires_at(text: object, expected: datetime | None) -> None:
    assert parse_expires_at(text) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"iceServers": []}, []),
        ([{"urls": "stun:stun.example:3478"}], [(["stun:stun.example:3478"], None, None)]),
        (
            {"iceServers": [
                {"urls": ["stun:a:1", "stun:b:2"]},
                {"urls": ["turn:t:3478?transport=udp"], "username": "u", "credential": "c"},
            ]},
            [(["stun:a:1", "stun:b:2"], None, None), (["turn:t:3478?transport=udp"], "u", "c")],
        ),
    ],
)
async def test_ice_config_shapes(body: Any, expected: list[Any]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "GET"
        assert request.url.path == "/v1/realtime/ice-config"
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        return httpx.Response(200, json=body)

    api, _ = make_api(handler)
    servers = await api.get_ice_config(TOKEN)
    await api.aclose()
    assert [(s.urls, s.username, s.credential) for s in servers] == expected


@pytest.mark.parametrize("body", [{"servers": []}, {"iceServers": "stun:x"}, "x"])
async def test_ice_config_malformed_is_protocol_error(body: Any) -> None:
    api, _ = make_api(lambda r: httpx.Response(200, json=body))
    with pytest.raises(OrgaProtocolError):
        await api.get_ice_config(TOKEN)
    await api.aclose()


def test_candidates_from_sdp_keeps_mid_and_index() -> None:
    assert candidates_from_sdp(SDP) == [
        {"candidate": "candidate:abc 1 udp 2130706431 127.0.0.1 5000 typ host", "sdpMid": "0",
         "sdpMLineIndex": 0},
        {"candidate": "candidate:def 1 udp 2130706431 127.0.0.1 5002 typ host", "sdpMid": "1",
         "sdpMLineIndex": 1},
    ]


async def test_create_call_body_exactly_as_seed() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert request.headers["content-type"] == "application/json"
        seen.append(json.loads(request.content))
        return httpx.Response(
            200, json={"answer": {"sdp": "v=0\r\n", "type": "answer"},
                       "conversation_id": "6913388afae3c6dd9a59b7ad"}
        )

    api, _ = make_api(handler)
    cands = candidates_from_sdp(SDP)
    answer = await api.create_call(TOKEN, SDP, cands, SessionParams(instructions="Be brief."))
    await api.aclose()
    assert answer.conversation_id == "6913388afae3c6dd9a59b7ad"
    assert answer.sdp == "v=0\r\n"
    assert seen[0] == {
        "offer": {"sdp": SDP, "type": "offer", "candidates": cands},
        "params": {"voice": "Sofía", "model": "orga-1-beta", "temperature": 0.5,
                   "return_transcription": False, "instructions": "Be brief.",
                   "modalities": ["audio"], "history": True},
    }


@pytest.mark.parametrize("status", [200, 500])
async def test_a_token_is_reported_spent_once_calls_has_answered_or_failed(status: int) -> None:
    """The log redaction filter is told of each token (on_token) and told to let it go once
    /calls is done with it, so it holds the calls in setup, not every call's token."""
    minted: list[str] = []
    spent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/client-secrets"):
            return httpx.Response(200, json={"ephemeral_token": TOKEN})
        assert request.url.path.endswith("/calls") and spent == []  # not before it is used
        if status != 200:
            return httpx.Response(status, json={"detail": "boom"})
        return httpx.Response(200, json={"answer": {"sdp": "v=0\r\n", "type": "answer"},
                                         "conversation_id": "abc"})

    api = OrgaApi(OrgaClientSettings(base_url=BASE, api_key=KEY),
                  transport=httpx.MockTransport(handler), on_token=minted.append,
                  on_token_spent=spent.append)
    secret = await api.create_client_secret()
    assert minted == [TOKEN] and spent == []
    if status == 200:
        await api.create_call(secret.token, SDP, [], SessionParams())
    else:
        with pytest.raises(OrgaError):
            await api.create_call(secret.token, SDP, [], SessionParams())
    await api.aclose()
    assert spent == [TOKEN]


@pytest.mark.parametrize(
    "body",
    [
        {"conversation_id": "abc"},
        {"answer": {"sdp": "v=0", "type": "answer"}},
        {"answer": "v=0", "conversation_id": "abc"},
        [],
    ],
)
async def test_create_call_missing_fields_is_protocol_error(body: Any) -> None:
    api, _ = make_api(lambda r: httpx.Response(200, json=body))
    with pytest.raises(OrgaProtocolError) as info:
        await api.create_call(TOKEN, SDP, [], SessionParams())
    await api.aclose()
    assert info.value.endpoint == "calls"


@pytest.mark.parametrize(
    ("endpoint", "status", "body", "error_type", "message", "retryable"),
    [
        ("client_secrets", 401, NESTED_401, OrgaAuthError,
         "Incorrect or inactive API key provided.", False),
        ("ice_config", 401, PLAIN_401, OrgaAuthError, "Invalid ephemeral token", False),
        ("calls", 401, PLAIN_401, OrgaAuthError, "Invalid ephemeral token", False),
        ("ice_config", 403, PLAIN_403, OrgaAuthError, "Not authenticated", False),
        ("calls", 403, {"detail": "Not authenticated"}, OrgaAuthError, "Not authenticated",
         False),
        ("client_secrets", 404, NOT_FOUND_404, OrgaRequestError, "User not found.", False),
        ("calls", 400, {"error": {"message": "bad", "type": "invalid_request_error"}},
         OrgaRequestError, "bad", False),
        ("calls", 429, None, OrgaUnavailableError, "Too Many Requests", True),
        ("calls", 500, {"error": {"message": "boom"}}, OrgaUnavailableError, "boom", True),
        ("calls", 503, "upstream down", OrgaUnavailableError, "upstream down", True),
    ],
)
async def test_error_mapping(
    endpoint: str, status: int, body: Any, error_type: type[OrgaError], message: str,
    retryable: bool,
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if body is None:
            return httpx.Response(status)
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    api, _ = make_api(handler)
    with pytest.raises(OrgaError) as info:
        if endpoint == "client_secrets":
            await api.create_client_secret()
        elif endpoint == "ice_config":
            await api.get_ice_config(TOKEN)
        else:
            await api.create_call(TOKEN, SDP, [], SessionParams())
    await api.aclose()
    exc = info.value
    assert type(exc) is error_type
    assert (exc.endpoint, exc.status, exc.message, exc.retryable) == (
        endpoint, status, message, retryable)
    for text in (str(exc), repr(exc)):
        assert KEY not in text and TOKEN not in text


async def test_422_detail_list_is_read() -> None:
    api, _ = make_api(lambda r: httpx.Response(422, json=DETAIL_422))
    with pytest.raises(OrgaValidationError) as info:
        await api.create_call(TOKEN, SDP, [], SessionParams())
    await api.aclose()
    exc = info.value
    assert [(i.loc, i.msg, i.type) for i in exc.issues] == [
        (("body", "offer"), "Field required", "missing"),
        (("body", "params"), "Field required", "missing"),
    ]
    assert str(exc) == "orga calls 422: body.offer: Field required; body.params: Field required"
    assert not exc.retryable and exc.reason == "validation"


async def test_secret_echoed_by_server_is_scrubbed() -> None:
    body = {"error": {"message": f"key {KEY} is bad", "type": "invalid_request_error"}}
    api, _ = make_api(lambda r: httpx.Response(401, json=body))
    with pytest.raises(OrgaAuthError) as info:
        await api.create_client_secret()
    await api.aclose()
    assert KEY not in str(info.value) and "[redacted]" in str(info.value)


async def test_malformed_json_success_is_protocol_error() -> None:
    api, _ = make_api(lambda r: httpx.Response(200, text="{not json"))
    with pytest.raises(OrgaProtocolError) as info:
        await api.create_client_secret()
    await api.aclose()
    assert info.value.status == 200 and not info.value.retryable


@pytest.mark.parametrize(
    ("exc", "error_type"),
    [
        (httpx.ReadTimeout("slow"), OrgaTimeoutError),
        (httpx.ConnectError("refused"), OrgaUnavailableError),
    ],
)
async def test_transport_failures_are_retryable(exc: Exception, error_type: type) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    api, _ = make_api(handler)
    with pytest.raises(OrgaError) as info:
        await api.get_ice_config(TOKEN)
    await api.aclose()
    assert type(info.value) is error_type and info.value.retryable
    assert info.value.status is None and TOKEN not in repr(info.value)


async def test_mint_token_retries_retryable_errors_with_backoff() -> None:
    statuses = iter([503, 429, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(statuses)
        if status == 200:
            return httpx.Response(200, json={"ephemeral_token": TOKEN})
        return httpx.Response(status)

    api, sleeps = make_api(handler)
    import asyncio

    deadline = asyncio.get_running_loop().time() + 15
    secret = await api.mint_token(deadline)
    await api.aclose()
    assert secret.token == TOKEN
    # full jitter with rng = 0.5: 0.5 * 0.2, 0.5 * 0.4
    assert sleeps == pytest.approx([0.1, 0.2])


async def test_mint_token_does_not_retry_auth_errors() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(401, json=NESTED_401)

    api, sleeps = make_api(handler)
    import asyncio

    with pytest.raises(OrgaAuthError):
        await api.mint_token(asyncio.get_running_loop().time() + 15)
    await api.aclose()
    assert calls == 1 and sleeps == []


async def test_retry_stops_at_deadline() -> None:
    api, sleeps = make_api(lambda r: httpx.Response(503))
    import asyncio

    with pytest.raises(OrgaUnavailableError):
        # 0.15 s budget: the first backoff (0.1 s) fits, the second (0.2 s) does not.
        await api.fetch_ice_servers(TOKEN, asyncio.get_running_loop().time() + 0.15)
    await api.aclose()
    assert sleeps == pytest.approx([0.1])
    assert repr(api) == f"OrgaApi(base_url={BASE!r})"


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("3", 3.0), (" 0 ", 0.0), ("soon", None), ("-1", None),
     ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0), ("999999", 3600.0)],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    headers = httpx.Headers({} if header is None else {"Retry-After": header})
    assert parse_retry_after(headers) == expected


async def test_retry_after_on_429_is_honoured_within_the_budget() -> None:
    import asyncio

    statuses = iter([(429, "2"), (200, None)])

    def handler(request: httpx.Request) -> httpx.Response:
        status, after = next(statuses)
        if status == 200:
            return httpx.Response(200, json={"ephemeral_token": TOKEN})
        return httpx.Response(status, headers={"Retry-After": after})

    api, sleeps = make_api(handler)
    secret = await api.mint_token(asyncio.get_running_loop().time() + 15)
    assert secret.token == TOKEN and sleeps == [2.0]  # the server's wait, not the jitter
    # A Retry-After beyond the budget ends the attempt at once instead of sleeping past it.
    api2, sleeps2 = make_api(lambda r: httpx.Response(429, headers={"Retry-After": "30"}))
    with pytest.raises(OrgaUnavailableError) as info:
        await api2.mint_token(asyncio.get_running_loop().time() + 15)
    assert info.value.retry_after_s == 30.0 and sleeps2 == []
    await api.aclose()
    await api2.aclose()

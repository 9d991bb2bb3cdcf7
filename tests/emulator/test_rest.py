"""The emulator's REST endpoints over real HTTP on loopback: exact bodies of the reference."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiortc.mediastreams import AudioStreamTrack

from gateway.emulator.agent import AgentSettings
from gateway.emulator.server import Emulator, EmulatorConfig
from gateway.orga.api import OrgaApi
from gateway.orga.errors import OrgaAuthError, OrgaValidationError
from gateway.orga.peer import OrgaPeer
from gateway.orga.settings import OrgaClientSettings, PeerSettings, SessionParams
from tests.emulator.conftest import API_KEY

NESTED_401 = {"error": {"message": {"error": {
    "message": "Incorrect or inactive API key provided.", "type": "invalid_request_error",
    "param": None, "code": None}}, "type": "invalid_request_error", "param": None, "code": None}}
INVALID_TOKEN = {"error": {"message": "Invalid ephemeral token",
                           "type": "invalid_request_error", "param": None, "code": None}}
NOT_AUTHENTICATED = {"error": {"message": "Not authenticated", "type": "invalid_request_error",
                               "param": None, "code": None}}
CS, ICE, CALLS = "/v1/realtime/client-secrets", "/v1/realtime/ice-config", "/v1/realtime/calls"


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def mint(client: httpx.AsyncClient) -> str:
    response = await client.post(CS, headers=auth(API_KEY))
    assert response.status_code == 200
    token: str = response.json()["ephemeral_token"]
    return token


@pytest.fixture
async def client(emulator: Emulator) -> Any:
    async with httpx.AsyncClient(base_url=emulator.base_url) as c:
        yield c


def jwt_part(token: str, index: int) -> dict[str, Any]:
    part = token.split(".")[index]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


async def test_client_secret_shape_and_jwt(client: httpx.AsyncClient, emulator: Emulator) -> None:
    response = await client.post(CS, headers=auth(API_KEY))
    body = response.json()
    assert set(body) == {"ephemeral_token", "token_type", "expires_at"}
    assert body["token_type"] == "bearer"
    assert jwt_part(body["ephemeral_token"], 0) == {"alg": "HS256", "typ": "JWT"}
    claims = jwt_part(body["ephemeral_token"], 1)
    assert claims["scope"] == "api" and len(claims["sub"]) == 24
    assert claims["exp"] - claims["iat"] in (119, 120)  # within the documented 60-120 s
    expires = datetime.fromisoformat(body["expires_at"])
    assert expires.tzinfo is None and "." in body["expires_at"]
    assert int(expires.replace(tzinfo=UTC).timestamp()) == claims["exp"]
    assert emulator.stats.client_secrets_requests == 1


@pytest.mark.parametrize(
    ("headers", "status", "body"),
    [
        ({"Authorization": "Bearer sk_orga_ai_wrong"}, 401, NESTED_401),
        ({}, 403, NOT_AUTHENTICATED),
        ({"Authorization": f"Basic {API_KEY}"}, 403, NOT_AUTHENTICATED),
        ({"Authorization": "Bearer"}, 403, NOT_AUTHENTICATED),
    ],
)
async def test_client_secret_auth_errors(
    client: httpx.AsyncClient, headers: dict[str, str], status: int, body: Any
) -> None:
    response = await client.post(CS, headers=headers)
    assert response.status_code == status
    assert response.json() == body


async def test_ice_config_and_token_errors(client: httpx.AsyncClient) -> None:
    token = await mint(client)
    for _ in range(2):  # ice-config does not consume the token
        response = await client.get(ICE, headers=auth(token))
        assert response.status_code == 200 and response.json() == {"iceServers": []}
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for headers, status, body in [
        (auth(tampered), 401, INVALID_TOKEN),
        (auth("garbage"), 401, INVALID_TOKEN),
        (auth(API_KEY), 401, INVALID_TOKEN),
        ({}, 403, NOT_AUTHENTICATED),
    ]:
        response = await client.get(ICE, headers=headers)
        assert (response.status_code, response.json()) == (status, body)


async def test_expired_token_is_rejected() -> None:
    now = [1_700_000_000.0]
    emu = Emulator(EmulatorConfig(api_keys=(API_KEY,), token_ttl_s=2.0,
                                  ice_servers=({"urls": "stun:127.0.0.1:3478"},),
                                  bare_ice_list=True),
                   clock=lambda: now[0])
    await emu.start()
    async with httpx.AsyncClient(base_url=emu.base_url) as client:
        token = await mint(client)
        response = await client.get(ICE, headers=auth(token))
        assert response.json() == [{"urls": "stun:127.0.0.1:3478"}]  # legacy bare list
        now[0] += 2.0
        response = await client.get(ICE, headers=auth(token))
        assert (response.status_code, response.json()) == (401, INVALID_TOKEN)
    await emu.stop()


# The SDK layout, cut to what the emulator's offer checks read.
SDK_SDP = ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
           "m=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=rtpmap:96 opus/48000/2\r\n"
           "m=video 9 UDP/TLS/RTP/SAVPF 97\r\na=mid:1\r\na=rtpmap:97 VP8/90000\r\n"
           "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n")
CAND = "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host"


def offer_body(candidates: list[Any] | None = None, sdp: str = SDK_SDP,
               **params: Any) -> dict[str, Any]:
    return {"offer": {"sdp": sdp, "type": "offer", "candidates": candidates or []},
            "params": {"model": "orga-1-beta", "voice": "Sofía", **params}}


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({}, [
            {"loc": ["body", "offer"], "msg": "Field required", "type": "missing", "input": None},
            {"loc": ["body", "params"], "msg": "Field required", "type": "missing", "input": None},
        ]),
        ({"offer": {"sdp": SDK_SDP, "type": "offer", "candidates": []}}, [
            {"loc": ["body", "params"], "msg": "Field required", "type": "missing", "input": None},
        ]),
        # FastAPI's own entries: a field missing inside an object carries that object.
        ({"offer": {"type": "answer", "candidates": "x"}, "params": {}}, [
            {"loc": ["body", "offer", "sdp"], "msg": "Field required", "type": "missing",
             "input": {"type": "answer", "candidates": "x"}},
            {"loc": ["body", "offer", "type"], "msg": "Input should be 'offer'",
             "type": "literal_error", "input": "answer", "ctx": {"expected": "'offer'"}},
            {"loc": ["body", "offer", "candidates"], "msg": "Input should be a valid list",
             "type": "list_type", "input": "x"},
        ]),
        (offer_body(model="orga-1-pro"), [
            {"loc": ["body", "params", "model"], "msg": "Input should be 'orga-1-beta'",
             "type": "literal_error", "input": "orga-1-pro",
             "ctx": {"expected": "'orga-1-beta'"}},
        ]),
        (offer_body(temperature=1.5), [
            {"loc": ["body", "params", "temperature"],
             "msg": "Input should be less than or equal to 1", "type": "less_than_equal",
             "input": 1.5, "ctx": {"le": 1.0}},
        ]),
        (offer_body(temperature=-0.1), [
            {"loc": ["body", "params", "temperature"],
             "msg": "Input should be greater than or equal to 0", "type": "greater_than_equal",
             "input": -0.1, "ctx": {"ge": 0.0}},
        ]),
        (offer_body(modalities=["audio", "text"]), [
            {"loc": ["body", "params", "modalities", 1],
             "msg": "Input should be 'audio' or 'video'", "type": "literal_error",
             "input": "text", "ctx": {"expected": "'audio' or 'video'"}},
        ]),
    ],
)
async def test_calls_validation_422(
    client: httpx.AsyncClient, body: Any, detail: list[Any]
) -> None:
    token = await mint(client)
    response = await client.post(CALLS, headers=auth(token), json=body)
    assert response.status_code == 422
    assert response.json() == {"detail": detail}


async def test_unknown_voice_and_bad_json(client: httpx.AsyncClient) -> None:
    token = await mint(client)
    response = await client.post(CALLS, headers=auth(token), json=offer_body(voice="alloy"))
    entry = response.json()["detail"][0]
    assert entry["loc"] == ["body", "params", "voice"] and entry["type"] == "literal_error"
    assert entry["msg"].startswith("Input should be 'Sofía', 'Juan'")
    response = await client.post(CALLS, content=b"{oops",
                                 headers={"Content-Type": "application/json"} | auth(token))
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


async def test_calls_requires_json_content_type(client: httpx.AsyncClient) -> None:
    token = await mint(client)
    body = json.dumps(offer_body()).encode()
    for headers in ({}, {"Content-Type": "text/plain"}):
        response = await client.post(CALLS, content=body, headers=headers | auth(token))
        assert response.status_code == 422
        assert {e["loc"][1] for e in response.json()["detail"]} == {"offer", "params"}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (offer_body(sdp=SDK_SDP.replace("opus/48000/2", "PCMU/8000")), "no Opus audio"),
        (offer_body(sdp=SDK_SDP.split("m=application")[0]), "no data channel"),
        (offer_body([{"candidate": CAND}]), "neither sdpMid nor sdpMLineIndex"),
        (offer_body([{"candidate": CAND, "sdpMid": "audio", "sdpMLineIndex": 0}]),
         "is not a mid of the offer"),
        (offer_body([{"candidate": CAND, "sdpMLineIndex": 3}]), "past the offer's 3 m-lines"),
        (offer_body([{"candidate": CAND, "sdpMid": "1", "sdpMLineIndex": 0}]),
         "name different m-lines"),
    ],
)
async def test_calls_offer_must_match_the_sdk_layout(
    client: httpx.AsyncClient, emulator: Emulator, body: Any, problem: str
) -> None:
    token = await mint(client)
    response = await client.post(CALLS, headers=auth(token), json=body)
    assert response.status_code == 422
    [entry] = response.json()["detail"]
    assert entry["loc"] == ["body", "offer"] and entry["type"] == "value_error"
    assert problem in entry["msg"]
    ok = offer_body([{"candidate": CAND, "sdpMid": "2", "sdpMLineIndex": 2}])
    response = await client.post(CALLS, headers=auth(token), json=ok)
    assert response.status_code != 422  # (the cut-down SDP is then refused by the answerer)


async def test_calls_token_is_single_use(client: httpx.AsyncClient, emulator: Emulator) -> None:
    peer = OrgaPeer(AudioStreamTrack(), PeerSettings(ice_addresses=("127.0.0.1",)),
                    SessionParams(), [])
    offer = await peer.create_offer()
    token = await mint(client)
    body = {"offer": {"sdp": offer, "type": "offer", "candidates": []},
            "params": SessionParams().to_json()}
    # A 422 does not consume the token ...
    assert (await client.post(CALLS, headers=auth(token), json={})).status_code == 422
    first = await client.post(CALLS, headers=auth(token), json=body)
    assert first.status_code == 200
    answer = first.json()
    assert set(answer) == {"answer", "conversation_id"}
    assert answer["answer"]["type"] == "answer" and len(answer["conversation_id"]) == 24
    sections = answer["answer"]["sdp"].split("\r\nm=")
    assert [s.split()[0] for s in sections[1:]] == ["audio", "video", "application"]
    assert "a=sendrecv" in sections[1] and "a=recvonly" in sections[2]
    candidates = [ln for ln in answer["answer"]["sdp"].splitlines() if ln.startswith("a=cand")]
    assert candidates and all(ln.split()[4] == "127.0.0.1" for ln in candidates)
    # ... a successful /calls does.
    second = await client.post(CALLS, headers=auth(token), json=body)
    assert (second.status_code, second.json()) == (401, INVALID_TOKEN)
    assert (await client.get(ICE, headers=auth(token))).status_code == 401
    await peer.close()


async def test_not_found_and_method_not_allowed(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/realtime/nothing")
    assert (response.status_code, response.json()) == (404, {"detail": "Not Found"})
    response = await client.get(CS)
    assert (response.status_code, response.json()) == (405, {"detail": "Method Not Allowed"})


async def test_orga_api_maps_emulator_errors(emulator: Emulator) -> None:
    bad = OrgaApi(OrgaClientSettings(base_url=emulator.base_url, api_key="sk_orga_ai_nope"))
    with pytest.raises(OrgaAuthError) as info:
        await bad.create_client_secret()
    assert info.value.message == "Incorrect or inactive API key provided."
    assert "sk_orga_ai_nope" not in repr(info.value)
    await bad.aclose()
    api = OrgaApi(OrgaClientSettings(base_url=emulator.base_url, api_key=API_KEY))
    secret = await api.create_client_secret()
    assert secret.expires_at is not None
    assert await api.get_ice_config(secret.token) == []
    with pytest.raises(OrgaValidationError) as verr:
        await api.create_call(secret.token, SDK_SDP, [], SessionParams(voice="nobody"))
    assert verr.value.issues[0].loc == ("body", "params", "voice")
    await api.aclose()


async def test_legacy_email_mode() -> None:
    emu = Emulator(EmulatorConfig(api_keys=(API_KEY,), email_required=True))
    await emu.start()
    async with httpx.AsyncClient(base_url=emu.base_url) as client:
        response = await client.post(CS, headers=auth(API_KEY))
        assert response.status_code == 422
        assert response.json() == {"detail": [{"loc": ["query", "email"],
                                               "msg": "Field required", "type": "missing",
                                               "input": None}]}
        response = await client.post(CS, headers=auth(API_KEY), params={"email": "a@b.c"})
        assert response.status_code == 200
    await emu.stop()


async def test_keep_alive_and_bad_requests(emulator: Emulator) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", emulator.port)
    request = (f"POST {CS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
               "Content-Length: 0\r\n\r\n").encode()
    writer.write(request + request)  # pipelined on one connection
    for _ in range(2):
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        assert b"ephemeral_token" in await reader.readexactly(length)
    writer.write(b"GARBAGE\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    await asyncio.wait_for(reader.read(), 2)  # the body, then uvicorn closes the connection
    assert reader.at_eof()
    writer.close()
    await writer.wait_closed()


async def test_control_endpoint(client: httpx.AsyncClient, emulator: Emulator) -> None:
    assert (await client.get("/_emulator/state")).status_code == 401
    response = await client.post("/_emulator/faults", headers=auth(API_KEY),
                                 json={"fail_calls": 2, "fail_status": 500})
    assert response.status_code == 200 and response.json()["fail_calls"] == 2
    assert emulator.faults.fail_calls == 2 and emulator.faults.fail_status == 500
    for change in ({"nope": 1}, {"fail_calls": "2"}, {"reject_tokens": 1}, [1]):
        bad = await client.post("/_emulator/faults", headers=auth(API_KEY), json=change)
        assert bad.status_code == 400
    ok = await client.post("/_emulator/faults", headers=auth(API_KEY),
                           json={"delay_s": 0, "end_after_s": None})
    assert ok.status_code == 200 and emulator.faults.delay_s == 0.0
    await mint(client)
    state = (await client.get("/_emulator/state", headers=auth(API_KEY))).json()
    assert state["client_secrets_requests"] == 1 and state["faults"]["fail_calls"] == 2
    assert API_KEY not in json.dumps(state)


def test_agent_settings_default_reply_is_about_1_5_s() -> None:
    assert AgentSettings().reply_samples().size == pytest.approx(1.5 * 48000, rel=0.01)


async def test_mcp_server_param_is_validated_and_kept_off_the_state(
    client: httpx.AsyncClient, emulator: Emulator
) -> None:
    peer = OrgaPeer(AudioStreamTrack(), PeerSettings(ice_addresses=("127.0.0.1",)),
                    SessionParams(), [])
    offer = await peer.create_offer()
    secret_url = "https://mcp.example/s3cr3t-path"
    bad = offer_body(mcp_server={"id": "x"})
    token = await mint(client)
    response = await client.post(CALLS, headers=auth(token), json=bad)
    assert response.status_code == 422
    assert {tuple(e["loc"][-1:]) for e in response.json()["detail"]} == {("url",), ("alias",)}
    body = {"offer": {"sdp": offer, "type": "offer", "candidates": []},
            "params": {**SessionParams().to_json(),
                       "mcp_server": {"id": "m1", "url": secret_url, "alias": "gw"}}}
    response = await client.post(CALLS, headers=auth(token), json=body)
    assert response.status_code == 200
    session = emulator.sessions[response.json()["conversation_id"]]
    assert session.params.mcp_server is not None
    assert session.params.mcp_server.to_json() == {"id": "m1", "url": secret_url, "alias": "gw"}
    assert secret_url not in json.dumps(emulator.state())
    await peer.close()

"""Fault injection against open_session: retries, new tokens, timeouts, broken answers."""

from __future__ import annotations

import asyncio

import pytest
from aiortc.mediastreams import AudioStreamTrack

from gateway.emulator.server import Emulator
from gateway.orga.api import OrgaApi
from gateway.orga.errors import (
    OrgaAuthError,
    OrgaProtocolError,
    OrgaTimeoutError,
    OrgaUnavailableError,
)
from gateway.orga.peer import OrgaPeer
from gateway.orga.session import open_session
from gateway.orga.settings import OrgaClientSettings, PeerSettings, SessionParams
from tests.emulator.conftest import API_KEY

LOOPBACK = PeerSettings(ice_addresses=("127.0.0.1",))


class Peers:
    """A peer factory that remembers what it built, to check that failed peers are closed."""

    def __init__(self) -> None:
        self.built: list[OrgaPeer] = []

    def __call__(self, servers: list[object]) -> OrgaPeer:
        peer = OrgaPeer(AudioStreamTrack(), LOOPBACK, SessionParams(), servers)  # type: ignore[arg-type]
        self.built.append(peer)
        return peer


def make_api(emulator: Emulator, **kw: float) -> OrgaApi:
    return OrgaApi(OrgaClientSettings(base_url=emulator.base_url, api_key=API_KEY, **kw))


@pytest.mark.parametrize("status", [503, 500, 429])
async def test_failed_calls_mint_a_new_token(emulator: Emulator, status: int) -> None:
    emulator.faults.fail_calls = 2
    emulator.faults.fail_status = status
    api, peers = make_api(emulator), Peers()
    session = await open_session(api, peers, SessionParams())
    assert session.attempts == 3
    assert emulator.stats.client_secrets_requests == 3  # one fresh token per /calls
    assert emulator.stats.ice_config_requests == 1
    assert emulator.stats.calls_requests == 3
    assert [p.ended.done() for p in peers.built] == [True, True, False]  # failed peers closed
    assert session.peer is peers.built[-1]
    await session.peer.close()
    await api.aclose()


async def test_calls_failures_beyond_the_attempt_limit_surface(emulator: Emulator) -> None:
    emulator.faults.fail_calls = 5
    api, peers = make_api(emulator), Peers()
    with pytest.raises(OrgaUnavailableError) as info:
        await open_session(api, peers, SessionParams(), max_call_attempts=2)
    assert (info.value.endpoint, info.value.status) == ("calls", 503)
    assert all(p.ended.done() for p in peers.built) and len(peers.built) == 2
    await api.aclose()


async def test_slow_service_times_out_within_the_setup_budget(emulator: Emulator) -> None:
    emulator.faults.delay_s = 0.4
    api, peers = make_api(emulator, request_timeout_s=0.1), Peers()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(OrgaTimeoutError) as info:
        await open_session(api, peers, SessionParams(), setup_timeout_s=0.6)
    assert loop.time() - t0 < 1.0
    assert info.value.endpoint == "client_secrets" and info.value.retryable
    assert emulator.stats.client_secrets_requests >= 2  # retried with backoff
    assert peers.built == []
    await api.aclose()


async def test_answer_without_conversation_id(emulator: Emulator) -> None:
    emulator.faults.omit_conversation_id = True
    api, peers = make_api(emulator), Peers()
    with pytest.raises(OrgaProtocolError) as info:
        await open_session(api, peers, SessionParams())
    assert info.value.message == "response has no conversation_id"
    assert emulator.stats.calls_requests == 1  # not retryable
    assert peers.built[0].ended.done()
    assert emulator.sessions == {}  # the emulator dropped its half of the session
    await api.aclose()


async def test_malformed_answer(emulator: Emulator) -> None:
    emulator.faults.malformed_calls = True
    api, peers = make_api(emulator), Peers()
    with pytest.raises(OrgaProtocolError) as info:
        await open_session(api, peers, SessionParams())
    assert (info.value.endpoint, info.value.message) == ("calls", "response is not valid JSON")
    assert peers.built[0].ended.done() and emulator.sessions == {}
    await api.aclose()


async def test_rejected_tokens(emulator: Emulator) -> None:
    emulator.faults.reject_tokens = True
    api, peers = make_api(emulator), Peers()
    with pytest.raises(OrgaAuthError) as info:
        await open_session(api, peers, SessionParams())
    assert (info.value.endpoint, info.value.status, info.value.message) == (
        "ice_config", 401, "Invalid ephemeral token")
    assert emulator.stats.ice_config_requests == 1  # auth errors are not retried
    await api.aclose()


async def test_bad_server_message_is_counted_not_fatal(emulator: Emulator) -> None:
    api, peers = make_api(emulator), Peers()
    session = await open_session(api, peers, SessionParams())
    emu_session = emulator.sessions[session.conversation_id]
    channel = emu_session._channel
    assert channel is not None
    channel.send("{broken")
    channel.send('{"type":"something.new"}')
    channel.send('{"type":"response.output_item.done","text":"still alive"}')
    events = session.peer.events()
    seen = [await asyncio.wait_for(anext(events), 2) for _ in range(3)]
    assert [type(e).__name__ for e in seen] == ["SessionCreated", "ConversationCreated",
                                                 "ResponseDone"]
    assert session.peer.decoder.malformed == 1 and session.peer.decoder.unknown == 1
    assert not session.peer.ended.done()
    await session.peer.close()
    await api.aclose()

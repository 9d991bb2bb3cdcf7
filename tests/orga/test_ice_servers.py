"""ICE server URLs in every form providers use: normalised or skipped, never a failed call."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiortc import RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack

from gateway.aiortc_patches import stun_and_turn_servers
from gateway.orga.api import parse_ice_servers
from gateway.orga.ice import make_configuration
from gateway.orga.ice_servers import normalise_ice_servers, normalise_url
from gateway.orga.peer import OrgaPeer
from gateway.orga.settings import PeerSettings, SessionParams


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("stun:stun.l.google.com:19302", "stun:stun.l.google.com:19302"),
        ("stun:host:3478?transport=udp", "stun:host:3478"),
        ("STUN:Host:3478?transport=UDP", "stun:Host:3478"),
        (" stun:host ", "stun:host"),
        ("turn:host:3478?transport=udp", "turn:host:3478?transport=udp"),
        ("turn:host:3478?transport=TCP", "turn:host:3478?transport=tcp"),
        ("turn:host", "turn:host"),
        ("turns:host:5349", "turns:host:5349"),
        ("turns:host:443?transport=tcp", "turns:host:443?transport=tcp"),
        ("stuns:host:5349", None),
        ("turns:host:5349?transport=udp", None),
        ("turn:host:3478?transport=sctp", None),
        ("stun:[::1]:3478", None),
        ("stun:host:99999", None),
        ("stun:host:abc", None),
        ("http://host", None),
        ("host:3478", None),
        ("", None),
    ],
)
def test_normalise_url(url: str, expected: str | None) -> None:
    fixed, why = normalise_url(url)
    assert fixed == expected
    assert (why == "") == (expected is not None)


async def test_every_kept_url_builds_a_peer_connection() -> None:
    # What aiortc raised on before: building the pc must now succeed with all of these.
    entries: list[Any] = [
        {"urls": "stun:host:3478?transport=udp"},
        {"urls": ["turn:t:3478?transport=udp", "turn:t:3478?transport=tcp", "turns:t:5349",
                  "stuns:t:5349", "turn:t:1?transport=sctp"],
         "username": "u", "credential": "c"},
        {"urls": "turn:no-credentials:3478"},
        {"urls": "turn:t:3478", "username": "u", "credential": "c", "credentialType": "oauth"},
        "not an object",
        {"urls": [3478]},
        {"username": "only"},
    ]
    parsed = normalise_ice_servers(entries)
    assert [s.urls for s in parsed.servers] == [
        ["stun:host:3478"],
        ["turn:t:3478?transport=udp", "turn:t:3478?transport=tcp", "turns:t:5349"],
    ]
    assert len(parsed.skipped) == 7
    pc = RTCPeerConnection(make_configuration(parsed.servers))
    pc.addTransceiver("audio")
    assert stun_and_turn_servers(pc) == [(("host", 3478), ("t", 3478))]
    await pc.close()


def test_skipped_urls_give_one_warning_without_credentials(
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = {"iceServers": [
        {"urls": ["stuns:a:5349", "turns:b:5349?transport=udp"], "username": "user-x",
         "credential": "secret-credential"},
        {"urls": "gopher:c"},
    ]}
    with caplog.at_level(logging.WARNING):
        assert parse_ice_servers(body) == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "skipped 3" in text and "stuns:a:5349" in text and "gopher:c" in text
    assert "secret-credential" not in text and "user-x" not in text


async def test_peer_with_provider_style_servers_offers() -> None:
    servers = parse_ice_servers({"iceServers": [
        {"urls": "stun:127.0.0.1:3478?transport=udp"},
        {"urls": "turn:127.0.0.1:3478?transport=tcp", "username": "u", "credential": "c"},
    ]})
    peer = OrgaPeer(AudioStreamTrack(), PeerSettings(ice_addresses=("127.0.0.1",)),
                    SessionParams(), servers)
    assert stun_and_turn_servers(peer.pc)[0] == (("127.0.0.1", 3478), ("127.0.0.1", 3478))
    await peer.close()

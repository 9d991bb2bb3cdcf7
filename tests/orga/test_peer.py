"""OrgaPeer on its own: SDP layout, ICE restricted to loopback, no STUN, idempotent close."""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any

import aioice.ice
import pytest
from aiortc import RTCIceServer, RTCRtpReceiver
from aiortc.mediastreams import AudioStreamTrack

from gateway.aiortc_patches import stun_and_turn_servers
from gateway.orga.events import OrgaEndReason
from gateway.orga.ice import make_configuration
from gateway.orga.peer import OrgaPeer, candidates_from_sdp
from gateway.orga.settings import PeerSettings, SessionParams

LOOPBACK = PeerSettings(ice_addresses=("127.0.0.1",))


def mlines(sdp: str) -> list[str]:
    return [line.split()[0][2:] for line in sdp.splitlines() if line.startswith("m=")]


async def test_offer_layout_and_loopback_only_candidates() -> None:
    tuned: list[RTCRtpReceiver] = []
    peer = OrgaPeer(AudioStreamTrack(), LOOPBACK, SessionParams(), [], tuned.append)
    sdp = await peer.create_offer()
    assert mlines(sdp) == ["audio", "video", "application"]
    sections = re.split(r"\r\nm=", sdp)
    assert "a=sendrecv" in sections[1] and "a=sendonly" in sections[2]
    assert "webrtc-datachannel" in sections[3]
    candidates = [line for line in sdp.splitlines() if line.startswith("a=candidate:")]
    assert candidates, "full gathering puts candidates in the offer"
    assert all(line.split()[4] == "127.0.0.1" for line in candidates)
    assert all(" typ host" in line for line in candidates)
    assert {c["sdpMLineIndex"] for c in candidates_from_sdp(sdp)} == {0, 1, 2}
    assert tuned == [peer.pc.getTransceivers()[0].receiver]
    assert stun_and_turn_servers(peer.pc) == [(None, None)] * 3
    await peer.close()


async def test_video_mline_can_be_left_out() -> None:
    settings = PeerSettings(video_mline=False, ice_addresses=("127.0.0.1",))
    peer = OrgaPeer(AudioStreamTrack(), settings, SessionParams(), [])
    assert mlines(await peer.create_offer()) == ["audio", "application"]
    await peer.close()


def test_empty_server_list_stays_empty() -> None:
    # aiortc substitutes stun.l.google.com for None; we must never pass None.
    assert make_configuration([]).iceServers == []


@pytest.mark.parametrize(
    ("servers", "stun_queries"),
    [
        ([], 0),
        # A loopback STUN server (nothing listens on port 9): proves the probe can see queries.
        ([RTCIceServer(urls="stun:127.0.0.1:9")], 1),
    ],
)
async def test_no_stun_server_contacted_without_ice_servers(
    monkeypatch: pytest.MonkeyPatch, servers: list[RTCIceServer], stun_queries: int
) -> None:
    queried: list[Any] = []

    async def fake_srflx(protocol: Any, stun_server: Any) -> Any:
        queried.append(stun_server)
        raise ConnectionError("not contacted in tests")

    monkeypatch.setattr(aioice.ice, "server_reflexive_candidate", fake_srflx)
    peer = OrgaPeer(AudioStreamTrack(), LOOPBACK, SessionParams(), servers)
    await peer.create_offer()
    await peer.close()
    # one query per ICE connection (audio, video, data) and local address
    assert len(queried) == 3 * stun_queries
    assert all(server == ("127.0.0.1", 9) for server in queried)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_close_is_idempotent_reports_once_and_leaks_nothing() -> None:
    before = set(asyncio.all_tasks())
    fds = open_fds()
    peer = OrgaPeer(AudioStreamTrack(), LOOPBACK, SessionParams(), [])
    await peer.create_offer()
    await asyncio.gather(peer.close(), peer.close())
    await peer.close()
    assert peer.ended.result() is OrgaEndReason.LOCAL_CLOSE
    with pytest.raises(Exception, match="peer closed"):
        await peer.remote_audio
    await asyncio.sleep(0)
    leaked = {t for t in asyncio.all_tasks() - before if not t.done()}
    leaked.discard(asyncio.current_task())  # type: ignore[arg-type]
    assert not leaked
    assert open_fds() == fds  # the ICE sockets are closed
    assert not hasattr(peer, "_events")  # events are delivered to listeners, never queued


async def test_bad_answer_is_a_protocol_error() -> None:
    from gateway.orga.errors import OrgaProtocolError

    peer = OrgaPeer(AudioStreamTrack(), LOOPBACK, SessionParams(), [])
    await peer.create_offer()
    with pytest.raises(OrgaProtocolError) as info:
        await peer.accept_answer("v=0\r\nnot an sdp\r\n")
    assert info.value.endpoint == "peer"
    await peer.close()

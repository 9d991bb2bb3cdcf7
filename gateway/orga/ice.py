"""The one place that decides which local addresses ICE gathers host candidates on.

aioice (0.13) enumerates every interface address itself and always skips 127.0.0.1
(`aioice.ice.get_host_addresses`), then calls `Connection.get_component_candidates(component,
addresses)`. Tests and the demo must use loopback only, and production may want to pin the
addresses too (`[orga] ice_addresses`). Rather than patching aioice's module function globally,
we override `get_component_candidates` on each `Connection` of one `RTCPeerConnection` so the
configured addresses replace the enumerated ones for that peer only. The Orga client
(`peer.py`) and the emulator's answerer both call `restrict_host_addresses` after all
transceivers and the data channel exist and before `setLocalDescription` (which gathers).

Also here: `make_configuration`, which always passes an explicit `iceServers` list, because
aiortc substitutes a public Google STUN server when it is given None.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.rtcconfiguration import RTCBundlePolicy


def make_configuration(ice_servers: Sequence[RTCIceServer]) -> RTCConfiguration:
    """An explicit server list, possibly empty: never None (aiortc's public STUN fallback).

    Bundle policy "balanced" is the browser default the official SDK runs with.
    """
    return RTCConfiguration(iceServers=list(ice_servers), bundlePolicy=RTCBundlePolicy.BALANCED)


def _ice_connections(pc: RTCPeerConnection) -> Iterator[Any]:
    seen: set[int] = set()
    transports = [t.sender.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    for dtls in transports:
        # RTCDtlsTransport -> RTCIceTransport -> RTCIceGatherer -> aioice.Connection
        connection = dtls.transport.iceGatherer._connection
        if id(connection) not in seen:
            seen.add(id(connection))
            yield connection


def restrict_host_addresses(pc: RTCPeerConnection, addresses: Sequence[str] | None) -> int:
    """Make every ICE connection of `pc` gather host candidates on `addresses` only.

    None keeps aioice's enumeration (all non-loopback addresses). Returns the number of ICE
    connections changed. Must run before `setLocalDescription`.
    """
    if addresses is None:
        return 0
    fixed = list(addresses)
    count = 0
    for connection in _ice_connections(pc):
        original = getattr(connection, "get_component_candidates", None)
        if original is None:  # aioice changed: fail loudly rather than gather everywhere
            raise RuntimeError("aioice Connection has no get_component_candidates")

        async def get_component_candidates(
            component: int, addresses: list[str], timeout: int = 5, _orig: Any = original
        ) -> Any:
            return await _orig(component=component, addresses=fixed, timeout=timeout)

        connection.get_component_candidates = get_component_candidates
        count += 1
    return count


def stun_and_turn_servers(pc: RTCPeerConnection) -> list[tuple[Any, Any]]:
    """(stun_server, turn_server) of each ICE connection: lets tests prove none is contacted."""
    return [(c.stun_server, c.turn_server) for c in _ice_connections(pc)]

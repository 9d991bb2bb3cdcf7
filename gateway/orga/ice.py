"""The Orga peer's ICE configuration: `make_configuration`, which always passes an explicit
`iceServers` list, because aiortc substitutes a public Google STUN server when it is given None.

Which local addresses ICE gathers host candidates on (`[orga] ice_addresses`) is decided by
`gateway.aiortc_patches.restrict_host_addresses`, with the other aiortc/aioice patches.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiortc import RTCConfiguration, RTCIceServer
from aiortc.rtcconfiguration import RTCBundlePolicy


def make_configuration(ice_servers: Sequence[RTCIceServer]) -> RTCConfiguration:
    """An explicit server list, possibly empty: never None (aiortc's public STUN fallback).

    Bundle policy "balanced" is the browser default the official SDK runs with.
    """
    return RTCConfiguration(iceServers=list(ice_servers), bundlePolicy=RTCBundlePolicy.BALANCED)

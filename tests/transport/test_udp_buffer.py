"""The SIP UDP socket asks for a large receive buffer, so a flood that briefly outruns the
loop does not make the kernel drop legitimate requests queued with it."""

from __future__ import annotations

import socket

from gateway.sip.endpoint import SipEndpoint
from gateway.transport.driver import SipDriver
from gateway.transport.udp import RECEIVE_BUFFER, UdpTransport


async def test_receive_buffer_enlarged() -> None:
    driver = SipDriver(SipEndpoint(), lambda event: None)
    udp = await UdpTransport.start(driver)
    try:
        assert udp._transport is not None
        sock = udp._transport.get_extra_info("socket")
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        with open("/proc/sys/net/core/rmem_max") as f:
            ceiling = int(f.read())
        # Linux doubles the request for bookkeeping and clamps it at rmem_max.
        assert granted >= min(2 * ceiling, 2 * RECEIVE_BUFFER)
    finally:
        udp.close()
        driver.close()

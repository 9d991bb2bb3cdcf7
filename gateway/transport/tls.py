"""SIP over TLS (RFC 3261 §26.2, RFC 5922): the TCP transport with a TLS layer under the framing.

Everything above the TLS layer is `tcp.py`: the endpoint frames the decrypted byte stream,
responses go back on the connection the request came on, requests to a peer we have no
connection to open one, and the edge limits are the same `TcpLimits` — connections per source
and in total, idle timeout, header-read timeout, message size.

What TLS adds:
- an accepted connection is admitted (per-source and total caps) *before* the handshake, so a
  flood of half-open handshakes is capped like any other connection;
- the handshake runs under the header-read timeout: a client that connects and then stalls
  (or trickles its ClientHello) is closed after `header_timeout` seconds (`tls_handshake_timeout`);
- the server context is picked per source address (`TlsContexts.server_context`): a trunk
  with a `tls_client_ca` demands a client certificate signed by it, and a client without one
  is refused in the handshake (`tls_client_certificate`); other failures are `tls_handshake`;
- connections we open verify the server's certificate and its name (`TlsContexts.client_context`).

The SIP core sees `Transport.TLS`, so Via says `SIP/2.0/TLS` and our Contact `transport=tls`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

from gateway.security.ratelimit import ConcurrencyLimiter
from gateway.sip.address import Addr, Transport
from gateway.transport.driver import SipDriver
from gateway.transport.tcp import TcpLimits, TcpTransport, _Connection, _ids
from gateway.transport.tls_context import TlsContexts

log = logging.getLogger(__name__)

# OpenSSL reasons that mean "the client's certificate was missing or not signed by the CA".
_CLIENT_CERT_REASONS = frozenset({
    "PEER_DID_NOT_RETURN_A_CERTIFICATE", "CERTIFICATE_VERIFY_FAILED", "NO_CERTIFICATE_RETURNED",
    "CERTIFICATE_REQUIRED", "TLSV13_ALERT_CERTIFICATE_REQUIRED",
})


class _TlsConnection(_Connection):
    """Holds what arrives between the end of the handshake and the transport being handed over:
    asyncio's TLS layer may deliver the first message in the same step that completes it."""

    early: bytearray | None = None
    lost = False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            if self.early is not None:
                self.early += data
            return
        super().data_received(data)


class TlsTransport(TcpTransport):
    kind = Transport.TLS

    def __init__(self, driver: SipDriver, contexts: TlsContexts,
                 limits: TcpLimits | None = None, *,
                 on_reject: Callable[[str], None] | None = None,
                 admission: ConcurrencyLimiter | None = None) -> None:
        super().__init__(driver, limits, on_reject=on_reject, admission=admission)
        self.contexts = contexts
        self.handshakes = 0  # completed inbound handshakes (bench, tests)

    @classmethod
    async def listen(
        cls, driver: SipDriver, contexts: TlsContexts, host: str = "127.0.0.1", port: int = 0,
        advertise: str | None = None, *, limits: TcpLimits | None = None,
        on_reject: Callable[[str], None] | None = None,
        admission: ConcurrencyLimiter | None = None,
    ) -> TlsTransport:
        """Listen on `host:port` (0: any free port) and register TLS with the driver."""
        self = cls(driver, contexts, limits, on_reject=on_reject, admission=admission)
        await self._listen(host, port, advertise)
        return self

    # --- inbound: admitted by tcp.py, then the handshake ---------------------------------------
    def _accepted(self, conn: _Connection) -> None:
        if not conn.inbound:
            super()._accepted(conn)  # ours: create_connection finished the handshake already
            return
        raw = conn.transport
        assert raw is not None and isinstance(conn, _TlsConnection)
        # No SIP may be read or written in clear text: detach the connection until TLS is up.
        conn.transport = None
        conn.early = bytearray()
        raw.pause_reading()
        task = asyncio.get_running_loop().create_task(self._handshake(conn, raw))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handshake(self, conn: _TlsConnection, raw: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        timeout = self.limits.header_timeout
        try:
            ctx = self.contexts.server_context(conn.addr[0])
            async with asyncio.timeout(timeout):
                tls = await loop.start_tls(raw, conn, ctx, server_side=True,
                                           ssl_handshake_timeout=timeout * 2)
        except asyncio.CancelledError:
            raw.abort()
            conn.connection_lost(None)
            raise
        except Exception as exc:
            reason = self._failure_reason(exc)
            self._reject(reason)
            why = (f"not done after {timeout:.1f} s" if reason == "tls_handshake_timeout"
                   else _describe(exc))
            log.info("TLS handshake with %s failed: %s", conn.addr[0], why)
            raw.abort()
            conn.connection_lost(None)
            return
        if tls is None or conn.lost or tls.is_closing():
            # Closed as the handshake completed: never registered, so nothing to send it.
            conn.connection_lost(None)
            return
        self.handshakes += 1
        conn.transport = tls
        log.debug("TLS %s %s from %s", tls.get_extra_info("ssl_object").version(),
                  tls.get_extra_info("cipher"), conn.addr[0])
        super()._accepted(conn)
        early, conn.early = conn.early, None
        if early:
            conn.data_received(bytes(early))

    @staticmethod
    def _failure_reason(exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return "tls_handshake_timeout"
        if isinstance(exc, ssl.SSLCertVerificationError):
            return "tls_client_certificate"
        if isinstance(exc, ssl.SSLError) and (exc.reason or "") in _CLIENT_CERT_REASONS:
            return "tls_client_certificate"
        return "tls_handshake"

    # --- outbound: verify the server -------------------------------------------------------------
    def _new_connection(self, inbound: bool) -> _Connection:
        return _TlsConnection(self, next(_ids), inbound)

    async def _open(self, addr: Addr) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            lambda: self._new_connection(False), addr[0], addr[1],
            ssl=self.contexts.client_context(addr[0]), server_hostname=addr[0],
            ssl_handshake_timeout=self.limits.header_timeout,
        )
        return conn


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or exc.__class__.__name__
    return str(exc) or exc.__class__.__name__

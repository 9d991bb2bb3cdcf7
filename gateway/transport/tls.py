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
import contextlib
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
    """One connection. Inbound ones run TLS in memory (`ssl.SSLObject` over two `MemoryBIO`s)
    under our own protocol: admission, the per-trunk context and the handshake deadline are
    ours from the first byte, on asyncio's loop and uvloop alike (a loop's `start_tls` cannot
    take over a connection whose first bytes uvloop already delivered). Outbound ones use the
    loop's TLS (`create_connection(ssl=...)`) and see plaintext: `_tls` stays None."""

    _tls: ssl.SSLObject | None = None
    _timer: asyncio.TimerHandle | None = None
    established = False
    _peer_closed = False

    def start_handshake(self, ctx: ssl.SSLContext, timeout: float) -> None:
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = ctx.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._timer = asyncio.get_running_loop().call_later(timeout, self._on_stalled)

    def data_received(self, data: bytes) -> None:
        if self._tls is None:
            super().data_received(data)
            return
        if self.transport is None or self.transport.is_closing():
            return
        self._incoming.write(data)
        if not self.established and not self._handshake():
            return
        clear = self._read_clear()
        if clear:
            super().data_received(clear)
        if self._peer_closed:
            self.close()  # what came before the close_notify is served; ours answers it

    def _handshake(self) -> bool:
        assert self._tls is not None
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return False
        except ssl.SSLError as exc:
            self._flush()  # the alert tells the client why
            self._fail(TlsTransport._failure_reason(exc), _describe(exc))
            return False
        self._flush()
        self.established = True
        self._cancel_timer()
        assert isinstance(self.owner, TlsTransport)
        self.owner._established(self, self._tls)
        return True

    def _read_clear(self) -> bytes:
        assert self._tls is not None
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self._tls.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                chunk = b""
            except ssl.SSLError as exc:
                self.owner._reject("malformed")
                log.info("TLS record error from %s: %s", self.addr[0], _describe(exc))
                if self.transport is not None:
                    self.transport.abort()
                return b""
            if not chunk:  # the peer's close_notify (a MemoryBIO without data raises WantRead)
                self._peer_closed = True
                break
            chunks.append(chunk)
        self._flush()  # TLS 1.3 session tickets and the like
        return b"".join(chunks)

    def write(self, data: bytes) -> None:
        if self._tls is None:
            super().write(data)
            return
        if not self.established or self.transport is None or self.transport.is_closing():
            return
        try:
            self._tls.write(data)
        except ssl.SSLError:
            self.transport.abort()
            return
        self._flush()
        self.touch()

    def _flush(self) -> None:
        pending = self._outgoing.read()
        if pending and self.transport is not None and not self.transport.is_closing():
            self.transport.write(pending)

    def close(self) -> None:
        if self._tls is not None and self.established and self.transport is not None \
                and not self.transport.is_closing():
            with contextlib.suppress(ssl.SSLError):
                self._tls.unwrap()  # close_notify; the peer's reply is not awaited
            self._flush()
        super().close()

    def _on_stalled(self) -> None:
        self._timer = None
        timeout = self.owner.limits.header_timeout
        self._fail("tls_handshake_timeout", f"not done after {timeout:.1f} s")

    def _fail(self, reason: str, why: str) -> None:
        self._cancel_timer()
        self.owner._reject(reason)
        log.info("TLS handshake with %s failed: %s", self.addr[0], why)
        if self.transport is not None:
            self.transport.close()  # after the alert, if any, is written

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)


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
        assert isinstance(conn, _TlsConnection)
        # Not registered until TLS is up: nothing may be sent to it in clear text.
        conn.start_handshake(self.contexts.server_context(conn.addr[0]),
                             self.limits.header_timeout)

    def _established(self, conn: _TlsConnection, tls: ssl.SSLObject) -> None:
        self.handshakes += 1
        log.debug("TLS %s %s from %s", tls.version(), tls.cipher(), conn.addr[0])
        super()._accepted(conn)

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

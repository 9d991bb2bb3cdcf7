"""SIP over TLS on real loopback sockets: replies on the connection with `transport=tls`, the TCP
limits applied to TLS (per-source cap counting handshakes, stalled handshakes closed by the
header timeout), mutual TLS per trunk, certificate reload without dropping connections, and
outbound connections that verify the server."""

from __future__ import annotations

import asyncio
import ssl
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from gateway.sip.core import EndpointConfig
from gateway.sip.endpoint import SipEndpoint
from gateway.sip.events import Event, InviteReceived
from gateway.sip.message import SipResponse as Response
from gateway.sip.parser import parse_message
from gateway.transport.driver import SipDriver
from gateway.transport.tcp import TcpLimits
from gateway.transport.tls import TlsTransport
from gateway.transport.tls_context import TlsConfigError, TlsContexts, TlsFiles
from tests.certs import Ca, Issued, issue, make_ca
from tests.sip.test_endpoint_uas import raw
from tests.transport.test_transports import read_message

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
MTLS_HOST = "127.0.0.3"  # the "trunk" that must present a client certificate


def tls_raw(method: str = "OPTIONS", branch: str = "z9hG4bK-t", body: str = "") -> bytes:
    return raw(method, via=f"SIP/2.0/TLS 127.0.0.1:5091;branch={branch}", branch=branch,
               body=body)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, object]:
    ca = make_ca(tmp_path, "Gateway CA")
    other = make_ca(tmp_path, "Other CA")
    return {
        "ca": ca, "other": other, "dir": tmp_path,
        "server": issue(ca, tmp_path, "server"),
        "client": issue(ca, tmp_path, "client", names=("pbx.example",), client=True),
        "stranger": issue(other, tmp_path, "stranger", names=("pbx.example",), client=True),
    }


def files_for(pki: dict[str, object], server: Issued | None = None) -> TlsFiles:
    server = server or pki["server"]  # type: ignore[assignment]
    ca = pki["ca"]
    assert isinstance(server, Issued) and isinstance(ca, Ca)
    return TlsFiles(str(server.cert), str(server.key), client_cas={"pbx": str(ca.cert)},
                    server_ca=str(ca.cert))


@asynccontextmanager
async def serving(pki: dict[str, object], limits: TcpLimits | None = None,
                  events: list[Event] | None = None
                  ) -> AsyncIterator[tuple[TlsTransport, list[str]]]:
    endpoint = SipEndpoint(EndpointConfig())
    driver = SipDriver(endpoint, (events if events is not None else []).append)
    contexts = TlsContexts(files_for(pki), lambda host: "pbx" if host == MTLS_HOST else None)
    reasons: list[str] = []
    tls = await TlsTransport.listen(driver, contexts, limits=limits or TcpLimits(),
                                    on_reject=reasons.append)
    try:
        yield tls, reasons
    finally:
        await tls.close()
        driver.close()


def client_context(pki: dict[str, object], cert: Issued | None = None) -> ssl.SSLContext:
    ca = pki["ca"]
    assert isinstance(ca, Ca)
    ctx = ssl.create_default_context(cafile=str(ca.cert))
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    return ctx


async def connect(tls: TlsTransport, ctx: ssl.SSLContext, source: str = "127.0.0.1") -> Stream:
    return await asyncio.wait_for(asyncio.open_connection(
        "127.0.0.1", tls.local_addr[1], ssl=ctx, server_hostname="127.0.0.1",
        local_addr=(source, 0)), 5)


async def serves(stream: Stream, branch: str) -> bool:
    stream[1].write(tls_raw(branch=branch))
    return (await read_message(stream[0])).startswith(b"SIP/2.0 200")


async def refused(stream: Stream) -> bool:
    """The server ended this connection (TLS 1.3 reports a refused client cert on first read)."""
    try:
        stream[1].write(tls_raw(branch="z9hG4bK-refused"))
        return await asyncio.wait_for(stream[0].read(), 3) == b""
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return True


async def test_tls_replies_on_the_connection_with_tls_via_and_contact(
        pki: dict[str, object]) -> None:
    events: list[Event] = []
    async with serving(pki, events=events) as (tls, reasons):
        stream = await connect(tls, client_context(pki))
        assert await serves(stream, "z9hG4bK-o1")
        stream[1].write(tls_raw("INVITE", branch="z9hG4bK-i1", body="v=0\r\n"))
        trying = parse_message(await read_message(stream[0]))
        assert isinstance(trying, Response) and trying.status == 100
        (invite,) = [e for e in events if isinstance(e, InviteReceived)]
        assert invite.source.transport.value == "TLS"
        driver = tls.driver
        driver.run(lambda now: driver.endpoint.answer(invite.call, b"v=0\r\n", now))
        ok = parse_message(await read_message(stream[0]))
        assert isinstance(ok, Response) and ok.status == 200
        contact = ok.headers.get("Contact") or ""
        assert ";transport=tls" in contact and f":{tls.local_addr[1]}" in contact
        assert tls.handshakes == 1 and reasons == []
        stream[1].close()


async def test_mtls_trunk_refuses_missing_and_foreign_certificates_accepts_its_own(
        pki: dict[str, object]) -> None:
    async with serving(pki) as (tls, reasons):
        no_cert = await connect(tls, client_context(pki), MTLS_HOST)
        assert await refused(no_cert)
        foreign = await connect(tls, client_context(pki, pki["stranger"]),  # type: ignore[arg-type]
                                MTLS_HOST)
        assert await refused(foreign)
        await asyncio.sleep(0.05)
        assert reasons == ["tls_client_certificate", "tls_client_certificate"]
        good = await connect(tls, client_context(pki, pki["client"]),  # type: ignore[arg-type]
                             MTLS_HOST)
        assert await serves(good, "z9hG4bK-good")
        # Another source (no trunk with a client CA) needs no client certificate.
        plain = await connect(tls, client_context(pki), "127.0.0.1")
        assert await serves(plain, "z9hG4bK-plain")
        assert tls.connection_count == 2
        for s in (no_cert, foreign, good, plain):
            s[1].close()


async def test_stalled_handshake_closed_by_header_timeout_others_unaffected(
        pki: dict[str, object]) -> None:
    limits = TcpLimits(header_timeout=0.3, max_per_source=2, max_total=10)
    async with serving(pki, limits) as (tls, reasons):
        good = await connect(tls, client_context(pki), "127.0.0.2")
        stalled = await asyncio.open_connection("127.0.0.1", tls.local_addr[1])
        stalled[1].write(b"\x16\x03\x01")  # the first bytes of a ClientHello, then nothing
        trickle = await asyncio.open_connection("127.0.0.1", tls.local_addr[1])
        # Per-source cap counts connections still in their handshake.
        third = await asyncio.open_connection("127.0.0.1", tls.local_addr[1])
        assert await asyncio.wait_for(third[0].read(), 2) == b""
        for _ in range(3):  # trickling does not push the deadline back
            trickle[1].write(b"\x16")
            await asyncio.sleep(0.1)
        assert await asyncio.wait_for(stalled[0].read(), 2) == b""
        assert await asyncio.wait_for(trickle[0].read(), 2) == b""
        assert reasons.count("tls_handshake_timeout") == 2
        assert "tcp_connections_source" in reasons
        assert await serves(good, "z9hG4bK-good")
        await asyncio.sleep(0.05)
        assert tls.connection_count == 1 and tls._admission.active == 1
        for s in (good, stalled, trickle, third):
            s[1].close()


async def test_garbage_instead_of_a_handshake_is_refused(pki: dict[str, object]) -> None:
    async with serving(pki) as (tls, reasons):
        stream = await asyncio.open_connection("127.0.0.1", tls.local_addr[1])
        stream[1].write(tls_raw())  # plain SIP to the TLS port
        assert await asyncio.wait_for(stream[0].read(), 2) == b""
        assert reasons == ["tls_handshake"]
        stream[1].close()


async def test_reload_swaps_certificates_without_dropping_connections(
        pki: dict[str, object]) -> None:
    directory = pki["dir"]
    ca = pki["ca"]
    assert isinstance(directory, Path) and isinstance(ca, Ca)
    async with serving(pki) as (tls, _):
        before = await connect(tls, client_context(pki))
        renewed = issue(ca, directory, "renewed")
        tls.contexts.reload(files_for(pki, renewed))
        assert await serves(before, "z9hG4bK-kept")  # the old connection lives on
        after = await connect(tls, client_context(pki))
        peer = after[1].get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert peer is not None and renewed.cert.read_bytes().count(b"CERTIFICATE") == 2
        from cryptography import x509
        assert x509.load_der_x509_certificate(peer) == x509.load_pem_x509_certificate(
            renewed.cert.read_bytes())
        broken = TlsFiles(str(renewed.cert), str(directory / "missing.key"))
        with pytest.raises(TlsConfigError) as info:
            tls.contexts.reload(broken)
        assert "missing.key" in str(info.value)
        assert tls.contexts.generation == 2  # the renewed contexts still serve
        third = await connect(tls, client_context(pki))
        assert await serves(third, "z9hG4bK-after")
        for s in (before, after, third):
            s[1].close()


async def test_outbound_verifies_the_server_certificate(pki: dict[str, object]) -> None:
    """Our request to a TLS server signed by a CA we trust arrives; one we do not trust fails."""
    async with serving(pki) as (server, _):
        received: list[Event] = []
        server.driver._on_event = received.append
        ep = SipEndpoint(EndpointConfig())
        driver = SipDriver(ep, lambda e: None)
        trusting = TlsContexts(files_for(pki), lambda host: None)
        client = await TlsTransport.listen(driver, trusting)
        try:
            port = server.local_addr[1]
            driver.run(lambda now: ep.invite(f"sip:agent@127.0.0.1:{port};transport=tls", now,
                                             sdp=b"v=0\r\n", from_uri="<sip:probe@127.0.0.1>"))
            for _ in range(200):
                if received:
                    break
                await asyncio.sleep(0.01)
            assert any(isinstance(e, InviteReceived) for e in received)
        finally:
            await client.close()
            driver.close()
        # A client that trusts only the other CA refuses our server's certificate.
        other = pki["other"]
        assert isinstance(other, Ca)
        received.clear()
        ep2 = SipEndpoint(EndpointConfig())
        driver2 = SipDriver(ep2, lambda e: None)
        server_cert = pki["server"]
        assert isinstance(server_cert, Issued)
        doubting = TlsContexts(TlsFiles(str(server_cert.cert), str(server_cert.key),
                                        server_ca=str(other.cert)), lambda host: None)
        client2 = await TlsTransport.listen(driver2, doubting)
        try:
            driver2.run(lambda now: ep2.invite(f"sip:agent@127.0.0.1:{port};transport=tls",
                                               now, sdp=b"v=0\r\n",
                                               from_uri="<sip:probe@127.0.0.1>"))
            await asyncio.sleep(0.5)
            assert received == [] and client2.connection_count == 0
        finally:
            await client2.close()
            driver2.close()


async def test_two_endpoints_call_each_other_over_tls_bye_on_the_same_connection(
        pki: dict[str, object]) -> None:
    """Our UAC opens (and verifies) the TLS connection; the UAS's BYE goes back over it."""
    from gateway.sip.events import AckReceived, CallAnswered, DialogEnded, SipEndReason
    from tests.transport.test_transports import FAST

    a_events: list[Event] = []
    b_events: list[Event] = []
    a_ep, b_ep = SipEndpoint(EndpointConfig(timers=FAST)), SipEndpoint(EndpointConfig(timers=FAST))
    a, b = SipDriver(a_ep, a_events.append), SipDriver(b_ep, b_events.append)
    a_tls = await TlsTransport.listen(a, TlsContexts(files_for(pki), lambda host: None))
    b_tls = await TlsTransport.listen(b, TlsContexts(files_for(pki), lambda host: None))

    async def wait_for(events: list[Event], kind: type) -> Event:
        async def poll() -> Event:
            while not any(isinstance(e, kind) for e in events):
                await asyncio.sleep(0.005)
            return next(e for e in events if isinstance(e, kind))

        return await asyncio.wait_for(poll(), 3)

    try:
        port = b_tls.local_addr[1]
        call = a.run(lambda now: a_ep.invite(
            f"sip:agent@127.0.0.1:{port};transport=tls", now, sdp=b"v=0\r\n",
            from_uri="<sip:probe@127.0.0.1>"))
        invite = await wait_for(b_events, InviteReceived)
        assert isinstance(invite, InviteReceived) and invite.source.transport.value == "TLS"
        b.run(lambda now: b_ep.answer(invite.call, b"v=0\r\n", now))
        answered = await wait_for(a_events, CallAnswered)
        assert isinstance(answered, CallAnswered) and answered.call == call
        await wait_for(b_events, AckReceived)
        b.run(lambda now: b_ep.hang_up(invite.call, now))
        ended = await wait_for(a_events, DialogEnded)
        assert ended == DialogEnded(call, SipEndReason.REMOTE_BYE)
        assert a_tls.connection_count == 1 and b_tls.connection_count == 1
        assert b_tls.handshakes == 1 and a_tls.handshakes == 0
    finally:
        await a_tls.close()
        await b_tls.close()
        a.close()
        b.close()


@pytest.mark.parametrize("client", ["tls1.1", "cbc-only"])
async def test_old_protocols_and_weak_ciphers_refused(pki: dict[str, object], client: str) -> None:
    """TLS 1.2 is the floor; TLS 1.2 clients must offer ECDHE with an AEAD cipher."""
    async with serving(pki) as (tls, reasons):
        ctx = client_context(pki)
        if client == "tls1.1":
            with warnings.catch_warnings():  # the deprecation is the point of the test
                warnings.simplefilter("ignore", DeprecationWarning)
                ctx.minimum_version = ssl.TLSVersion.TLSv1
                ctx.maximum_version = ssl.TLSVersion.TLSv1_1
            ctx.set_ciphers("ALL:@SECLEVEL=0")  # let the client even try
        else:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA")
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            await connect(tls, ctx)
        await asyncio.sleep(0.05)
        assert reasons == ["tls_handshake"] and tls.connection_count == 0
        # A modern client still gets in.
        ok = await connect(tls, client_context(pki))
        assert await serves(ok, "z9hG4bK-modern")
        ok[1].close()


async def test_tcp_and_tls_share_the_connection_caps(pki: dict[str, object]) -> None:
    from gateway.security.ratelimit import ConcurrencyLimiter
    from gateway.transport.tcp import TcpTransport
    from tests.transport.test_transports import tcp_raw

    limits = TcpLimits(max_per_source=2, max_total=10)
    shared = ConcurrencyLimiter(limits.max_per_source, limits.max_total)
    reasons: list[str] = []
    driver = SipDriver(SipEndpoint(EndpointConfig()), lambda event: None)
    tcp = await TcpTransport.start(driver, limits=limits, on_reject=reasons.append,
                                   admission=shared)
    tls = await TlsTransport.listen(driver, TlsContexts(files_for(pki), lambda host: None),
                                    limits=limits, on_reject=reasons.append, admission=shared)
    try:
        plain = await asyncio.open_connection("127.0.0.1", tcp.local_addr[1])
        plain[1].write(tcp_raw(branch="z9hG4bK-p"))
        assert (await read_message(plain[0])).startswith(b"SIP/2.0 200")
        secure = await connect(tls, client_context(pki))
        assert await serves(secure, "z9hG4bK-s")
        third = await asyncio.open_connection("127.0.0.1", tls.local_addr[1])
        assert await asyncio.wait_for(third[0].read(), 2) == b""  # the source's 3rd connection
        assert reasons == ["tcp_connections_source"]
        for s in (plain, secure, third):
            s[1].close()
    finally:
        await tcp.close()
        await tls.close()
        driver.close()


async def test_connections_closed_right_after_the_handshake_leave_nothing(
        pki: dict[str, object]) -> None:
    """Clients that finish the handshake and hang up at once (scanners, health checks): every
    slot and table entry is released, whichever side of the handshake's end the close lands."""
    async with serving(pki, TcpLimits(max_per_source=100, max_total=100)) as (tls, _):
        for _ in range(30):
            stream = await connect(tls, client_context(pki))
            stream[1].close()
        for _ in range(100):
            if tls.connection_count == 0 and tls._admission.active == 0 and not tls._tasks:
                break
            await asyncio.sleep(0.02)
        assert (tls.connection_count, tls._admission.active, len(tls._tasks)) == (0, 0, 0)
        assert tls.driver.endpoint.table_sizes()["streams"] == 0


def test_tls_on_uvloop(pki: dict[str, object]) -> None:
    """The daemon runs on uvloop, which starts reading a connection before its protocol could
    hand it over: the handshake, a request and a stalled handshake's timeout there too."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> list[str]:
        async with serving(pki, TcpLimits(header_timeout=0.3)) as (tls, reasons):
            good = await connect(tls, client_context(pki))
            assert await serves(good, "z9hG4bK-uv")
            stalled = await asyncio.open_connection("127.0.0.1", tls.local_addr[1])
            stalled[1].write(b"\x16\x03\x01")
            assert await asyncio.wait_for(stalled[0].read(), 3) == b""
            assert await serves(good, "z9hG4bK-uv2")
            for s in (good, stalled):
                s[1].close()
            return reasons

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(scenario()) == ["tls_handshake_timeout"]

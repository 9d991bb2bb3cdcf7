"""The gateway process: the one place that builds parts from the config and wires them.

`Gateway.start()` binds the SIP transports, the HTTP endpoint and the Orga client, then tells
systemd READY=1. SIP events go to the call registry (new INVITEs after trunk identification);
`drain()` is SIGTERM (503 to new calls, active calls finish or are hung up after
`limits.drain_timeout_s`), `stop()` is the fast path (SIGINT, or after a drain). SIGHUP reloads
the TLS certificate and key (`reload_tls()`): new connections use them, calls go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Callable, Iterable
from dataclasses import replace

from gateway import fallback
from gateway.aiortc_patches import check_versions, single_threaded_ffmpeg
from gateway.call import CallContext
from gateway.calls import CallRegistry
from gateway.clock import LoopClock
from gateway.config import Config
from gateway.config.load import tls_files
from gateway.control.app import operator_app
from gateway.control.health import GatewayState
from gateway.control.server import OperatorServer
from gateway.drain import Draining
from gateway.media.ports import PortPool
from gateway.metrics import Metrics
from gateway.orga.api import OrgaApi
from gateway.orga.settings import OrgaClientSettings, PeerSettings
from gateway.outcomes import Outcome
from gateway.overload import LoadMonitor, OverloadThresholds
from gateway.records.service import RecordsService
from gateway.sdnotify import SystemdNotifier
from gateway.security.ratelimit import ConcurrencyLimiter
from gateway.security.screen import NO_TRUNK, SecurityScreen
from gateway.sip.address import Peer
from gateway.sip.core import EndpointConfig
from gateway.sip.endpoint import SipEndpoint
from gateway.sip.events import CallHandle, Event, InviteReceived, RequestHandle
from gateway.sip.parser import DEFAULT_LIMITS
from gateway.transport.driver import SipDriver
from gateway.transport.tcp import TcpLimits, TcpTransport
from gateway.transport.tls import TlsTransport
from gateway.transport.tls_context import TlsConfigError, TlsContexts, check_files
from gateway.transport.udp import UdpTransport

log = logging.getLogger(__name__)

PORT_QUARANTINE_S = 5.0  # a late packet of the last call must not reach the next one
BYE_GRACE_T1 = 4  # shutdown waits up to 4·T1 for the endpoint to be idle (our BYEs answered)


def endpoint_config(config: Config) -> EndpointConfig:
    """The SIP core's settings from the config: message size bound by `security`; NOTIFY
    accepted in dialogs because calls send REFER (transfer, RFC 3515 §2.4.4)."""
    size = config.security.max_message_size
    limits = replace(DEFAULT_LIMITS, max_message_bytes=size,
                     max_body_bytes=min(DEFAULT_LIMITS.max_body_bytes, size))
    allow = (*EndpointConfig().allow, "NOTIFY")
    return EndpointConfig(limits=limits, allow=allow)


class EndpointSignalling:
    """`CallSignalling` bound to the SIP driver: commands run at loop time and flush at once.

    A command for a call whose dialog already ended (a race with the caller's BYE or CANCEL)
    is a no-op in the endpoint itself; misuse (answering twice) raises, as it should.
    """

    def __init__(self, driver: SipDriver) -> None:
        self._driver = driver
        self._ep = driver.endpoint

    def ring(self, call: CallHandle) -> None:
        self._driver.run(lambda now: self._ep.ring(call, now))

    def progress(self, call: CallHandle, sdp: bytes) -> None:
        self._driver.run(lambda now: self._ep.ring(call, now, sdp=sdp))

    def answer(self, call: CallHandle, sdp: bytes) -> None:
        self._driver.run(lambda now: self._ep.answer(call, sdp, now))

    def reject(self, call: CallHandle, status: int, *, reason: str | None = None,
               headers: Iterable[tuple[str, str]] = ()) -> None:
        self._driver.run(lambda now: self._ep.reject(call, status, now, reason=reason,
                                                     headers=headers))

    def hang_up(self, call: CallHandle) -> None:
        self._driver.run(lambda now: self._ep.hang_up(call, now))

    def answer_offer(self, call: CallHandle, sdp: bytes) -> None:
        self._driver.run(lambda now: self._ep.answer_offer(call, sdp, now))

    def reject_offer(self, call: CallHandle, status: int, *,
                     headers: Iterable[tuple[str, str]] = ()) -> None:
        self._driver.run(lambda now: self._ep.reject_offer(call, status, now,
                                                           headers=headers))

    def invite(self, target: str, sdp: bytes, *, from_uri: str, peer: Peer,
               credentials: tuple[str, str] | None = None) -> tuple[CallHandle, str]:
        handle = self._driver.run(lambda now: self._ep.invite(
            target, now, sdp=sdp, from_uri=from_uri, peer=peer, credentials=credentials))
        return handle, self._ep.call_request(handle).call_id

    def send_request(self, call: CallHandle, method: str, *,
                     headers: Iterable[tuple[str, str]] = ()) -> RequestHandle:
        return self._driver.run(lambda now: self._ep.send_request(call, method, now,
                                                                  headers=headers))


class Gateway:
    def __init__(self, config: Config, *, notifier: SystemdNotifier | None = None,
                 on_token: Callable[[str], None] | None = None,
                 on_token_spent: Callable[[str], None] | None = None,
                 port_quarantine_s: float = PORT_QUARANTINE_S) -> None:
        self.config = config
        self._on_token = on_token
        self._on_token_spent = on_token_spent
        self.metrics = Metrics(max_conversations=config.limits.max_calls)
        self.notifier = notifier or SystemdNotifier()
        self.clock = LoopClock()  # the one clock of the process (gateway/clock.py)
        self.ports = PortPool(config.rtp.port_min, config.rtp.port_max, port_quarantine_s,
                              self.clock)
        self.api: OrgaApi | None = None
        self.driver: SipDriver | None = None
        self.registry: CallRegistry | None = None
        self.http: OperatorServer | None = None
        self.draining = Draining()  # the one flag: screen, registry, /ready, systemd status
        lim = config.limits
        self.load = LoadMonitor(OverloadThresholds(
            loop_lag_s=lim.overload_loop_lag_ms / 1000, cpu_fraction=lim.overload_cpu_percent / 100,
            window_s=lim.overload_window_s), self.metrics.event_loop_lag)
        # Its buckets start full; the first `now` it is given (loop time) only refills them.
        self.screen = SecurityScreen(config, self.metrics, draining=self.draining,
                                     availability=self._availability)
        self.records = RecordsService(config, self.metrics)
        self._udp: UdpTransport | None = None
        self._tcp: TcpTransport | None = None
        self._tls: TlsTransport | None = None
        self.tls_contexts: TlsContexts | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    # --- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        check_versions()  # the aiortc/aioice internals we patch: refuse an untested version
        single_threaded_ffmpeg()  # no FFmpeg thread pool per call (aiortc_patches.py, 3.)
        cfg = self.config
        orga = cfg.orga
        self.api = OrgaApi(
            OrgaClientSettings(
                base_url=orga.base_url, api_key=cfg.api_key.reveal(), email=orga.email,
                request_timeout_s=orga.request_timeout_s, setup_timeout_s=orga.setup_timeout_s,
            ),
            observer=self.metrics.orga_request,
            on_token=self._on_token,
            on_token_spent=self._on_token_spent,
        )
        await self.records.start()
        await fallback.preload(cfg.routes)  # the routes' fallback announcements, off the loop
        endpoint = SipEndpoint(endpoint_config(cfg), pre_dispatch=self.screen, gate=self.screen,
                               observe=self._count_sip)
        self.driver = SipDriver(endpoint, self._on_sip_event)
        mcp = None
        if cfg.mcp.public_url:
            from gateway.control.mcp_tools import McpTools  # the SDK only when configured

            mcp = McpTools(cfg.mcp.public_url, on_tool=self.metrics.tool_call)
        ctx = CallContext(
            config=cfg, metrics=self.metrics, ports=self.ports, api=self.api,
            signalling=EndpointSignalling(self.driver),
            peer_settings=PeerSettings(
                video_mline=orga.video_mline, ice_addresses=orga.ice_addresses or None,
                media_timeout_s=orga.media_timeout_s,
            ),
            advertised_address=cfg.sip.public_address or cfg.rtp.bind,
            clock=self.clock,
            records=self.records.sink, recorder=self.records.recorder,
            mcp=mcp,
        )
        self.registry = CallRegistry(ctx, self.draining, lambda: self.load.overloaded)
        self.load.start()
        advertise = cfg.sip.public_address
        if "udp" in cfg.sip.transports:
            self._udp = await UdpTransport.start(self.driver, cfg.sip.bind, cfg.sip.port,
                                                 advertise=advertise)
        sec = cfg.security
        # TLS connections share the TCP limits (per source, total, idle, header timeout); the
        # connection caps count TCP and TLS connections together.
        limits = TcpLimits(idle_timeout=sec.tcp_idle_timeout_s,
                           header_timeout=sec.tcp_header_timeout_s,
                           max_per_source=sec.tcp_max_connections_per_source,
                           max_total=sec.tcp_max_connections)
        admission = ConcurrencyLimiter(limits.max_per_source, limits.max_total)
        if "tcp" in cfg.sip.transports:
            self._tcp = await TcpTransport.start(
                self.driver, cfg.sip.bind, cfg.sip.port, advertise=advertise, limits=limits,
                on_reject=self.metrics.security_rejection, admission=admission)
        if "tls" in cfg.sip.transports:
            screen = self.screen

            def trunk_name(host: str) -> str | None:
                trunk = screen.trunk(host)
                return trunk.name if trunk is not None else None

            self.tls_contexts = TlsContexts(tls_files(cfg), trunk_name)
            self._warn_tls_expiry()
            self._tls = await TlsTransport.listen(
                self.driver, self.tls_contexts, cfg.sip.bind, cfg.sip.tls_port,
                advertise=advertise, limits=limits, on_reject=self.metrics.security_rejection,
                admission=admission)
        app = operator_app(self.metrics, self._state, self.registry.describe,
                           directory=self.registry, token=cfg.api_token, mcp=mcp)
        self.http = OperatorServer(app, host=cfg.http.host, port=cfg.http.port)
        await self.http.start()
        self.metrics.free_ports_from(lambda: self.ports.free_count)
        self.metrics.loop_tasks_from(asyncio.get_running_loop())
        # Everything built so far (modules, the app, the config) lives as long as the process.
        # Freezing it keeps the collector from walking it again: a full collection over the
        # ~100,000 objects of aiortc, FastAPI and friends stalled the loop 20-60 ms, and every
        # call in progress heard that as a gap (bench/capacity.py, the first calls of a worker).
        gc.collect()
        gc.freeze()
        log.info("gateway ready: SIP %s:%d (%s)%s, RTP %s:%d-%d, Orga %s", cfg.sip.bind,
                 cfg.sip.port, "+".join(cfg.sip.transports),
                 f", TLS :{cfg.sip.tls_port}" if self._tls else "", cfg.rtp.bind,
                 cfg.rtp.port_min, cfg.rtp.port_max, orga.base_url)
        self.notifier.ready(self._status())
        if self.notifier.enabled:
            self._watchdog = asyncio.create_task(self.notifier.run_watchdog(self._status))

    def reload_tls(self) -> bool:
        """SIGHUP: load the certificate, key and CA files again; on failure keep the old ones."""
        if self.tls_contexts is None:
            return False
        try:
            self.tls_contexts.reload(tls_files(self.config))
        except TlsConfigError as exc:
            log.error("TLS reload failed, keeping the certificate in use: %s", exc)
            return False
        log.info("TLS certificate reloaded (generation %d)", self.tls_contexts.generation)
        self._warn_tls_expiry()
        return True

    def _warn_tls_expiry(self) -> None:
        for warning in check_files(tls_files(self.config))[1]:
            log.warning("%s", warning)

    def _state(self) -> GatewayState:
        assert self.registry is not None
        return GatewayState(bool(self.draining), len(self.registry.calls),
                            self.config.limits.max_calls, self.load.overloaded)

    def _availability(self) -> str | None:
        """Why this worker takes no new call now (OPTIONS gets 503), or None."""
        return self.registry.availability() if self.registry is not None else None

    def _status(self) -> str:
        calls = len(self.registry.calls) if self.registry else 0
        return f"{'draining, ' if self.draining else ''}{calls} active calls"

    def _count_sip(self, direction: str, method: str, status: int | None) -> None:
        if status is None:
            self.metrics.sip_request(method, direction)
        else:
            self.metrics.sip_response(method, status, direction)

    def _on_sip_event(self, event: Event) -> None:
        assert self.registry is not None
        if isinstance(event, InviteReceived):
            self.registry.on_invite(event, event.trunk or NO_TRUNK)
        else:
            self.registry.on_event(event)

    async def drain(self) -> None:
        """SIGTERM: refuse new calls, let active ones end (bounded), then stop."""
        assert self.registry is not None
        self.draining.begin()
        self.notifier.status(self._status())
        await self.registry.drain(self.config.limits.drain_timeout_s)
        await self.stop()

    async def stop(self) -> None:
        if self._stopped.is_set():
            return
        self.notifier.stopping()
        if self.registry is not None:
            await self.registry.hang_up_all(Outcome.SHUTDOWN)
        if self.driver is not None:
            # Keep the sockets until every BYE (and CANCEL, ACK wait) is done, for at most the
            # time a BYE and its first two retransmissions (T1, 2·T1 later) take to be answered.
            await self.driver.wait_idle(BYE_GRACE_T1 * self.driver.endpoint.config.timers.T1)
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            await self._tcp.close()
        if self._tls is not None:
            await self._tls.close()
        if self.http is not None:
            await self.http.close()
        await self.load.stop()
        await self.records.stop()  # after the calls: their records are spooled, files closed
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        if self.api is not None:
            await self.api.aclose()
        self._stopped.set()

    async def serve(self) -> None:
        """Run until SIGTERM (drain) or SIGINT (fast stop)."""
        loop = asyncio.get_running_loop()
        await self.start()
        tasks: set[asyncio.Task[None]] = set()

        def on_signal(drain: bool) -> None:
            log.info("%s", "SIGTERM: draining" if drain else "SIGINT: stopping")
            task = loop.create_task(self.drain() if drain else self.stop())
            tasks.add(task)

        loop.add_signal_handler(signal.SIGTERM, on_signal, True)
        loop.add_signal_handler(signal.SIGINT, on_signal, False)
        loop.add_signal_handler(signal.SIGHUP, self.reload_tls)
        try:
            await self._stopped.wait()
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGHUP)

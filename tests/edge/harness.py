"""End-to-end harness for the edge tests: a real `Gateway` against the built-in emulator, and a
hand-written SIP/RTP caller on real loopback sockets.

The caller writes SIP by hand (no code of the gateway builds or parses its messages), computes
digest answers with `hashlib` (RFC 7616 §3.4.1), and runs G.711 RTP both ways: it sends a
PCMU packet every 20 ms and records when the gateway's packets arrive, so tests can measure
the largest gap in each direction.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import re
import secrets
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.app import Gateway
from gateway.call import Call as GatewayCall
from gateway.config import (
    Config,
    HttpConfig,
    LimitsConfig,
    OrgaConfig,
    RtpConfig,
    Secret,
    SecurityConfig,
    SipConfig,
    TrunkConfig,
)
from gateway.emulator.agent import AgentSettings
from gateway.emulator.server import Emulator, EmulatorConfig
from tests.edge.digest import digest_authorization
from tests.integration.stack import NO_OVERLOAD

API_KEY = "sk_orga_ai_edge_key_5f3c9a7e21d04b68"
DIGEST_PASSWORD = "pbx-secret-7d1e93b0c4"
DIGEST_USER = "pbx1"
REALM = "edge.test"


def free_port_block(count: int, start: int = 30000, stop: int = 39000) -> int:
    """A random even base in [start, stop) with `count` consecutive free UDP ports."""
    for _ in range(200):
        base = secrets.randbelow((stop - start - count) // 2) * 2 + start
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free RTP port block")


def trunk(name: str, cidr: str, *, auth: bool = False, max_calls: int | None = None,
          algorithms: tuple[str, ...] = ("SHA-256", "MD5")) -> TrunkConfig:
    return TrunkConfig(
        name=name, allow=(ipaddress.ip_network(cidr),),
        username=DIGEST_USER if auth else None, realm=REALM,
        password=Secret(DIGEST_PASSWORD) if auth else None, max_calls=max_calls,
        digest_algorithms=algorithms)


def make_config(emulator: Emulator, *, trunks: tuple[TrunkConfig, ...] | None = None,
                security: SecurityConfig | None = None, limits: LimitsConfig | None = None,
                rtp_ports: int = 40) -> Config:
    base = free_port_block(rtp_ports)
    return Config(
        sip=SipConfig(bind="127.0.0.1", port=0),
        rtp=RtpConfig(bind="127.0.0.1", port_min=base, port_max=base + rtp_ports - 1,
                      inactivity_timeout_s=30.0),
        orga=OrgaConfig(base_url=emulator.base_url, ice_addresses=("127.0.0.1",),
                        setup_timeout_s=15.0),
        http=HttpConfig(listen="127.0.0.1:0"),
        limits=limits or LimitsConfig(max_calls=20, **NO_OVERLOAD),
        security=security or SecurityConfig(),
        trunks=trunks if trunks is not None else (trunk("local", "127.0.0.0/8"),),
        api_key=Secret(API_KEY),
    )


@dataclass
class Rig:
    emulator: Emulator
    gateway: Gateway
    tokens: list[str] = field(default_factory=list)

    @property
    def udp(self) -> tuple[str, int]:
        assert self.gateway._udp is not None
        return self.gateway._udp.local_addr

    @property
    def tcp(self) -> tuple[str, int]:
        assert self.gateway._tcp is not None
        return self.gateway._tcp.local_addr

    @property
    def http_port(self) -> int:
        assert self.gateway.http is not None
        return self.gateway.http.port

    async def idle(self, timeout: float = 5.0) -> None:
        """Wait until every call has finished its teardown (and been recorded)."""
        registry = self.gateway.registry
        assert registry is not None
        async with asyncio.timeout(timeout):
            while registry.calls:
                await asyncio.sleep(0.02)

    async def http_get(self, path: str) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.http_port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = await reader.read()
        writer.close()
        return data.split(b"\r\n\r\n", 1)[1]


def emulator_config(**agent: object) -> EmulatorConfig:
    return EmulatorConfig(api_keys=(API_KEY,), agent=AgentSettings(**agent))  # type: ignore[arg-type]


@asynccontextmanager
async def running(config_fn: Callable[[Emulator], Config],
                  emulator: EmulatorConfig | None = None,
                  **gateway_kwargs: Any) -> AsyncIterator[Rig]:
    emu = Emulator(emulator or emulator_config())
    await emu.start()
    tokens: list[str] = []
    # The emulator does not keep the tokens it mints: record them as they are issued.
    issuer = emu._tokens
    mint = issuer.mint

    def recording_mint(api_key: str) -> tuple[str, str, dict[str, object]]:
        result = mint(api_key)
        tokens.append(result[0])
        return result

    issuer.mint = recording_mint  # type: ignore[method-assign]
    config = config_fn(emu)
    gw = Gateway(config, **gateway_kwargs)
    await gw.start()
    try:
        yield Rig(emu, gw, tokens)
    finally:
        while _OPEN:
            item = _OPEN.pop()
            if isinstance(item, Caller):
                item.close()
            else:
                await item.stop()
        await gw.stop()
        assert gw.driver is not None
        gw.driver.close()
        await emu.stop()


# --- the caller ----------------------------------------------------------------------------------

PCMU_SILENCE = b"\xff" * 160

# Every caller socket and RTP stream a test opens; `running()` closes what a failed test left.
_OPEN: list[Caller | RtpStream] = []


def _tone_payloads() -> list[bytes]:
    """A few PCMU frames of a loud-ish 440 Hz tone (μ-law by hand, G.711 §A)."""
    import math

    def ulaw(sample: int) -> int:
        sign = 0x80 if sample < 0 else 0
        sample = min(abs(sample), 32635) + 132
        exponent = max(0, sample.bit_length() - 8)
        mantissa = (sample >> (exponent + 3)) & 0x0F
        return ~(sign | (exponent << 4) | mantissa) & 0xFF

    frames = []
    for f in range(10):
        frames.append(bytes(ulaw(int(8000 * math.sin(2 * math.pi * 440 * (f * 160 + i) / 8000)))
                            for i in range(160)))
    return frames


TONE = _tone_payloads()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, on_data: Callable[[bytes, tuple[str, int]], None]) -> None:
        self.on_data = on_data
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_data(data, addr)


@dataclass
class SipResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


def parse_response(data: bytes) -> SipResponse | None:
    if not data.startswith(b"SIP/2.0 "):
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "replace").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return SipResponse(status, headers, body, data)


class Caller:
    """One SIP user agent client on a loopback address, UDP, hand-written messages."""

    def __init__(self, gateway: tuple[str, int], host: str = "127.0.0.1") -> None:
        self.gateway = gateway
        self.host = host
        self.port = 0
        self._sip: _Udp | None = None
        self.responses: list[SipResponse] = []
        self.requests: list[bytes] = []  # requests the gateway sent us (BYE ...)
        self._waiters: list[tuple[Callable[[SipResponse], bool], asyncio.Future[SipResponse]]] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_datagram_endpoint(lambda: _Udp(self._on_sip),
                                                       local_addr=(self.host, 0))
        self._sip = proto
        assert proto.transport is not None
        self.port = proto.transport.get_extra_info("sockname")[1]
        _OPEN.append(self)

    def close(self) -> None:
        if self._sip is not None and self._sip.transport is not None:
            self._sip.transport.close()

    def send(self, data: bytes) -> None:
        assert self._sip is not None and self._sip.transport is not None
        self._sip.transport.sendto(data, self.gateway)

    def _on_sip(self, data: bytes, addr: tuple[str, int]) -> None:
        response = parse_response(data)
        if response is None:
            self.requests.append(data)
            self._answer_request(data)
            return
        self.responses.append(response)
        for pred, fut in list(self._waiters):
            if not fut.done() and pred(response):
                fut.set_result(response)
                self._waiters.remove((pred, fut))

    def _answer_request(self, data: bytes) -> None:
        """200 OK to a BYE (or anything) from the gateway, echoing the needed headers."""
        head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").split("\r\n")
        if head[0].startswith("ACK"):
            return
        keep = [line for line in head[1:]
                if line.split(":", 1)[0].strip().lower() in ("via", "from", "to", "call-id",
                                                             "cseq", "v", "f", "t", "i")]
        self.send(("SIP/2.0 200 OK\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n"
                   ).encode())

    async def wait(self, pred: Callable[[SipResponse], bool], timeout: float) -> SipResponse:
        for response in self.responses:
            if pred(response):
                return response
        fut: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()
        self._waiters.append((pred, fut))
        return await asyncio.wait_for(fut, timeout)

    def via(self, branch: str) -> str:
        return f"SIP/2.0/UDP {self.host}:{self.port};branch={branch};rport"

    def request(self, method: str, uri: str, *, call_id: str, cseq: int, from_tag: str,
                to_tag: str | None = None, branch: str | None = None, body: bytes = b"",
                extra: tuple[tuple[str, str], ...] = (), cseq_method: str | None = None,
                ) -> tuple[bytes, str]:
        branch = branch or "z9hG4bK" + secrets.token_hex(8)
        to = f"<{uri}>" + (f";tag={to_tag}" if to_tag else "")
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: {self.via(branch)}",
            "Max-Forwards: 70",
            f"From: <sip:caller@{self.host}>;tag={from_tag}",
            f"To: {to}",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {cseq_method or method}",
            f"Contact: <sip:caller@{self.host}:{self.port}>",
            *(f"{k}: {v}" for k, v in extra),
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body, branch


def sdp_offer(host: str, port: int) -> bytes:
    return (f"v=0\r\no=caller 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\n"
            "a=sendrecv\r\n").encode()


def final_for(call_id: str, cseq: int) -> Callable[[SipResponse], bool]:
    def pred(r: SipResponse) -> bool:
        return (r.status >= 200 and r.header("Call-ID") == call_id
                and (r.header("CSeq") or "").split(" ")[0] == str(cseq))
    return pred


@dataclass
class RtpStream:
    """Sends PCMU every 20 ms to the gateway's port and records arrivals of its packets."""

    host: str
    sent_at: list[float] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)
    port: int = 0
    remote: tuple[str, int] | None = None
    _proto: _Udp | None = None
    _task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        # reuse_port: a test's flood process may send from this very address (a spoofer).
        _, proto = await loop.create_datagram_endpoint(lambda: _Udp(self._on), local_addr=(
            self.host, 0), reuse_port=True)
        self._proto = proto
        assert proto.transport is not None
        self.port = proto.transport.get_extra_info("sockname")[1]
        _OPEN.append(self)

    def _on(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) >= 12 and data[0] >> 6 == 2:
            self.received_at.append(asyncio.get_running_loop().time())

    def start(self, remote: tuple[str, int]) -> None:
        self.remote = remote
        self._task = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        assert self._proto is not None and self._proto.transport is not None
        loop = asyncio.get_running_loop()
        ssrc = secrets.randbits(32)
        seq, ts = secrets.randbits(16), secrets.randbits(32)
        start = loop.time()
        n = 0
        while True:
            payload = TONE[n % len(TONE)] if (n // 50) % 2 == 0 else PCMU_SILENCE
            header = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
            self._proto.transport.sendto(header + payload, self.remote)
            self.sent_at.append(loop.time())
            n += 1
            seq += 1
            ts += 160
            # A fixed schedule: a late tick shows as a gap, it is not hidden by sleeping 20 ms.
            await asyncio.sleep(max(0.0, start + n * 0.02 - loop.time()))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()


def max_gap(times: list[float], since: float = 0.0, until: float = float("inf")) -> float:
    window = [t for t in times if since <= t <= until]
    return max((b - a for a, b in itertools.pairwise(window)), default=float("inf"))


@dataclass
class Call:
    caller: Caller
    call_id: str
    from_tag: str
    to_tag: str
    uri: str
    cseq: int
    rtp: RtpStream
    final: SipResponse
    challenges: list[SipResponse] = field(default_factory=list)

    def gateway_call(self, rig: Rig) -> GatewayCall:
        """The gateway's own `Call` object for this call (to read its RTP counters)."""
        registry = rig.gateway.registry
        assert registry is not None
        (call,) = [c for c in registry.calls.values() if c.call_id == self.call_id]
        return call

    async def hang_up(self, timeout: float = 5.0) -> SipResponse:
        self.cseq += 1
        data, _ = self.caller.request("BYE", self.uri, call_id=self.call_id, cseq=self.cseq,
                                      from_tag=self.from_tag, to_tag=self.to_tag)
        self.caller.send(data)
        response = await self.caller.wait(final_for(self.call_id, self.cseq), timeout)
        await self.rtp.stop()
        return response


async def place_call(caller: Caller, *, user: str = "100", credentials: tuple[str, str] | None
                     = None, prefer: str = "SHA-256", timeout: float = 20.0,
                     offer: Callable[[str, int], bytes] | None = None) -> Call:
    """INVITE (answering a 401 with our own digest if `credentials`), ACK, start RTP.

    `offer(host, rtp_port)` builds the SDP offer (default: `sdp_offer`)."""
    rtp = RtpStream(caller.host)
    await rtp.open()
    try:
        return await _place_call(caller, rtp, user, credentials, prefer, timeout,
                                 offer or sdp_offer)
    except BaseException:
        await rtp.stop()
        raise


async def _place_call(caller: Caller, rtp: RtpStream, user: str,
                      credentials: tuple[str, str] | None, prefer: str, timeout: float,
                      make_offer: Callable[[str, int], bytes]) -> Call:
    uri = f"sip:{user}@{caller.gateway[0]}:{caller.gateway[1]}"
    call_id = secrets.token_hex(12) + "@edge.test"
    from_tag = secrets.token_hex(4)
    cseq = 1
    offer = make_offer(caller.host, rtp.port)
    extra: tuple[tuple[str, str], ...] = ()
    challenges: list[SipResponse] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        data, branch = caller.request("INVITE", uri, call_id=call_id, cseq=cseq,
                                      from_tag=from_tag, body=offer, extra=extra)
        final = await _send_invite(caller, data, call_id, cseq, deadline)
        to_tag = (final.header("To") or "").partition(";tag=")[2].split(";")[0]
        if final.status >= 300:
            ack = _ack(caller, uri, call_id, cseq, from_tag, to_tag, branch)
            caller.send(ack)
        if final.status == 401 and credentials is not None and not challenges:
            challenges.append(final)
            offered = final.all("WWW-Authenticate")
            chosen = next(c for c in offered if f"algorithm={prefer}" in c)
            extra = (("Authorization", digest_authorization(
                chosen, method="INVITE", uri=uri, username=credentials[0],
                password=credentials[1])),)
            cseq += 1
            continue
        if final.status != 200:
            raise AssertionError(f"call refused: {final.raw[:300]!r}")
        break
    ack, _ = caller.request("ACK", uri, call_id=call_id, cseq=cseq, from_tag=from_tag,
                            to_tag=to_tag)
    caller.send(ack)
    body = final.body.decode()
    host = re.search(r"c=IN IP4 (\S+)", body)
    port = re.search(r"m=audio (\d+)", body)
    assert host and port, body
    rtp.start((host.group(1), int(port.group(1))))
    return Call(caller, call_id, from_tag, to_tag, uri, cseq, rtp, final, challenges)


async def _send_invite(caller: Caller, data: bytes, call_id: str, cseq: int,
                       deadline: float) -> SipResponse:
    """Send, retransmit (Timer A: 0.5 s doubling) until any response, then await the final."""
    loop = asyncio.get_running_loop()
    interval = 0.5

    def any_response(r: SipResponse) -> bool:
        return (r.header("Call-ID") == call_id
                and (r.header("CSeq") or "").split(" ")[0] == str(cseq))

    while True:
        caller.send(data)
        try:
            await caller.wait(any_response, min(interval, max(0.0, deadline - loop.time())))
            break
        except TimeoutError:
            if loop.time() >= deadline:
                raise
            interval *= 2
    return await caller.wait(final_for(call_id, cseq), max(0.0, deadline - loop.time()))


def _ack(caller: Caller, uri: str, call_id: str, cseq: int, from_tag: str, to_tag: str,
         branch: str) -> bytes:
    """§17.1.1.3: the ACK to a non-2xx final has the INVITE's branch and CSeq number."""
    data, _ = caller.request("ACK", uri, call_id=call_id, cseq=cseq, from_tag=from_tag,
                             to_tag=to_tag, branch=branch)
    return data


def replace_security(config: Config, **changes: object) -> Config:
    return replace(config, security=replace(config.security, **changes))  # type: ignore[arg-type]


class Blaster:
    """`tests/edge/blaster.py` in its own process: start it, `go()`, then `await result()`."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        import sys

        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.edge.blaster", *self.args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert self.proc.stdout is not None
        assert (await asyncio.wait_for(self.proc.stdout.readline(), 20)).strip() == b"ready"

    def go(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")

    async def result(self, timeout: float = 60.0) -> dict[str, object]:
        import json

        assert self.proc is not None and self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        await self.proc.wait()
        return dict(json.loads(line))

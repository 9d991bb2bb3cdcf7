"""A light Orga far end for load benchmarks: echoes the gateway's Opus back, decoding nothing.

Measuring one gateway worker needs a far end that costs less than the worker. The emulator
(gateway/emulator) is the faithful stand-in — it decodes, runs a VAD, synthesises and encodes
replies — and saturates a core near 40 active calls. This far end keeps what the gateway must
see from Orga and drops the rest:

- REST: `POST /v1/realtime/client-secrets` → a random token, `GET /v1/realtime/ice-config` →
  no servers, `POST /v1/realtime/calls` → an aiortc answer and a conversation id. The API key is
  checked; nothing else is validated (the emulator is the place for that).
- WebRTC: a real aiortc peer (ICE, DTLS-SRTP, SCTP data channel), so the gateway's Orga leg
  costs what it costs against Orga.
- Audio: the receiver's jitter buffer is replaced (one private attribute, as in
  gateway/media/aiortc_receiver.py) by a catcher that keeps each received Opus payload and
  decodes nothing; the sending track returns those payloads as `av.Packet`s, which aiortc packs
  without encoding, paced by its own 20 ms clock. So the gateway hears its own caller's speech
  back, about one frame later: speech-like Opus both ways, real-time, for a few µs per packet.
  While nothing has arrived it sends one Opus frame of silence, encoded once at start.

    python bench/far_end.py --listen 127.0.0.1:0 --api-key KEY
prints `far end listening on http://127.0.0.1:PORT` on stdout; `GET /_far_end/state` (Bearer
key) gives sessions started, active and ended. Bench only: not part of the gateway package.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import logging
import secrets
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription

from gateway.aiortc_patches import restrict_host_addresses
from gateway.orga.ice import make_configuration

log = logging.getLogger("far_end")

FRAME_S = 0.020
CLOCK = 48000
TIME_BASE = fractions.Fraction(1, CLOCK)
# Frames waiting to be echoed: at most 2 (the far end then holds a frame 0-40 ms, 20 ms on
# average). A longer queue would keep whatever a burst put in it for the rest of the call —
# the gateway's delay would be measured with the far end's standing queue on top.
MAX_QUEUED = 2


def silence_frame() -> bytes:
    """One 20 ms Opus frame of silence, encoded once."""
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate, codec.layout, codec.format = CLOCK, "mono", "s16"
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 960), dtype=np.int16), format="s16",
                                       layout="mono")
    frame.sample_rate, frame.pts, frame.time_base = CLOCK, 0, TIME_BASE
    packets = [bytes(p) for p in codec.encode(frame)]
    packets += [bytes(p) for p in codec.encode(None)]
    return packets[0]


class EchoTrack(MediaStreamTrack):
    """Sends back the Opus payloads it is given, one per 20 ms, as pre-encoded packets."""

    kind = "audio"

    def __init__(self, silence: bytes) -> None:
        super().__init__()
        self.queue: deque[bytes] = deque(maxlen=MAX_QUEUED)
        self._silence = silence
        self._start: float | None = None
        self._pts = 0

    async def recv(self) -> av.Packet:  # type: ignore[override]
        if self.readyState != "live":
            raise asyncio.CancelledError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += 960
            await asyncio.sleep(max(0.0, self._start + self._pts / CLOCK - time.monotonic()))
        packet = av.Packet(self.queue.popleft() if self.queue else self._silence)
        packet.pts, packet.time_base = self._pts, TIME_BASE
        return packet


class PayloadCatcher:
    """Stands in for aiortc's receive jitter buffer: keeps payloads, returns no frame."""

    capacity = 16

    def __init__(self, track: EchoTrack) -> None:
        self._track = track
        self.packets = 0

    def add(self, packet: Any) -> tuple[bool, None]:
        self.packets += 1
        self._track.queue.append(packet._data)
        return False, None


class Session:
    def __init__(self, conversation_id: str, silence: bytes, on_end: Any) -> None:
        self.conversation_id = conversation_id
        self.pc = RTCPeerConnection(make_configuration([]))
        self.track = EchoTrack(silence)
        self._on_end = on_end
        self._closing: asyncio.Task[None] | None = None

    async def answer(self, offer_sdp: str, ice_addresses: list[str]) -> str:
        pc = self.pc

        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            channel.send(json.dumps({"type": "session.created",
                                     "session": {"id": "sess_" + secrets.token_hex(8)}}))
            channel.on("close", self.end)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self.end()

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        sender = pc.addTrack(self.track)
        for transceiver in pc.getTransceivers():
            if transceiver.sender is sender:
                receiver = transceiver.receiver
                receiver._RTCRtpReceiver__jitter_buffer = PayloadCatcher(self.track)  # type: ignore[attr-defined]
        restrict_host_addresses(pc, ice_addresses)
        await pc.setLocalDescription(await pc.createAnswer())
        return str(pc.localDescription.sdp)

    def end(self) -> None:
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())

    async def _close(self) -> None:
        self.track.stop()
        await self.pc.close()
        self._on_end(self)


class FarEnd:
    def __init__(self, api_key: str, ice_addresses: list[str]) -> None:
        self.api_key = api_key
        self.ice_addresses = ice_addresses
        self.silence = silence_frame()
        self.tokens: set[str] = set()
        self.sessions: dict[str, Session] = {}
        self.started = self.ended = 0

    def state(self) -> dict[str, int]:
        return {"sessions_started": self.started, "sessions_active": len(self.sessions),
                "sessions_ended": self.ended}

    def _ended(self, session: Session) -> None:
        if self.sessions.pop(session.conversation_id, None) is not None:
            self.ended += 1

    async def handle(self, method: str, path: str, auth: str, body: bytes) -> tuple[int, Any]:
        bearer = auth.removeprefix("Bearer ").strip()
        if path == "/v1/realtime/client-secrets" and method == "POST":
            if bearer != self.api_key:
                return 401, {"error": {"message": "Incorrect API key"}}
            token = "ek_" + secrets.token_hex(16)
            self.tokens.add(token)
            return 200, {"ephemeral_token": token, "expires_at": "2099-01-01T00:00:00"}
        if path == "/v1/realtime/ice-config" and method == "GET":
            return (200, {"iceServers": []}) if bearer in self.tokens else (401, {})
        if path == "/v1/realtime/calls" and method == "POST":
            if bearer not in self.tokens:
                return 401, {"error": {"message": "Invalid ephemeral token"}}
            self.tokens.discard(bearer)
            offer = json.loads(body)["offer"]["sdp"]
            session = Session("conv_" + secrets.token_hex(10), self.silence, self._ended)
            self.sessions[session.conversation_id] = session
            self.started += 1
            sdp = await session.answer(offer, self.ice_addresses)
            return 200, {"answer": {"type": "answer", "sdp": sdp},
                         "conversation_id": session.conversation_id}
        if path == "/_far_end/state" and bearer == self.api_key:
            return 200, self.state()
        return 404, {"error": {"message": "not found"}}

    async def serve_connection(self, reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> None:
        """HTTP/1.1 with keep-alive (the gateway's httpx pools connections); bodies by
        Content-Length only — enough for the gateway's client, nothing more."""
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (line.partition(":") for line in lines[1:] if line)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status, payload = await self.handle(method, target.split("?", 1)[0],
                                                    headers.get("authorization", ""), body)
                data = json.dumps(payload).encode()
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                             f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        for session in list(self.sessions.values()):
            session.end()
        await asyncio.sleep(0.1)


async def main_async(args: argparse.Namespace) -> None:
    far = FarEnd(args.api_key, args.ice_address)
    host, _, port = args.listen.rpartition(":")
    server = await asyncio.start_server(far.serve_connection, host, int(port))
    bound = server.sockets[0].getsockname()[1]
    print(f"far end listening on http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await far.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--ice-address", action="append", default=["127.0.0.1"])
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

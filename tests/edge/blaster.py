"""A traffic generator run as a separate process (`python -m tests.edge.blaster ...`), so a
flood does not share the gateway's event loop: RTP packets into one port, or new INVITEs.

It paces in 5 ms batches, reads whatever comes back between batches, and prints one JSON line:
what it sent, over how long, and the responses it got by status code. Loopback only.
"""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import struct
import sys
import time
from collections import Counter


def _socket(source: str) -> socket.socket:
    host, _, port = source.partition(":")
    if not host.startswith("127."):
        raise SystemExit("loopback sources only")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if port:  # share a caller's own RTP address (it set SO_REUSEPORT too)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, int(port or 0)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    sock.setblocking(False)
    return sock


def rtp_packets() -> object:
    ssrc, seq, ts = secrets.randbits(32), secrets.randbits(16), secrets.randbits(32)
    while True:
        yield struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + b"\xff" * 160
        seq += 1
        ts += 160


def invites(target: tuple[str, int], sock: socket.socket) -> object:
    host, port = sock.getsockname()
    n = 0
    while True:
        n += 1
        branch = f"z9hG4bK-fl{n}-{secrets.token_hex(4)}"
        yield (
            f"INVITE sip:{1000 + n % 9000}@{target[0]}:{target[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{port};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:flood@{host}>;tag=f{n}\r\n"
            f"To: <sip:{1000 + n % 9000}@{target[0]}>\r\n"
            f"Call-ID: flood-{n}-{secrets.token_hex(6)}\r\n"
            "CSeq: 1 INVITE\r\n"
            f"Contact: <sip:flood@{host}:{port}>\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["rtp", "invite"])
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--source", default="127.0.0.1", help="host or host:port")
    parser.add_argument("--rate", type=float, required=True, help="packets per second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--linger", type=float, default=1.0, help="read answers this long after")
    args = parser.parse_args(argv)
    thost, _, tport = args.target.partition(":")
    if not thost.startswith("127."):
        raise SystemExit("loopback targets only")
    target = (thost, int(tport))
    sock = _socket(args.source)
    packets = rtp_packets() if args.kind == "rtp" else invites(target, sock)
    responses: Counter[str] = Counter()
    print("ready", flush=True)
    sys.stdin.readline()  # the parent says when to start

    def drain() -> None:
        while True:
            try:
                data = sock.recv(65535)
            except (BlockingIOError, ConnectionRefusedError):
                return
            if data.startswith(b"SIP/2.0 "):
                responses[data[8:11].decode()] += 1
            else:
                responses["other"] += 1

    sent = errors = 0
    start = time.monotonic()
    end = start + args.seconds
    while (now := time.monotonic()) < end:
        due = int((now - start) * args.rate)
        while sent < due:
            try:
                sock.sendto(next(packets), target)  # type: ignore[call-overload]
            except OSError:
                errors += 1  # a full socket buffer: count it, do not stall
            sent += 1
        drain()
        time.sleep(0.005)
    elapsed = time.monotonic() - start
    stop = time.monotonic() + args.linger
    while time.monotonic() < stop:
        drain()
        time.sleep(0.01)
    print(json.dumps({"sent": sent, "send_errors": errors, "elapsed_s": round(elapsed, 3),
                      "rate": round(sent / elapsed, 1), "responses": dict(responses)}),
          flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

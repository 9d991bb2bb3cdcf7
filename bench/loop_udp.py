"""Event-loop lever (issue 11 item 5): CPU per RTP-sized UDP packet received and sent, asyncio's
own loop against uvloop, in this one process.

Two datagram endpoints on 127.0.0.1 bounce `--packets` 172-byte datagrams (a 20 ms PCMU RTP
packet) `--flows` at a time, each endpoint sending one datagram back for each it receives:
the gateway's RTP session does the same (one receive and, paced, one send per packet). CPU time
of this process (user+system, `time.process_time`) divided by datagrams received, so a busy
machine slows the run down but hardly changes the figure; kernel UDP work is included, as it
is for the gateway.

    nice -n -5 .venv/bin/python bench/loop_udp.py [--packets 200000] [--flows 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway import eventloop

PAYLOAD = bytes(172)


class Bouncer(asyncio.DatagramProtocol):
    def __init__(self, budget: list[int], done: asyncio.Future[None]) -> None:
        self.budget, self.done = budget, done
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.budget[0] -= 1
        if self.budget[0] <= 0:
            if not self.done.done():
                self.done.set_result(None)
            return
        assert self.transport is not None
        self.transport.sendto(data, addr)


async def bounce(packets: int, flows: int) -> float:
    loop = asyncio.get_running_loop()
    budget, done = [packets], loop.create_future()
    pairs = []
    for _ in range(flows):
        a, _ = await loop.create_datagram_endpoint(lambda: Bouncer(budget, done),
                                                   local_addr=("127.0.0.1", 0))
        b, _ = await loop.create_datagram_endpoint(lambda: Bouncer(budget, done),
                                                   local_addr=("127.0.0.1", 0))
        pairs.append((a, b))
    t0 = time.process_time()
    for a, b in pairs:
        a.sendto(PAYLOAD, b.get_extra_info("sockname"))
    await done
    cpu = time.process_time() - t0
    for a, b in pairs:
        a.close()
        b.close()
    return cpu / packets * 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--packets", type=int, default=200_000)
    p.add_argument("--flows", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    print(f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.packets} packets, "
          f"{args.flows} flows; CPU µs per packet received and sent back (best of "
          f"{args.rounds})")
    for choice in ("asyncio", "uvloop"):
        if choice == "uvloop" and eventloop.loop_factory("auto") is None:
            print("uvloop     not installed")
            continue
        best = min(eventloop.run(bounce(args.packets, args.flows), choice)
                   for _ in range(args.rounds))
        print(f"{choice:<10} {best:6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CPU cost of the sans-IO SIP core: complete calls (INVITE/180/200/ACK/BYE/200) between a UAC
endpoint and a UAS endpoint over an in-memory link, no sockets. Prints calls per second and the
cost per call; run: python -m bench.sip_core [--calls N] [--concurrent M]
"""

from __future__ import annotations

import argparse
import time

from gateway.sip.events import InviteReceived
from tests.sip.helpers import SDP, UAS_ADDR, Link

TARGET = f"sip:agent@{UAS_ADDR[0]}:{UAS_ADDR[1]}"


def run(calls: int, concurrent: int) -> float:
    link = Link()
    start = time.perf_counter()
    done = 0
    while done < calls:
        batch = min(concurrent, calls - done)
        handles = [link.uac.invite(TARGET, link.now, sdp=SDP, from_uri="<sip:bench@127.0.0.1>")
                   for _ in range(batch)]
        link.pump()
        for event in link.take("uas"):
            if isinstance(event, InviteReceived):
                link.uas.ring(event.call, link.now)
                link.uas.answer(event.call, SDP, link.now)
        link.pump()
        for handle in handles:
            link.uac.hang_up(handle, link.now)
        link.pump()
        link.take("uac")
        link.take("uas")
        link.run_until(link.now + 100.0)  # let Timers K/J/L/M expire so tables stay small
        done += batch
    elapsed = time.perf_counter() - start
    assert link.uac.active_calls == link.uas.active_calls == 0
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrent", type=int, default=50)
    args = parser.parse_args()
    elapsed = run(args.calls, args.concurrent)
    print(f"{args.calls} calls ({args.concurrent} at a time), both ends in one process: "
          f"{elapsed:.2f} s, {args.calls / elapsed:.0f} calls/s, "
          f"{elapsed / args.calls * 1e3:.3f} ms CPU per call (UAC+UAS)")


if __name__ == "__main__":
    main()

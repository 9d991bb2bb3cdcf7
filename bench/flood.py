"""INVITE flood against a real gateway (issue 7 item 11), with figures.

A separate process sends new INVITEs at --rate per second for --seconds from 127.0.0.9 (a
trunk that requires digest auth) while --calls legitimate calls run from 127.0.0.1 with RTP
both ways; one more call is placed mid-flood. Prints what the flood sent and got back, how the
gateway counted it, the legitimate calls' largest RTP gaps during the flood, RSS and state.
The scenario is `tests/edge/flood.py` (the test asserts its functional properties).

Run from the repository root: PYTHONPATH=. /work/venv/bin/python bench/flood.py
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

from tests.edge.flood import run_flood


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    load = os.getloadavg()
    r = asyncio.run(run_flood(args.rate, args.seconds, args.calls))
    counted = sum(r.rejections.get(k, 0) for k in
                  ("rate_source_request", "rate_source_invite", "auth_missing"))
    print(f"host load average before: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} "
          f"({os.cpu_count()} CPUs)")
    print(f"flood: {r.invites_sent} INVITEs in {r.invites_sent / r.send_rate:.1f} s "
          f"= {r.send_rate:.0f}/s from one source ({r.send_errors} sendto errors)")
    print(f"flood got back: {r.responses} ({sum(r.responses.values())} responses; the rest "
          "got nothing)")
    print(f"gateway counted: {r.rejections} ({counted:.0f} of the flood's INVITEs)")
    print(f"kernel receive-buffer drops during the flood (host-wide): {r.kernel_drops}")
    print(f"gateway process CPU during the flood: {r.cpu_s:.2f} s "
          f"({100 * r.cpu_s / args.seconds:.0f}% of one core, gateway+emulator+callers); "
          f"waited {r.runqueue_wait_s:.2f} s for a CPU; largest loop lag "
          f"{r.max_loop_lag_s * 1000:.0f} ms; longest GC {r.longest_gc_s * 1000:.0f} ms")
    print(f"legitimate calls: {r.legit_connected_after}/{r.legit_calls} still connected; "
          f"call placed mid-flood: {'answered' if r.mid_flood_call_ok else 'FAILED'}")
    print("largest RTP gap during the flood: gateway->callers "
          f"{r.max_gap_from_gateway_s * 1000:.0f} ms, callers->gateway "
          f"{r.max_gap_to_gateway_s * 1000:.0f} ms; "
          f"caller packets the gateway missed: {r.gateway_rtp_shortfall}")
    print(f"RSS: {r.rss_before_kib / 1024:.1f} MiB before, {r.rss_after_kib / 1024:.1f} MiB after "
          f"(peak {r.rss_peak_kib / 1024:.1f} MiB); tracked sources {r.tracked_sources}; "
          f"SIP tables after {r.tables_after}")
    print(f"Orga sessions opened: {r.orga_sessions} (legitimate calls only)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Costs of the operations layer on the hot paths, measured on this machine (prints figures).

- EdgeLimiter.check: per-request decision time, and memory after a flood from N distinct
  (spoofed) sources, to show the per-source state stays bounded by max_tracked_sources.
- DigestAuthenticator.verify: time per successful SHA-256 verification.
- Metrics recorders: time per call, to decide whether RTP counters are recorded per packet or
  in batches.

Run from the repository root: PYTHONPATH=. /work/venv/bin/python bench/edge_costs.py
"""

from __future__ import annotations

import argparse
import hashlib
import re
import time
import tracemalloc

from gateway.config import SecurityConfig
from gateway.metrics import ConversationStats, Metrics
from gateway.security.ratelimit import EdgeLimiter
from gateway.sip.auth import DigestAuthenticator


def per_call_us(fn: object, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()  # type: ignore[operator]
    return (time.perf_counter() - start) / n * 1e6


def flood(edge: EdgeLimiter, sources: int) -> float:
    start = time.perf_counter()
    for i in range(sources):
        ip = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        edge.check(ip, "INVITE", i / 2000.0, new_call=True)  # 2,000 INVITEs/s
    return time.perf_counter() - start


def bench_edge(sources: int) -> None:
    cfg = SecurityConfig()
    edge = EdgeLimiter(cfg, now=0.0)
    elapsed = flood(edge, sources)  # timed without tracemalloc, which slows allocation
    tracemalloc.start()
    edge = EdgeLimiter(cfg, now=0.0)
    base = tracemalloc.get_traced_memory()[0]
    flood(edge, sources)
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    print(f"edge limiter: {sources} INVITEs from {sources} distinct sources: "
          f"{elapsed / sources * 1e6:.2f} us per decision, tracked sources "
          f"{edge.tracked_sources} (max {cfg.max_tracked_sources}), state {used / 1e6:.1f} MB")
    one = EdgeLimiter(cfg, now=0.0)
    t = [0.0]

    def same_source() -> None:
        t[0] += 0.0005
        one.check("192.0.2.1", "INVITE", t[0], new_call=True)

    print(f"edge limiter: one flooding source: {per_call_us(same_source, 200_000):.2f} us per "
          "decision")


def bench_auth() -> None:
    auth = DigestAuthenticator(b"0123456789abcdef0123")
    challenge = auth.challenge("r", "192.0.2.1", 0.0)[0]
    nonce = re.search(r'nonce="([^"]+)"', challenge).group(1)  # type: ignore[union-attr]
    ha1 = hashlib.sha256(b"u:r:p").hexdigest()
    ha2 = hashlib.sha256(b"INVITE:sip:x@y").hexdigest()
    n = 20_000
    headers = []
    for i in range(1, n + 1):
        nc = f"{i:08x}"
        resp = hashlib.sha256(f"{ha1}:{nonce}:{nc}:c:auth:{ha2}".encode()).hexdigest()
        headers.append(f'Digest username="u", realm="r", nonce="{nonce}", uri="sip:x@y", '
                       f'response="{resp}", algorithm=SHA-256, qop=auth, nc={nc}, cnonce="c"')
    start = time.perf_counter()
    for h in headers:
        auth.verify(h, method="INVITE", source_ip="192.0.2.1", now=1.0, realm="r",
                    username="u", password="p")
    print(f"digest verify (SHA-256, success): {(time.perf_counter() - start) / n * 1e6:.1f} us")


def bench_metrics() -> None:
    m = Metrics()
    print(f"metrics.rtp(...) per call: {per_call_us(lambda: m.rtp('in', 1, 160), 200_000):.2f} us"
          f"; sip_request: {per_call_us(lambda: m.sip_request('INVITE'), 200_000):.2f} us"
          f"; turn_latency: {per_call_us(lambda: m.turn_latency(0.4), 200_000):.2f} us")
    for i in range(50):
        m.add_conversation(f"conv-{i}", "*", lambda: ConversationStats(turns=3))
    start = time.perf_counter()
    for _ in range(200):
        body = m.render()
    print(f"/metrics render with 50 conversations: {(time.perf_counter() - start) / 200 * 1e3:.2f}"
          f" ms, {len(body)} bytes")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sources", type=int, default=1_000_000)
    args = parser.parse_args()
    bench_edge(args.sources)
    bench_auth()
    bench_metrics()


if __name__ == "__main__":
    main()

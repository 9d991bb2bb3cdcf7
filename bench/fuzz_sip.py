"""Seeded mutation fuzzer for the SIP message layer (and the endpoint, when it exists).

Runs `--count` inputs (default 1,000,000) made by `tests/sip/fuzzing.py` (corpus mutations and
structure-aware generation; no hypothesis shrinking, so it runs at full speed) against:

- `parse`:    `parse_message(data)`; a parsed message must also round-trip
              (parse → to_bytes → parse keeps header values and body);
- `stream`:   `StreamParser` fed in one piece and in random chunks: same messages, same error;
- `endpoint`: `receive_datagram(data, addr, now)` of the endpoint in gateway/sip/endpoint.py,
              when it exists, on whole messages, draining its output; it must never raise,
              and an exception it catches and logs at ERROR counts as a (contained) crash.

The only acceptable outcomes are a message or `ParseError` (the endpoint: no exception at all).
Anything else is a crash; a broken invariant (round-trip, chunking) and a `slow` input (one parse
above `--slow-ms` of CPU: hostile input must stay cheap) are counted separately. Each failing
input is written to `--crash-dir` with its traceback. Prints inputs/s and totals.

    python bench/fuzz_sip.py --count 1000000 --seed 1
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import logging
import pathlib
import random
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.sip.errors import ParseError  # noqa: E402
from gateway.sip.parser import parse_message  # noqa: E402
from tests.sip.fuzzing import (  # noqa: E402
    generate,
    load_corpus,
    mutate,
    random_cuts,
    round_trip_problem,
    stream_outcome,
)

ADDR = ("127.0.0.1", 5060)


class Recorder:
    """Counts outcomes per target and keeps one file per distinct failing input."""

    def __init__(self, crash_dir: pathlib.Path) -> None:
        self.crash_dir = crash_dir
        self.counts: dict[str, Counter[str]] = {}
        self.signatures: Counter[str] = Counter()

    def count(self, target: str, outcome: str) -> None:
        self.counts.setdefault(target, Counter())[outcome] += 1

    def failure(self, target: str, kind: str, data: bytes, detail: str) -> None:
        self.count(target, kind)
        if kind in ("crash", "logged-error"):
            signature = f"{target}/{kind}: {_signature(detail)}"
        elif kind == "roundtrip":
            signature = f"{target}/{kind}: {detail}"
        else:  # slow, chunking: the detail differs for every input
            signature = f"{target}/{kind}"
        self.signatures[signature] += 1
        if self.signatures[signature] > 3:  # keep a few examples of each, not thousands
            return
        self.crash_dir.mkdir(parents=True, exist_ok=True)
        name = f"{target}-{kind}-{hashlib.sha1(data).hexdigest()[:12]}"
        (self.crash_dir / f"{name}.sip").write_bytes(data)
        (self.crash_dir / f"{name}.txt").write_text(detail)


def _signature(detail: str) -> str:
    """Exception type and the innermost frame, so one bug with many inputs is one line."""
    lines = detail.strip().splitlines()
    frames = [line.strip() for line in lines if line.strip().startswith("File ")]
    where = frames[-1].replace(str(ROOT) + "/", "") if frames else ""
    return f"{lines[-1].split(':')[0][:80]} at {where}" if where else lines[-1][:160]


def check_parse(data: bytes, rec: Recorder, slow_s: float) -> None:
    started = time.process_time()
    try:
        parse_message(data)
    except ParseError:
        rec.count("parse", "ParseError")
        return
    except Exception:
        rec.failure("parse", "crash", data, traceback.format_exc())
        return
    finally:
        spent = time.process_time() - started
        if spent > slow_s:  # hostile input must not cost much more than a normal message
            rec.failure("parse", "slow", data, f"{spent * 1000:.0f} ms CPU for {len(data)} bytes")
    rec.count("parse", "parsed")
    try:
        problem = round_trip_problem(data)
    except Exception:
        rec.failure("parse", "crash", data, traceback.format_exc())
        return
    if problem is not None:
        rec.failure("parse", "roundtrip", data, problem)


def check_stream(data: bytes, rng: random.Random, rec: Recorder) -> None:
    try:
        whole = stream_outcome(data, [])
        chunked = stream_outcome(data, random_cuts(rng, len(data)))
    except Exception:
        rec.failure("stream", "crash", data, traceback.format_exc())
        return
    rec.count("stream", "ParseError" if whole[1] is not None else "parsed")
    if whole != chunked:
        rec.failure("stream", "chunking", data, f"one feed {whole!r}\nchunked {chunked!r}")


def endpoint_factory(spec: str | None) -> Callable[[], Any] | None:
    """The endpoint constructor: `--endpoint-factory module:callable`, else the class in
    gateway/sip/endpoint.py (`Endpoint` or `SipEndpoint`) called without arguments."""
    if spec:
        module_name, _, attr = spec.partition(":")
        factory: Callable[[], Any] = getattr(importlib.import_module(module_name), attr)
        return factory
    if importlib.util.find_spec("gateway.sip.endpoint") is None:
        return None
    module = importlib.import_module("gateway.sip.endpoint")
    for name in ("Endpoint", "SipEndpoint"):
        if hasattr(module, name):
            endpoint_cls: Callable[[], Any] = getattr(module, name)
            return endpoint_cls
    raise SystemExit("gateway/sip/endpoint.py has no Endpoint class; use --endpoint-factory")


class _ErrorLog(logging.Handler):
    """Collects exceptions the endpoint catches and logs (log.exception) instead of raising:
    for a fuzzer those are crashes too, just ones that were contained."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class EndpointTarget:
    """Whole messages into `receive_datagram`, with a clock that advances 1 ms per input."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.factory = factory
        self.endpoint = factory()
        self.now = 0.0
        self.inputs = 0
        self.errors = _ErrorLog()
        gateway_log = logging.getLogger("gateway")
        gateway_log.addHandler(self.errors)
        gateway_log.propagate = False  # contained errors are counted here, not printed 1e6 times

    def feed(self, data: bytes, rec: Recorder) -> None:
        self.now += 0.001
        self.inputs += 1
        if self.inputs % 10_000 == 0:  # bounded state: a fresh endpoint now and then
            self.endpoint = self.factory()
        ep = self.endpoint
        try:
            ep.receive_datagram(data, ADDR, self.now)
            while ep.next_event() is not None:
                pass
            ep.datagrams_to_send()
            timer = ep.get_timer()
            if timer is not None and timer <= self.now:
                ep.handle_timer(self.now)
        except Exception:
            rec.failure("endpoint", "crash", data, traceback.format_exc())
            self.endpoint = self.factory()
            return
        if self.errors.records:
            record = self.errors.records[0]
            self.errors.records.clear()
            detail = "".join(traceback.format_exception(*record.exc_info)) if record.exc_info \
                else record.getMessage()
            rec.failure("endpoint", "logged-error", data, detail)
            return
        rec.count("endpoint", "handled")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--targets", default="parse,stream,endpoint")
    parser.add_argument("--crash-dir", type=pathlib.Path, default=pathlib.Path("fuzz-crashes"))
    parser.add_argument("--endpoint-factory", help="module:callable returning an Endpoint")
    parser.add_argument("--progress", type=int, default=100_000, help="print every N inputs")
    parser.add_argument("--slow-ms", type=float, default=20.0,
                        help="CPU ms for one parse_message call above which an input is 'slow'")
    args = parser.parse_args(argv)

    targets = set(args.targets.split(","))
    endpoint: EndpointTarget | None = None
    if "endpoint" in targets:
        factory = endpoint_factory(args.endpoint_factory)
        if factory is None:
            print("endpoint: gateway/sip/endpoint.py not present, target skipped")
        else:
            endpoint = EndpointTarget(factory)
    rng = random.Random(args.seed)
    corpus = load_corpus("valid") + load_corpus("invalid")
    rec = Recorder(args.crash_dir)
    started = time.perf_counter()
    for i in range(1, args.count + 1):
        roll = rng.random()
        if roll < 0.65:
            data = mutate(rng, corpus)
        elif roll < 0.85:
            data = generate(rng)
        else:
            data = mutate(rng, [generate(rng)])
        if "parse" in targets:
            check_parse(data, rec, args.slow_ms / 1000)
        if "stream" in targets:
            check_stream(data, rng, rec)
        if endpoint is not None:
            endpoint.feed(data, rec)
        if args.progress and i % args.progress == 0:
            elapsed = time.perf_counter() - started
            print(f"{i:>10,} inputs  {i / elapsed:8,.0f} inputs/s  "
                  f"failures {sum(rec.signatures.values())}", flush=True)
    elapsed = time.perf_counter() - started
    print(f"inputs: {args.count:,} in {elapsed:.1f} s = {args.count / elapsed:,.0f} inputs/s "
          f"(seed {args.seed}, corpus {len(corpus)} files)")
    for target, counts in sorted(rec.counts.items()):
        print(f"  {target:9s} " + "  ".join(f"{k}={v:,}" for k, v in sorted(counts.items())))
    if rec.signatures:
        print(f"FAILURES ({sum(rec.signatures.values()):,}), examples in {args.crash_dir}/:")
        for signature, n in rec.signatures.most_common():
            print(f"  {n:>8,}  {signature}")
        return 1
    print("no crashes, no broken invariants")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Capacity: how many calls one worker holds before quality fails, then two behind Kamailio.

Ramps the number of concurrent calls (each step a fresh set of processes, as bench/load.py
runs them: gateway workers measured alone, callers and far ends in their own processes) into
one worker, then into two workers behind the real Kamailio with deploy/kamailio/kamailio.cfg,
until a step fails the quality bar; the last step that passed is the knee. The far end is
bench/far_end.py (echoes the gateway's Opus, decodes nothing), so this 2-core box can drive
40+ calls; the callers are probe phones speaking the probe's speech-like phrase in turns.

Quality bar (issue 12 item 8), every call of a step:
  - connected, its echo heard, ended by the caller;
  - no phone-side gap over 40 ms (longest time between two packets a phone received);
  - playout underruns under 0.1 % of the frames played to the phones (worker metrics);
  - added delay p99 <= 50 ms each way: with an echoing far end a phone measures the round
    trip (start of its phrase -> first voice back), which holds both directions through the
    gateway plus the far end's own pacing (up to 20 ms); half of (round trip - 20 ms) is
    reported as each way;
  - setup (INVITE -> 200 OK) p95 <= 300 ms.
Printed per step and in a summary: calls per worker at the knee, CPU % of one core per call
and its ratio to the speech transcoding floor measured in the same run (bench/media_path.py:
G.711 <-> 48 kHz Opus at complexity 10 both ways; also to the gateway's own codec path alone),
RSS per call, the longest gap the worker itself paced (its playout_max_gap_seconds histogram:
a phone that saw a longer one lost the time after the worker sent), event-loop lag p99 (the worker's
orga_gateway_event_loop_lag_seconds histogram, when the worker exports it) and the load
average, which says how much else the machine was doing.

    nice -n -5 .venv/bin/python bench/capacity.py [--steps 10 20 30 40 50] [--seconds 20]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load import BenchError, run_one
from bench.load_report import Layout, ms

FAR_END_HOLD_S = 0.020  # the far end holds a frame 0-40 ms (2 queued at most), 20 on average
LAG = "orga_gateway_event_loop_lag_seconds_bucket"
GAP = "orga_gateway_playout_max_gap_seconds_bucket"


def lag_quantile(metrics: dict[str, float], q: float) -> float:
    """The q-quantile of the summed lag histogram (upper bucket bound), NaN without one."""
    buckets = sorted((float(k.rsplit(":", 1)[1]), v) for k, v in metrics.items()
                     if k.startswith(LAG + ":"))
    if not buckets or buckets[-1][1] <= 0:
        return float("nan")
    total = buckets[-1][1]
    return next(le for le, count in buckets if count >= q * total)


def worst_bucket(metrics: dict[str, float], name: str) -> float:
    """Upper bound of the highest non-empty bucket of a histogram (NaN without one): for
    playout_max_gap_seconds, the longest gap the worker itself paced, to a bucket."""
    buckets = sorted((float(k.rsplit(":", 1)[1]), v) for k, v in metrics.items()
                     if k.startswith(name + ":"))
    worst, below = float("nan"), 0.0
    for le, count in buckets:
        if count > below:
            worst = le
        below = count
    return worst


def judge(row: dict[str, Any], failures: list[str], seconds: float) -> list[str]:
    """Why this step fails the quality bar (empty: it passes)."""
    why = list(failures)
    n = row["calls"]
    if row["gaps_over_40ms"]:
        why.append(f"{row['gaps_over_40ms']} call(s) had a phone-side gap over 40 ms "
                   f"(longest {ms(row['max_gap'])} ms)")
    frames = n * seconds / 0.020
    underruns = row["metrics"].get("orga_gateway_playout_underruns_total", 0.0)
    if underruns > 0.001 * frames:
        why.append(f"underruns {underruns:.0f} = {underruns / frames:.2%} of frames (> 0.1 %)")
    each_way_p99 = each_way(row["onset"][1])
    if not each_way_p99 <= 0.050:
        why.append(f"added delay p99 {ms(each_way_p99)} ms each way (> 50 ms)")
    if not row["setup"][1] <= 0.300:
        why.append(f"setup p95 {ms(row['setup'][1])} ms (> 300 ms)")
    return why


def each_way(round_trip: float) -> float:
    return max(0.0, round_trip - FAR_END_HOLD_S) / 2


def summary_line(row: dict[str, Any], mode: str, ok: bool) -> dict[str, Any]:
    workers = row["layout"].workers
    cpu = sum(row.get("cpu", {}).values())
    n = row["calls"]
    rss = sum(row.get("rss", {}).values()) - sum(row["idle_rss"].values())
    return {
        "mode": mode, "calls": n, "workers": workers, "ok": ok,
        "per_worker": n / workers, "cpu_per_call": cpu / n if cpu else float("nan"),
        "xfloor": (cpu / n) / row["floor_ref"] if cpu else float("nan"),
        "xown": (cpu / n) / row["floor_fast"] if cpu else float("nan"),
        "floor": row["floor_ref"], "rss_per_call": rss / n if cpu else float("nan"),
        "lag_p90": lag_quantile(row["metrics"], 0.90),
        "lag_p99": lag_quantile(row["metrics"], 0.99), "setup_p95": row["setup"][1],
        "delay_p99": each_way(row["onset"][1]), "max_gap": row["max_gap"],
        "worker_gap": worst_bucket(row["metrics"], GAP),
        "load": (row["load_during"] or row["load_before"])[0],
        "busy": row.get("machine_busy", float("nan")),
        # Share of the window the workers' loop threads were runnable but had no CPU.
        "wait": max(row.get("wait", {}).values(), default=float("nan")),
        # The load generators (not measured as the gateway): % of one core per call.
        "far_end_per_call": row.get("emu_cpu", float("nan")) / n,
        "caller_per_call": row.get("caller_cpu", float("nan")) / n,
    }


def print_table(lines: list[dict[str, Any]]) -> None:
    print("\n| mode | calls | per worker | quality | CPU %/call | x floor | x own codecs | "
          "RSS MB/call | loop lag p90 / p99 ms | setup p95 ms | delay p99 ms each way | "
          "longest gap ms: phone / worker paced ≤ | machine busy % | load1 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in lines:
        print(f"| {s['mode']} | {s['calls']} | {s['per_worker']:.0f} | "
              f"{'pass' if s['ok'] else 'FAIL'} | {s['cpu_per_call']:.2f} | {s['xfloor']:.2f} | "
              f"{s['xown']:.2f} | {s['rss_per_call']:.2f} | {ms(s['lag_p90'])} / "
              f"{ms(s['lag_p99'])} | {ms(s['setup_p95'])} | {ms(s['delay_p99'])} | "
              f"{ms(s['max_gap'])} / {ms(s['worker_gap'])} | {s['busy']:.0f} | {s['load']:.2f} |")


def ramp(args: argparse.Namespace, mode: str, workers: int, steps: list[int],
         logs: Path) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for per_worker in steps:
        n = per_worker * workers
        lay = Layout(n, workers, max(1, math.ceil(n / 40)), max(1, math.ceil(n / 25)))
        run_args = argparse.Namespace(
            seconds=args.seconds, rate=args.rate, margin=2.0, stand_in_nice=args.stand_in_nice,
            sample_interval=0.5, floor_seconds=args.floor_seconds, far_end=True,
            balancer=workers > 1, event_loop=args.event_loop)
        step_logs = logs / f"{mode}-{n}"
        step_logs.mkdir()
        print(f"\n== {mode}: {n} calls ({per_worker} per worker), load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
        row, failures = run_one(run_args, lay, step_logs)
        why = judge(row, failures, args.seconds)
        line = summary_line(row, mode, not why)
        lines.append(line)
        print(f"   {'PASS' if not why else 'FAIL'}: cpu/call {line['cpu_per_call']:.2f} % "
              f"({line['xfloor']:.2f}x the speech floor {line['floor']:.2f} %, "
              f"{line['xown']:.2f}x our own codec path), rss/call "
              f"{line['rss_per_call']:.2f} MB, lag p99 {ms(line['lag_p99'])} ms, setup p95 "
              f"{ms(line['setup_p95'])} ms, delay p99 {ms(line['delay_p99'])} ms each way, "
              f"longest gap {ms(line['max_gap'])} ms at a phone, paced by the worker <= "
              f"{ms(line['worker_gap'])} ms, machine busy {line['busy']:.0f} %, "
              f"worker loop waiting for a CPU {line['wait']:.0f} % of the time; far end "
              f"{line['far_end_per_call']:.2f} %, callers {line['caller_per_call']:.2f} % of a "
              "core per call",
              flush=True)
        for w in why:
            print(f"   - {w}")
        if why and not args.keep_going:
            break
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--steps", type=int, nargs="+", default=[10, 20, 30, 40, 50],
                   help="calls per worker at each step")
    p.add_argument("--seconds", type=float, default=20.0, help="call length after answer")
    p.add_argument("--event-loop", choices=["auto", "uvloop", "asyncio"], default="auto",
                   help="the workers' event loop (gateway run --event-loop)")
    p.add_argument("--rate", type=float, default=5.0, help="new calls per second")
    p.add_argument("--floor-seconds", type=float, default=5.0)
    p.add_argument("--stand-in-nice", type=int, default=0, metavar="N",
                   help="run the far ends and callers at this nice level (e.g. 10) so the "
                   "workers get the CPU first on a shared machine; default 0")
    p.add_argument("--keep-going", action="store_true",
                   help="run every step even after one failed (to see how quality degrades)")
    p.add_argument("--modes", nargs="+", choices=["one", "two"], default=["one", "two"],
                   help="one worker direct, two workers behind Kamailio")
    args = p.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="orga-capacity-"))
    print(f"capacity bench: logs in {logs}; {os.cpu_count()} CPUs; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    lines: list[dict[str, Any]] = []
    try:
        if "one" in args.modes:
            lines += ramp(args, "1 worker", 1, args.steps, logs)
        if "two" in args.modes:
            lines += ramp(args, "2 workers + Kamailio", 2, args.steps, logs)
    except BenchError as exc:
        print(f"capacity bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print_table(lines)
    for mode in dict.fromkeys(s["mode"] for s in lines):
        passed = [s for s in lines if s["mode"] == mode and s["ok"]]
        knee = passed[-1] if passed else None
        print(f"knee, {mode}: " + (f"{knee['per_worker']:.0f} calls per worker held with "
                                   "quality" if knee else "no step passed"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

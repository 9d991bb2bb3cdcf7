"""Printing for bench/load.py: one block per N and a summary table (figures computed there)."""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Layout:
    calls: int
    workers: int
    emulators: int
    callers: int


def ms(x: float) -> str:
    return "-" if math.isnan(x) else f"{x * 1000:.0f}"


def print_row(row: dict[str, Any], args: argparse.Namespace) -> None:
    lay: Layout = row["layout"]
    n = row["calls"]
    m = row["metrics"]
    print(f"\n== {n} calls: {lay.workers} gateway worker(s), {lay.emulators} emulator(s), "
          f"{lay.callers} caller process(es); {args.seconds:.0f} s calls started at "
          f"{args.rate:g}/s; {os.cpu_count()} CPUs"
          + (f"; stand-ins at nice {args.stand_in_nice}" if args.stand_in_nice else "") + " ==")
    lines: list[tuple[str, str]] = []
    lb, ld = row["load_before"], row["load_during"]
    lines.append(("load average 1/5/15 min", f"before {lb[0]:.2f} {lb[1]:.2f} {lb[2]:.2f}"
                  + (f"; mid-run {ld[0]:.2f} {ld[1]:.2f} {ld[2]:.2f}" if ld else "")))
    lines.append(("calls connected", f"{row['connected']}/{n}"))
    lines.append(("calls with replies heard", f"{row['with_replies']}/{n} (phrases answered "
                  f"{row['turns_answered']}/{row['turns']}; the last may be cut by the hang-up)"))
    sp50, sp95, smax = row["setup"]
    lines.append(("setup p50 / p95 / max", f"{ms(sp50)} / {ms(sp95)} / {ms(smax)} ms "
                  "(probe: INVITE -> 200 OK)"))
    tp50, tp95, tn = row["turn"]
    lines.append(("turn latency p50 / p95", f"{ms(tp50)} / {ms(tp95)} ms over {tn} turns "
                  "(probe: end of phrase -> first reply audio; includes the emulator's 500 ms "
                  "end-of-utterance wait)"))
    gcount = m.get("orga_gateway_turn_latency_seconds_count", 0)
    if gcount:
        mean = m["orga_gateway_turn_latency_seconds_sum"] / gcount * 1000
        lines.append(("gateway turn latency mean", f"{mean:.0f} ms over {gcount:.0f} turns "
                      "(gateway: caller VAD end -> first AI audio sent)"))
    sent, recv, lost = row["packets"]
    lines.append(("probe RTP packets", f"sent {sent}, received {recv} ({row['delivered']:.0f} % "
                  f"of 50/s while connected), lost {lost}"))
    if "cpu" in row:
        cpu = row["cpu"]
        total = sum(cpu.values())
        per = total / n
        lines.append(("steady window", f"{row['window_s']:.1f} s with all {n} calls up"))
        lines.append(("gateway CPU, total", f"{total:.1f} % of one core ("
                      + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())
                      + f"; idle {sum(row['idle_cpu'].values()):.1f})"))
        starved = row["delivered"] < 95
        lines.append(("CPU per call", f"{per:.2f} % of one core" + (
            "  (LOWER BOUND: the gateway fell behind, phones got "
            f"{row['delivered']:.0f} % of their packets)" if starved else "")))
        rss_total = sum(row["rss"].values())
        idle = sum(row["idle_rss"].values())
        lines.append(("RSS per call", f"{(rss_total - idle) / n:.2f} MB above idle "
                      f"(total {rss_total:.0f} MB, idle baseline {idle:.0f} MB)"))
        lines.append(("transcoding floor", f"{row['floor_ref']:.2f} % per call (aiortc codec "
                      f"path, as the gateway encodes); fast path {row['floor_fast']:.2f} %"))
        lines.append(("per-call CPU / floor", f"{per / row['floor_ref']:.1f}x aiortc-path floor "
                      f"({per / row['floor_fast']:.1f}x fast-path floor)"))
        lines.append(("stand-ins CPU (not measured)", f"emulators {row['emu_cpu']:.0f} %, "
                      f"callers {row['caller_cpu']:.0f} % of one core"))
        lines.append(("loop thread waiting for CPU", ", ".join(
            f"{k} {v:.0f} %" for k, v in row["wait"].items()) + " of the window (run queue; "
            "time the gateway was ready to run but another process had the CPU)"))
        lines.append(("machine busy (all CPUs)", f"{row['machine_busy']:.0f} % over the window "
                      "(near 100 %: the gateway competed with other processes for CPU; "
                      "its timing suffers)"))
    lines.append(("playout underruns", f"{m.get('orga_gateway_playout_underruns_total', 0):.0f}"))
    lines.append(("dropped backlog", f"{m.get('orga_gateway_playout_dropped_seconds_total', 0):.2f}"
                  " s"))
    ended = {k.split(":", 1)[1]: v for k, v in m.items()
             if k.startswith("orga_gateway_calls_ended_total:")}
    lines.append(("gateway call results", ", ".join(f"{k} {v:.0f}" for k, v in ended.items())
                  or "-"))
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        print(f"  {k:<{width}}  {v}")


def print_summary(rows: list[dict[str, Any]]) -> None:
    print("\nsummary (gateway processes only; % of one core)")
    print(" calls wrk  conn repl  cpu%/call  xfloor  RSS MB/call  setup p50/p95 ms  "
          "turn p50/p95 ms  underruns  dropped s  load1  busy%")
    for r in rows:
        m = r["metrics"]
        per = sum(r["cpu"].values()) / r["calls"] if "cpu" in r else float("nan")
        rss = ((sum(r["rss"].values()) - sum(r["idle_rss"].values())) / r["calls"]
               if "rss" in r else float("nan"))
        load = (r["load_during"] or r["load_before"])[0]
        busy = r.get("machine_busy", float("nan"))
        print(f" {r['calls']:5d} {r['layout'].workers:3d} {r['connected']:5d} "
              f"{r['with_replies']:4d}  {per:9.2f}  {per / r['floor_ref']:6.1f}  {rss:11.2f}  "
              f"{ms(r['setup'][0]):>7} /{ms(r['setup'][1]):>6}  "
              f"{ms(r['turn'][0]):>7} /{ms(r['turn'][1]):>5}  "
              f"{m.get('orga_gateway_playout_underruns_total', 0):9.0f}  "
              f"{m.get('orga_gateway_playout_dropped_seconds_total', 0):9.2f}  {load:5.2f}  "
              f"{busy:5.0f}")



"""`orga-sip-gateway probe sip:USER@HOST[:PORT]`: place one test call and print its report.

Exit status: 0 the call connected and a reply was heard, 1 it connected but nothing was heard
after our phrase, 2 the call failed (or could not be placed: bad target, bad WAV, bind error).
With `--json` stdout carries only the JSON report; logs always go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="sip:USER@HOST[:PORT]", help="who to call")
    parser.add_argument("--transport", choices=("udp", "tcp", "tls"), default=None,
                        help="SIP transport (default: the URI's ;transport=, else udp)")
    parser.add_argument("--srtp", action="store_true",
                        help="offer SRTP (RTP/SAVP, SDES key) and require it in the answer")
    parser.add_argument("--ca-file", metavar="PEM", default=None,
                        help="TLS: CA that signed the far end's certificate (default: the "
                        "system store)")
    parser.add_argument("--play", type=Path, metavar="WAV",
                        help="say this 16-bit WAV (any rate) instead of the built-in phrase")
    parser.add_argument("--record", type=Path, metavar="WAV",
                        help="write what the probe hears to this WAV (8 kHz mono 16-bit)")
    parser.add_argument("--seconds", type=_positive, default=8.0, metavar="N",
                        help="hang up N seconds after the answer (default 8)")
    parser.add_argument("--turns", type=int, default=1, metavar="N",
                        help="say the phrase N times, each after the previous reply ends "
                        "(speech both ways for load tests; default 1)")
    parser.add_argument("--codec", choices=("PCMU", "PCMA"), type=str.upper, default=None,
                        help="offer only this codec (default: offer PCMU and PCMA)")
    parser.add_argument("--local-ip", metavar="ADDR", default=None,
                        help="local address for SIP and RTP (default: the one the OS routes "
                        "to the target, e.g. 127.0.0.1 for a loopback target)")
    parser.add_argument("--answer-timeout", type=_positive, default=30.0, metavar="S",
                        help="cancel if the call is not answered within S seconds (default 30)")
    parser.add_argument("--from-user", default="probe", help="our SIP user (default probe)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--log-level", default="WARNING", help="stderr log level")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    # Import here: the media stack (numpy, PyAV, aiortc) loads only when a probe runs.
    from gateway.probe.phone import ProbeError, ProbeOptions, place_call
    from gateway.probe.report import format_text, to_json

    options = ProbeOptions(
        transport=args.transport, play=args.play, record=args.record, seconds=args.seconds,
        turns=args.turns,
        codec=args.codec, local_ip=args.local_ip, answer_timeout_s=args.answer_timeout,
        from_user=args.from_user, srtp=args.srtp, ca_file=args.ca_file,
    )
    try:
        report = asyncio.run(place_call(args.target, options))
    except ProbeError as exc:
        print(f"probe: {exc}", file=sys.stderr)
        return 2
    print(to_json(report) if args.json else format_text(report), flush=True)
    return report.exit_code

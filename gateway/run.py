"""`orga-sip-gateway run --config FILE`: validate the config, then run the gateway daemon.

Logs go to stderr, one line per record (journald adds its own timestamps under systemd).
An invalid config exits 2 before anything binds, with every problem as `key: problem — fix`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from gateway import eventloop
from gateway.config_cli import EXIT_INVALID, load_or_report
from gateway.logs import setup_logging

log = logging.getLogger("gateway")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="TOML config file")
    parser.add_argument("--event-loop", default="auto", choices=eventloop.CHOICES,
                        help="auto (default: uvloop if installed, else asyncio's own), uvloop "
                        "or asyncio; see gateway/eventloop.py for the measurements behind it")
    parser.add_argument("--worker", type=int, default=None, metavar="N",
                        help="run as worker N (1..workers.count) of a shared config: SIP port, "
                        "HTTP port and RTP range derived from it (systemd orga-sip-gateway@N)")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO")


def main(args: argparse.Namespace) -> int:
    config = load_or_report(args.config, "; not starting")
    if config is None:
        return EXIT_INVALID
    if args.worker is not None:
        from gateway.workers import worker_config

        try:
            config = worker_config(config, args.worker)
        except ValueError as exc:
            print(f"--worker: {exc} — use a worker number the config's [workers] count "
                  "allows, or raise count", file=sys.stderr)
            return EXIT_INVALID
    redaction = setup_logging(args.log_level, secrets=config.secrets())
    for warning in config.warnings():
        log.warning("config: %s", warning)
    from gateway.aiortc_patches import UntestedVersionError
    from gateway.app import Gateway  # imported late: aiortc is slow to import

    try:
        gateway = Gateway(config, on_token=lambda t: redaction.register(t, ephemeral=True),
                          on_token_spent=redaction.forget)
        eventloop.run(gateway.serve(), args.event_loop)
    except (OSError, UntestedVersionError, eventloop.EventLoopUnavailable) as exc:
        # e.g. the SIP port is taken, an untested aiortc: say so plainly
        log.error("cannot start: %s", exc)
        return 1
    return 0

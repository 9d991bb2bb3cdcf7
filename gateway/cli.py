"""Command-line entry point: one subcommand per job, each owned by the module that does it.

A subcommand module exposes `add_arguments(parser)` and `main(args) -> int`; this file only
maps names to modules so that each part of the gateway keeps its own CLI next to its code and
importing the CLI stays cheap (modules load only when their subcommand runs).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gateway import __version__

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "emulator": ("gateway.emulator.cli", "run the built-in Orga realtime API emulator"),
    "run": ("gateway.run", "run the gateway daemon"),
    "check-config": ("gateway.config_cli", "validate a config file without starting"),
    "probe": ("gateway.probe.cli", "place a test call: talk, listen, report setup/latency/loss"),
    "demo": ("gateway.demo", "emulator + gateway + one test call on loopback (make demo)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orga-sip-gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._module.main(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""`orga-sip-gateway check-config --config FILE`: validate a config without starting anything.

Exit 0 with a short summary, or exit 2 with each problem on its own line (`key: problem — fix`).
"""

from __future__ import annotations

import argparse
import sys

from gateway.config import Config, ConfigError, load_config
from gateway.config.load import tls_files
from gateway.transport.tls_context import check_files

EXIT_INVALID = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="TOML config file")


def summary(config: Config) -> str:
    trunks = ", ".join(
        f"{t.name} ({', '.join(map(str, t.allow))}{', digest auth' if t.requires_auth else ''}"
        f"{', mutual TLS' if t.tls_client_ca else ''}, srtp {t.srtp}"
        f"{', outbound via ' + t.outbound_proxy if t.outbound_proxy else ''})"
        for t in config.trunks)
    tls = f" (TLS on {config.sip.tls_port})" if "tls" in config.sip.transports else ""
    routes = ", ".join(r.match + (f" [{r.trunk}]" if r.trunk else "") for r in config.routes)
    return "\n".join([
        f"SIP      {config.sip.bind}:{config.sip.port} {'+'.join(config.sip.transports)}{tls}",
        f"RTP      {config.rtp.bind} {config.rtp.port_min}-{config.rtp.port_max} "
        f"({config.rtp.call_capacity} calls) codecs {','.join(config.rtp.codecs)}",
        f"Orga     {config.orga.base_url} model {config.orga.model} voice {config.orga.voice}",
        f"HTTP     {config.http.listen}, /v1 API "
        f"{'on (bearer token)' if config.api_token is not None else 'off'}, agent tools "
        f"{_tools(config)}",
        f"Limits   {config.limits.max_calls} calls, {config.limits.max_call_duration_s:g} s max, "
        f"drain {config.limits.drain_timeout_s:g} s",
        f"Trunks   {trunks}",
        f"Routes   {routes}",
        *_workers(config),
    ])


def _tools(config: Config) -> str:
    url = config.mcp.public_url
    return f"at {url.rstrip('/')}/mcp/<per-call secret>" if url else "off"


def _workers(config: Config) -> list[str]:
    """One line per worker when several share the file (`run --worker N`)."""
    from gateway.workers import worker_config

    count = config.workers.count
    if count == 1:
        return []
    lines = []
    for n in range(1, count + 1):
        w = worker_config(config, n)
        lines.append(f"Worker {n:<2} SIP {w.sip.port}, HTTP {w.http.listen}, RTP "
                     f"{w.rtp.port_min}-{w.rtp.port_max} ({w.rtp.call_capacity} calls)")
    return lines


def load_or_report(path: str, what: str = "") -> Config | None:
    """Load a config; on problems print each as `key: problem — fix` and return None."""
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"{path}: {len(exc.problems)} problem(s){what}", file=sys.stderr)
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def main(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_INVALID
    warnings = config.warnings()
    if "tls" in config.sip.transports:
        warnings += check_files(tls_files(config))[1]  # a certificate about to expire
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.config}: OK")
    print(summary(config))
    return 0

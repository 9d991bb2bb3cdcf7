"""`orga-sip-gateway emulator`: run the built-in Orga emulator as a process.

Users point the gateway's `[orga] base_url` at it to try a trunk or PBX without spending Orga
credits; faults can be set at start (flags) or while running (POST /_emulator/faults with the
API key as Bearer). Prints one line `orga emulator listening on http://HOST:PORT` once bound
(with `--listen 127.0.0.1:0` the port is chosen by the system), then serves until SIGINT or
SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import re
import signal
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # aiortc/av load only when the subcommand runs, not when the CLI parses
    from gateway.emulator.server import EmulatorConfig, Faults
    from gateway.emulator.tool_caller import ScriptedTool

log = logging.getLogger(__name__)


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise argparse.ArgumentTypeError("expected HOST:PORT, e.g. 127.0.0.1:8089")
    return host.strip("[]"), int(port)


def _loopback_ice_url(value: str) -> str:
    """ice-config URLs are for rehearsing on this machine: loopback hosts only."""
    match = re.match(r"[A-Za-z]+:(\[[^\]]+\]|[^:?]+)", value.strip())
    host = match.group(1).strip("[]") if match else ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise argparse.ArgumentTypeError(f"{value!r}: the emulator serves loopback hosts only")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", type=_listen, default=("127.0.0.1", 8089),
                        metavar="HOST:PORT", help="address to serve on (default 127.0.0.1:8089)")
    parser.add_argument("--api-key", action="append", default=[], metavar="KEY",
                        help="accepted API key (repeatable; default: $ORGA_API_KEY)")
    parser.add_argument("--token-ttl", type=float, default=120.0, metavar="S",
                        help="ephemeral token lifetime in seconds (default 120, within the "
                        "documented 60-120 s)")
    parser.add_argument("--ice-address", action="append", default=None, metavar="ADDR",
                        help="local address for the answerer's ICE candidates (repeatable; "
                        "default 127.0.0.1)")
    parser.add_argument("--ice-all-addresses", action="store_true",
                        help="gather on every non-loopback address instead")
    parser.add_argument("--ice-server", action="append", default=[], metavar="URL",
                        type=_loopback_ice_url,
                        help="STUN/TURN URL on a loopback host that ice-config returns, in any "
                        "form providers use, e.g. stun:127.0.0.1:3478?transport=udp "
                        "(default: none)")
    parser.add_argument("--stun-server", action="store_true",
                        help="run a loopback STUN server and list it first in ice-config")
    agent = parser.add_argument_group("agent")
    agent.add_argument("--reply-wav", type=Path, help="16-bit PCM WAV played as every reply")
    agent.add_argument("--reply-seconds", type=float, default=1.5,
                       help="length of the generated two-tone reply (default 1.5)")
    agent.add_argument("--reply-text", default=None,
                       help="text of response.output_item.done (default: a line with an "
                       "emotion tag)")
    agent.add_argument("--greeting", help="speak and send this greeting on connect")
    agent.add_argument("--vad-threshold-dbfs", type=float, default=-40.0)
    agent.add_argument("--legacy-events", action="store_true",
                       help="send `event`/`message` keys like mid-2025 servers")
    agent.add_argument("--no-audio-gate", action="store_true",
                       help="process caller audio before any session.update with audio "
                       "(default: ignored until then, as the real service is believed to)")
    agent.add_argument("--barge-in", action="store_true",
                       help="stop the reply as soon as the caller speaks")
    agent.add_argument("--agent-tool", default=None, metavar="NAME[=JSON]",
                       help="play Orga's cloud: call this tool of each session's mcp_server "
                       "(e.g. hang_up, or transfer_call={\"target\": \"sales\"})")
    agent.add_argument("--agent-tool-after", type=float, default=5.0, metavar="S",
                       help="seconds into the session for --agent-tool (default 5)")
    strict = parser.add_argument_group("validation")
    strict.add_argument("--lenient-params", action="store_true",
                        help="accept /calls without params (default: 422 Missing params)")
    strict.add_argument("--email-required", action="store_true",
                        help="legacy mode: client-secrets requires ?email=")
    strict.add_argument("--accept-legacy-voices", action="store_true",
                        help="also accept alloy, echo, ... voices")
    strict.add_argument("--missing-auth-status", type=int, choices=(401, 403), default=403)
    faults = parser.add_argument_group("fault injection")
    faults.add_argument("--fail-calls", type=int, default=0, metavar="N",
                        help="fail the next N /calls")
    faults.add_argument("--fail-status", type=int, default=503, help="status for --fail-calls")
    faults.add_argument("--retry-after", type=int, default=None, metavar="S",
                        help="Retry-After header on --fail-calls responses")
    faults.add_argument("--delay", type=float, default=0.0, metavar="S",
                        help="delay every API response")
    faults.add_argument("--calls-delay", type=float, default=0.0, metavar="S",
                        help="delay /calls answers after the session exists")
    faults.add_argument("--omit-conversation-id", action="store_true",
                        help="answer /calls without conversation_id")
    faults.add_argument("--malformed-calls", action="store_true",
                        help="answer /calls 200 with a body that is not JSON")
    faults.add_argument("--end-after", type=float, default=None, metavar="S",
                        help="end every session after S seconds")
    faults.add_argument("--media-stop-after", type=float, default=None, metavar="S",
                        help="stop each session's audio after S seconds, ICE/DTLS still up "
                        "(a dead leg)")
    faults.add_argument("--reject-tokens", action="store_true",
                        help="answer 401 Invalid ephemeral token to every token")
    parser.add_argument("--log-level", default="INFO")


def _tool_script(args: argparse.Namespace) -> ScriptedTool | None:
    from gateway.emulator.tool_caller import ScriptedTool, ToolRequestError

    if not args.agent_tool:
        return None
    try:
        return ScriptedTool.parse(args.agent_tool, args.agent_tool_after)
    except ToolRequestError as exc:
        raise SystemExit(f"emulator: {exc}") from None


def build(args: argparse.Namespace) -> tuple[EmulatorConfig, Faults]:
    from gateway.emulator.agent import DEFAULT_REPLY_TEXT, AgentSettings
    from gateway.emulator.server import EmulatorConfig, Faults

    keys = tuple(args.api_key) or tuple(filter(None, [os.environ.get("ORGA_API_KEY")]))
    if not keys:
        raise SystemExit("emulator: give --api-key KEY or set ORGA_API_KEY")
    addresses = None if args.ice_all_addresses else tuple(args.ice_address or ["127.0.0.1"])
    config = EmulatorConfig(
        api_keys=keys,
        token_ttl_s=args.token_ttl,
        ice_servers=tuple({"urls": url} for url in args.ice_server),
        stun_server=args.stun_server,
        params_required=not args.lenient_params,
        email_required=args.email_required,
        accept_legacy_voices=args.accept_legacy_voices,
        missing_auth_status=args.missing_auth_status,
        agent=AgentSettings(
            reply_wav=args.reply_wav,
            reply_seconds=args.reply_seconds,
            reply_text=args.reply_text or DEFAULT_REPLY_TEXT,
            greeting=args.greeting,
            vad_threshold_dbfs=args.vad_threshold_dbfs,
            legacy_events=args.legacy_events,
            audio_gate=not args.no_audio_gate,
            barge_in=args.barge_in,
            ice_addresses=addresses,
        ),
        tool_script=_tool_script(args),
    )
    faults = Faults(
        fail_calls=args.fail_calls,
        fail_status=args.fail_status,
        retry_after_s=args.retry_after,
        delay_s=args.delay,
        calls_delay_s=args.calls_delay,
        omit_conversation_id=args.omit_conversation_id,
        malformed_calls=args.malformed_calls,
        end_after_s=args.end_after,
        media_stop_after_s=args.media_stop_after,
        reject_tokens=args.reject_tokens,
    )
    return config, faults


async def serve(args: argparse.Namespace) -> None:
    from gateway.emulator.server import Emulator

    config, faults = build(args)
    host, port = args.listen
    emulator = Emulator(config, host, port, faults=faults)
    await emulator.start()
    print(f"orga emulator listening on http://{host}:{emulator.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await emulator.stop()
        log.info("orga emulator stopped")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args))
    return 0

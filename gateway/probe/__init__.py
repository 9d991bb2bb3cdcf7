"""`orga-sip-gateway probe`: a built-in test phone that calls a SIP target, talks, listens and
reports setup time, first audio, turn latency, packets, loss, jitter and whether a reply came.

Library use (integration tests, `bench/load.py`): `await place_call(target, ProbeOptions(...))`
returns a `ProbeReport`; `report.exit_code` is the CLI's verdict (0 pass, 1 no reply, 2 failed).
"""

from gateway.probe.phone import ProbeError, ProbeOptions, place_call
from gateway.probe.report import ProbeReport, Verdict, format_text, to_json

__all__ = [
    "ProbeError", "ProbeOptions", "ProbeReport", "Verdict", "format_text", "place_call", "to_json",
]

"""Admission and the failure table: what a refused or failed call answers and records."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from gateway.call import CallContext
from gateway.calls import UNROUTED, CallRegistry
from gateway.clock import FakeClock
from gateway.config import parse_config
from gateway.media.ports import PortPool, PortsExhausted
from gateway.metrics import Metrics
from gateway.orga.api import OrgaApi
from gateway.orga.errors import (
    OrgaAuthError,
    OrgaProtocolError,
    OrgaRequestError,
    OrgaTimeoutError,
    OrgaUnavailableError,
    OrgaValidationError,
    ValidationIssue,
)
from gateway.orga.settings import OrgaClientSettings, PeerSettings
from gateway.outcomes import Outcome, classify
from gateway.sdp import NoCommonCodec, UnusableOffer
from gateway.sip.address import Peer
from gateway.sip.events import CallHandle, InviteReceived
from gateway.sip.message import SipRequest
from gateway.sip.parser import parse_message
from tests.calls.fakes import RecordingSignalling


def _invite(handle: int, callee: str = "800") -> InviteReceived:
    raw = (
        f"INVITE sip:{callee}@127.0.0.1:5080 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-{handle}\r\n"
        f"From: <sip:caller@127.0.0.1>;tag=a{handle}\r\nTo: <sip:{callee}@127.0.0.1>\r\n"
        f"Call-ID: c{handle}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    request = parse_message(raw)
    assert isinstance(request, SipRequest)
    return InviteReceived(CallHandle(handle), request, Peer("127.0.0.1", 5999), None)


def _registry(raw: dict[str, Any]) -> tuple[CallRegistry, RecordingSignalling, Metrics]:
    config = parse_config(raw, {"ORGA_API_KEY": "sk_orga_ai_test"})
    metrics = Metrics()
    signalling = RecordingSignalling()
    ctx = CallContext(
        config=config, metrics=metrics, clock=FakeClock(),
        ports=PortPool(config.rtp.port_min, config.rtp.port_max, 5.0, FakeClock()),
        api=OrgaApi(OrgaClientSettings("http://127.0.0.1:9", "sk_orga_ai_test")),
        signalling=signalling, peer_settings=PeerSettings(ice_addresses=("127.0.0.1",)),
        advertised_address="127.0.0.1",
    )
    return CallRegistry(ctx), signalling, metrics


def _sample(metrics: Metrics, result: str) -> float:
    value = metrics.registry.get_sample_value(
        "orga_gateway_calls_ended_total", {"result": result, "route": UNROUTED, "trunk": "loopback"}
    )
    return value or 0.0


async def test_no_route_is_404_and_counted() -> None:
    registry, sig, metrics = _registry({"routes": [{"match": "+4930*"}]})
    registry.on_invite(_invite(1, "800"), "loopback")
    assert sig.sent == [("reject", CallHandle(1), 404, None, [])]
    assert _sample(metrics, "no_route") == 1
    assert not registry.calls


async def test_draining_is_503_with_retry_after() -> None:
    registry, sig, metrics = _registry({})
    registry.draining.begin()
    registry.on_invite(_invite(2), "loopback")
    kind, _, status, reason, headers = sig.sent[0]
    assert (kind, status, reason) == ("reject", 503, "Draining")
    assert ("Retry-After", "60") in headers
    assert _sample(metrics, "draining") == 1


async def test_overloaded_worker_is_503_and_says_so_to_the_balancer() -> None:
    registry, sig, metrics = _registry({})
    load = [True]
    registry._overloaded = lambda: load[0]
    assert registry.availability() == "overloaded"
    registry.on_invite(_invite(5), "loopback")
    kind, _, status, reason, headers = sig.sent[0]
    assert (kind, status, reason) == ("reject", 503, "Overloaded")
    assert ("Retry-After", "5") in headers
    assert _sample(metrics, "overloaded") == 1 and not registry.calls
    load[0] = False
    assert registry.availability() is None
    registry.draining.begin()
    assert registry.availability() == "draining"  # draining says so first


async def test_capacity_and_trunk_capacity() -> None:
    registry, sig, metrics = _registry({
        "limits": {"max_calls": 1},
        "trunks": [{"name": "loopback", "allow": ["127.0.0.0/8"], "max_calls": 1}],
        "rtp": {"port_min": 40000, "port_max": 40010},
    })
    registry.calls[CallHandle(99)] = object()  # type: ignore[assignment]  # one call running
    registry.on_invite(_invite(3), "loopback")
    assert sig.sent[-1][2] == 503 and ("Retry-After", "30") in sig.sent[-1][4]
    assert _sample(metrics, "capacity") == 1
    registry.calls.clear()
    registry._per_trunk["loopback"] = 1
    registry.on_invite(_invite(4), "loopback")
    assert sig.sent[-1][2:4] == (503, "Trunk At Capacity")
    assert _sample(metrics, "trunk_capacity") == 1


@pytest.mark.parametrize(
    ("error", "outcome", "status"),
    [
        (NoCommonCodec(), Outcome.NO_CODEC, 488),
        (UnusableOffer("no audio", 304), Outcome.BAD_OFFER, 488),
        (PortsExhausted("none"), Outcome.NO_PORT, 503),
        (OrgaAuthError("calls", 401, "Invalid ephemeral token"), Outcome.ORGA_AUTH, 503),
        (OrgaValidationError("calls", 422, [ValidationIssue(("body", "params"), "Field required")]),
         Outcome.ORGA_INVALID, 500),
        (OrgaRequestError("calls", 400, "Invalid SDP offer"), Outcome.ORGA_INVALID, 500),
        (OrgaUnavailableError("calls", 502, "bad gateway"), Outcome.ORGA_UNAVAILABLE, 503),
        (OrgaProtocolError("calls", 200, "no conversation_id"), Outcome.ORGA_UNAVAILABLE, 503),
        (OrgaTimeoutError("setup", None, "budget"), Outcome.SETUP_TIMEOUT, 504),
        (TimeoutError(), Outcome.SETUP_TIMEOUT, 504),
        (RuntimeError("bug"), Outcome.INTERNAL, 500),
    ],
)
def test_failure_table(error: BaseException, outcome: Outcome, status: int) -> None:
    assert classify(error) is outcome
    assert outcome.disposition.status == status


async def test_a_refused_call_still_gets_its_record() -> None:
    registry, _, _ = _registry({"routes": [{"match": "+4930*"}]})
    events: list[tuple[str, dict[str, Any]]] = []

    class Sink:
        def emit(self, event: str, body: dict[str, Any]) -> None:
            events.append((event, body))

    registry.ctx = replace(registry.ctx, records=Sink())
    registry.on_invite(_invite(5, "800"), "loopback")
    assert [e for e, _ in events] == ["call.started", "call.ended"]
    record = events[-1][1]
    assert (record["result"], record["sip_status"], record["callee"]) == ("no_route", 404, "800")
    assert record["route"] == UNROUTED and record["sip_call_id"]
    assert record["timestamps"]["answer"] is None and record["duration_s"] is None

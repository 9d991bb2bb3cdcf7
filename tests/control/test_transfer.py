"""The transfer's states (RFC 3515 transferor side) as a table: REFER answers, sipfrag NOTIFYs
and the NOTIFY timeouts."""

from __future__ import annotations

import pytest

from gateway.control.actions import Actor
from gateway.control.transfer import Transfer, TransferResult, TransferState, parse_sipfrag


@pytest.mark.parametrize(("body", "status"), [
    (b"SIP/2.0 200 OK\r\n", 200),
    (b"SIP/2.0 100 Trying", 100),
    (b"  SIP/2.0 486 Busy Here\r\nContent-Length: 0\r\n", 486),
    (b"SIP/2.0 603", 603),
    (b"INVITE sip:x SIP/2.0\r\n", None),
    (b"", None),
    (b"SIP/2.0 20 OK", None),
])
def test_parse_sipfrag(body: bytes, status: int | None) -> None:
    assert parse_sipfrag(body) == status


def new() -> Transfer:
    return Transfer("operator", "sip:op@pbx", Actor.API, started_at=0.0)


@pytest.mark.parametrize(("steps", "state", "result", "sip_status"), [
    ([("refer", 202), ("notify", b"SIP/2.0 100 Trying"), ("notify", b"SIP/2.0 200 OK")],
     TransferState.SUCCEEDED, TransferResult.TRANSFERRED, 200),
    ([("refer", 202), ("notify", b"SIP/2.0 180 Ringing")], TransferState.TRYING, None, None),
    ([("refer", 202), ("notify", b"SIP/2.0 486 Busy Here")],
     TransferState.FAILED, TransferResult.FAILED, 486),
    ([("refer", 403)], TransferState.FAILED, TransferResult.REJECTED, 403),
    ([("refer", 408)], TransferState.FAILED, TransferResult.TIMEOUT, 408),
    # A NOTIFY may overtake the 202; a late 202 then changes nothing.
    ([("notify", b"SIP/2.0 200 OK"), ("refer", 202)],
     TransferState.SUCCEEDED, TransferResult.TRANSFERRED, 200),
    # After the end nothing moves it again.
    ([("refer", 202), ("notify", b"SIP/2.0 486 Busy"), ("notify", b"SIP/2.0 200 OK")],
     TransferState.FAILED, TransferResult.FAILED, 486),
])
def test_transitions(steps: list[tuple[str, object]], state: TransferState,
                     result: TransferResult | None, sip_status: int | None) -> None:
    t = new()
    for kind, value in steps:
        if kind == "refer":
            t.on_refer_response(value, 1.0)  # type: ignore[arg-type]
        else:
            t.on_notify(value, 1.0)  # type: ignore[arg-type]
    assert (t.state, t.result, t.sip_status) == (state, result, sip_status)
    assert t.describe()["state"] == state.value and t.describe()["target"] == "operator"


def test_timeouts() -> None:
    t = new()
    assert not t.expired(1000.0)  # no 202 yet: the REFER's own transaction times out
    t.on_refer_response(202, 1.0)
    assert not t.expired(1.0 + t.first_notify_s - 0.1)
    assert t.expired(1.0 + t.first_notify_s)
    assert (t.state, t.result, t.sip_status) == (TransferState.FAILED, TransferResult.TIMEOUT,
                                                 None)
    t = new()
    t.on_refer_response(202, 1.0)
    t.on_notify(b"SIP/2.0 100 Trying", 2.0)
    assert not t.expired(1.0 + t.first_notify_s)  # one NOTIFY came: the final one may take longer
    assert t.expired(1.0 + t.final_notify_s)
    assert "still with you" in t.outcome_text()

"""Issue 6 items 2, 3 and 18: every way a call ends, with SIPp as the caller.

Caller BYE; caller CANCEL while a slow Orga setup runs; Orga ending the session (we send BYE);
Orga `/calls` failing with 500, 401 and 422 (503 / 503 / 500 per `gateway/outcomes.py`); RTP
stopping (BYE after the inactivity timeout); the maximum call duration (BYE). Each test checks
the SIP exchange SIPp saw, the `calls_ended_total{result}` sample, and — `Stack.assert_clean` —
that nothing is left: the registry is empty, the port pool is full again after its quarantine,
no task of the call (ours, aiortc's, aioice's) is pending, and the emulator has no session open.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import pytest

from gateway.orga.settings import PeerSettings
from tests.integration.pcap import speech_pcap
from tests.integration.sipp import SIPP, SippRun, run_sipp
from tests.integration.stack import API_KEY, Stack, value_of, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SIPP is None, reason="sipp is not installed (apt-get install sip-tester)"),
]

PCMU = ("-set", "pt", "0", "-set", "codec", "PCMU")
_BLOCK = re.compile(r"^-{10,} [\d\-: .]+\n\w+ message (sent|received)[^\n]*\n\n", re.M)


def exchange(run: SippRun) -> list[str]:
    """SIPp's view of the dialog as `>INVITE`, `<100`, ... (`>` sent by SIPp, `<` received)."""
    out = []
    for m in run.messages:
        word = m.first_line.split(" ")[1 if m.first_line.startswith("SIP/2.0") else 0]
        out.append((">" if m.direction == "sent" else "<") + word)
    return out


def received_text(workdir: Path, first_line_prefix: str) -> str:
    """The full text of the first message SIPp received that starts with the prefix."""
    text = (workdir / "messages.log").read_text(errors="replace")
    parts = _BLOCK.split(text)
    for direction, body in zip(parts[1::2], parts[2::2], strict=True):
        if direction == "received" and body.startswith(first_line_prefix):
            return body
    raise AssertionError(f"SIPp received no {first_line_prefix!r}")


def ended(samples: list, result: str) -> float:  # type: ignore[type-arg]
    return value_of(samples, "orga_gateway_calls_ended_total", result=result)


async def test_caller_bye(stack: Stack, tmp_path: Path) -> None:
    speech_pcap(tmp_path / "audio.pcap")
    run = await run_sipp("uac_pcap_call.xml", stack.sip_port, tmp_path, extra=(*PCMU, "-d", "1000"))
    assert run.returncode == 0, run.stderr
    assert exchange(run) == [">INVITE", "<100", "<180", "<200", ">ACK", ">BYE", "<200"]
    await stack.assert_clean()
    samples = await stack.metrics()
    assert ended(samples, "caller_bye") == 1
    assert value_of(samples, "orga_gateway_calls_ended_total") == 1
    assert stack.emulator_sessions()[0]["end_reason"] == "datachannel_closed"
    # Every SIP message of the dialog is counted (issue 13 item 9), in and out.
    requests = "orga_gateway_sip_requests_total"
    responses = "orga_gateway_sip_responses_total"
    for method in ("INVITE", "ACK", "BYE"):
        assert value_of(samples, requests, method=method, direction="in") == 1, method
    assert value_of(samples, responses, method="INVITE", status_class="1xx", direction="out") == 2
    assert value_of(samples, responses, method="INVITE", status_class="2xx", direction="out") >= 1
    assert value_of(samples, responses, method="BYE", status_class="2xx", direction="out") == 1


@pytest.mark.parametrize(
    ("delay_s", "cancel_after_ms", "in_flight", "answer_due_s"),
    [
        (2.0, 300, "client_secrets", 2.0),
        # POST /calls in flight: Orga creates the session anyway, and has no end-call API; we
        # must join it and close it, or it stays open (billed) until Orga's own timeout.
        (2.0, 5000, "calls", 6.0),  # client-secrets 0-2 s, ice-config 2-4 s, /calls 4-6 s
    ],
)
async def test_cancel_during_slow_orga_setup_aborts_it(
    stack: Stack, tmp_path: Path, delay_s: float, cancel_after_ms: int, in_flight: str,
    answer_due_s: float,
) -> None:
    # Every Orga response comes `delay_s` late; the caller cancels while `in_flight` runs.
    stack.set_faults(delay_s=delay_s)
    run = await run_sipp("uac_cancel_after.xml", stack.sip_port, tmp_path,
                         extra=("-d", str(cancel_after_ms)))
    assert run.returncode == 0, run.stderr
    assert exchange(run) == [">INVITE", "<100", "<180", ">CANCEL", "<200", "<487", ">ACK"]
    # The setup is aborted at once, not after Orga's answer: the 487 comes before the answer
    # to the request in flight was due (the emulator answers it `delay_s` after it arrived,
    # which load only makes later), at least 1 s after the CANCEL.
    (cancel,), (final,) = run.sent("CANCEL"), run.received("SIP/2.0 487")
    assert final - cancel < answer_due_s - cancel_after_ms / 1000
    await stack.assert_clean()
    samples = await stack.metrics()
    assert ended(samples, "cancelled") == 1
    assert value_of(samples, "orga_gateway_calls_ended_total") == 1
    state = stack.emulator.state()
    assert state["client_secrets_requests"] == 1
    assert state["calls_requests"] == (1 if in_flight == "calls" else 0)
    if in_flight == "calls":  # the session Orga created was ended by our hang-up
        (session,) = stack.emulator_sessions()
        assert session["end_reason"] in ("datachannel_closed", "peer_closed")
        assert session["utterances"] == [] and not session["replies_played"]


@pytest.mark.parametrize("stack", [{"rtp": {"inactivity_timeout_s": 30.0}}], indirect=True)
async def test_orga_ending_the_session_hangs_up_the_caller(stack: Stack, tmp_path: Path) -> None:
    stack.set_faults(end_after_s=1.0)
    speech_pcap(tmp_path / "audio.pcap", talk_s=1.0, quiet_s=3.0)
    run = await run_sipp("uac_pcap_wait_bye.xml", stack.sip_port, tmp_path, extra=PCMU)
    assert run.returncode == 0, run.stderr
    assert exchange(run) == [">INVITE", "<100", "<180", "<200", ">ACK", "<BYE", ">200"]
    (answered,), (bye,) = run.received("SIP/2.0 200"), run.received("BYE")
    # The session's end is seen by the peer (data channel closed, or at worst its ICE
    # disconnected grace), not by the 30 s RTP inactivity timer nor the max call duration.
    assert bye - answered < 1.0 + PeerSettings().disconnected_grace_s
    await stack.assert_clean()
    samples = await stack.metrics()
    assert ended(samples, "orga_ended") == 1
    assert stack.emulator_sessions()[0]["end_reason"] == "time_limit"


@pytest.mark.parametrize("stack", [{"rtp": {"inactivity_timeout_s": 30.0}}], indirect=True)
async def test_orga_leg_dying_mid_call_hangs_up_within_3_s(stack: Stack, tmp_path: Path) -> None:
    # Issue 13 item 11: Orga's media stops, its ICE/DTLS stay up (a stuck or crashed media
    # server). Before, only ICE consent expiry (~30 s) ended the call: dead air meanwhile.
    stack.set_faults(media_stop_after_s=1.0)
    speech_pcap(tmp_path / "audio.pcap", talk_s=1.0, quiet_s=5.0)
    run = await run_sipp("uac_pcap_wait_bye.xml", stack.sip_port, tmp_path, extra=PCMU)
    assert run.returncode == 0, run.stderr
    assert exchange(run) == [">INVITE", "<100", "<180", "<200", ">ACK", "<BYE", ">200"]
    (answered,), (bye,) = run.received("SIP/2.0 200"), run.received("BYE")
    # Media stops ~1 s after /calls (before the 200), so BYE < 1 + 3 s after the answer; the
    # bound is loose for a shared machine, the figure comes from bench/orga_lost.py.
    assert 2.0 < bye - answered < 6.0
    await stack.assert_clean()
    samples = await stack.metrics()
    assert ended(samples, "orga_lost") == 1


@pytest.mark.parametrize(
    ("fail_status", "fail_calls", "status", "result", "retry_after", "calls_requests"),
    [
        # 5xx is retried with a fresh token (3 attempts), then 503 with Retry-After.
        (500, 3, 503, "orga_unavailable", "10", 3),
        # The token was rejected: retrying cannot help; 503, and an ERROR log.
        (401, 1, 503, "orga_auth", "60", 1),
        # Orga refused our session parameters: our fault, 500.
        (422, 1, 500, "orga_invalid", None, 1),
        # A 400 is permanent too: 500 without Retry-After (it was 503 Retry-After 10).
        (400, 1, 500, "orga_invalid", None, 1),
    ],
)
async def test_orga_calls_failure_maps_to_sip_status(
    stack: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture, fail_status: int,
    fail_calls: int, status: int, result: str, retry_after: str | None, calls_requests: int,
) -> None:
    caplog.set_level(logging.INFO)
    stack.set_faults(fail_calls=fail_calls, fail_status=fail_status)
    run = await run_sipp("uac_rejected.xml", stack.sip_port, tmp_path)
    assert run.returncode == 0, run.stderr
    assert exchange(run) == [">INVITE", "<100", "<180", f"<{status}", ">ACK"]
    response = received_text(tmp_path, f"SIP/2.0 {status}")
    header = re.search(r"^Retry-After: *(\S+)", response, re.M)
    assert (header.group(1) if header else None) == retry_after
    await stack.assert_clean()
    samples = await stack.metrics()
    assert ended(samples, result) == 1
    assert value_of(samples, "orga_gateway_calls_ended_total") == 1
    assert value_of(samples, "orga_gateway_orga_request_errors_total", endpoint="calls",
                    status=str(fail_status) if fail_status != 500 else "5xx") == calls_requests
    state = stack.emulator.state()
    assert state["calls_requests"] == calls_requests and state["sessions_active"] == 0
    rejected = [r for r in caplog.records if r.name == "gateway.call"
                and r.getMessage().startswith(f"call rejected with {status} ({result})")]
    assert len(rejected) == 1
    assert str(fail_status) in rejected[0].getMessage()
    if fail_status == 401:
        assert rejected[0].levelno == logging.ERROR
    assert API_KEY not in caplog.text


@pytest.mark.parametrize("stack", [{"rtp": {"inactivity_timeout_s": 1.0}}], indirect=True)
async def test_rtp_stopping_hangs_up_after_the_inactivity_timeout(
    stack: Stack, tmp_path: Path
) -> None:
    speech_pcap(tmp_path / "audio.pcap", talk_s=0.5, quiet_s=0.5)  # 1 s of RTP, then none
    run = await run_sipp("uac_pcap_wait_bye.xml", stack.sip_port, tmp_path, extra=PCMU)
    assert run.returncode == 0, run.stderr
    assert exchange(run) == [">INVITE", "<100", "<180", "<200", ">ACK", "<BYE", ">200"]
    (ack,), (bye,) = run.sent("ACK"), run.received("BYE")
    # Last packet at ~1 s; the timeout is 1 s, checked once a second.
    assert 1.9 < bye - ack < 4.0
    await stack.assert_clean()
    samples = await stack.metrics()
    assert ended(samples, "rtp_timeout") == 1
    assert value_of(samples, "orga_gateway_rtp_packets_total", direction="in") == 50


@pytest.mark.parametrize("stack", [{"limits": {"max_call_duration_s": 1.5}}], indirect=True)
async def test_max_call_duration_hangs_up(stack: Stack, tmp_path: Path) -> None:
    speech_pcap(tmp_path / "audio.pcap", talk_s=1.0, quiet_s=4.0)
    run = await run_sipp("uac_pcap_wait_bye.xml", stack.sip_port, tmp_path, extra=PCMU)
    assert run.returncode == 0, run.stderr
    assert exchange(run) == [">INVITE", "<100", "<180", "<200", ">ACK", "<BYE", ">200"]
    await stack.assert_clean()
    samples = await stack.metrics()
    assert ended(samples, "max_duration") == 1
    # Not before the limit, on the gateway's own clock: a timer never fires early, while what
    # SIPp saw between the 200 and the BYE also measures how busy the machine is.
    assert value_of(samples, "orga_gateway_call_duration_seconds_sum") >= 1.5


async def test_shutdown_keeps_the_socket_until_our_bye_is_answered(
    stack: Stack, tmp_path: Path
) -> None:
    # Issue 10 item 2: stop() hangs up every call and then waits, bounded by 4·T1, until the
    # SIP endpoint is idle (our BYE answered) before it closes the sockets. It used to sleep
    # 50 ms: a far end answering the BYE 400 ms later found the socket closed.
    speech_pcap(tmp_path / "audio.pcap", talk_s=0.5, quiet_s=9.0)
    sipp = asyncio.create_task(
        run_sipp("uac_pcap_slow_bye_answer.xml", stack.sip_port, tmp_path, extra=PCMU)
    )
    gw = stack.gw
    assert gw.registry is not None and gw.driver is not None
    await wait_until(lambda: bool(gw.registry.calls), 10.0, "the call to be set up")  # type: ignore[union-attr]
    endpoint = gw.driver.endpoint
    await wait_until(lambda: endpoint.active_calls == 1 and endpoint.idle is False, 10.0,
                     "the call to be answered")
    await asyncio.sleep(0.5)  # past the ACK
    await gw.stop()
    assert endpoint.idle, endpoint.table_sizes()  # the 200 to our BYE came before the close
    run = await sipp
    assert run.returncode == 0, run.stderr
    assert exchange(run) == [">INVITE", "<100", "<180", "<200", ">ACK", "<BYE", ">200"]

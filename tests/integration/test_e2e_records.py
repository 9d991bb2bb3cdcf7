"""Call records end to end (issue 16): SIPp calls, the emulator, a real HTTP receiver.

- The receiver gets signed `call.started`, `call.answered`, `transcript` and `call.ended` for a
  SIPp call, with the transcript the emulator produced (its "I spoke for ... 440 hertz" text).
- A receiver that is down: the records wait in the spool, survive a gateway restart (in this
  process, and `orga-sip-gateway run` stopped with SIGTERM), and arrive in order, none lost,
  once it is up.
- A recorded call (WAV; Ogg/Opus with an announcement): the file the record names has the
  caller's 440 Hz on the left and the agent's reply on the right (after the announcement, when
  there is one), their gap matching the turn latency the gateway measured; no native thread
  of a recording outlives its call.
- A transfer that fails is in the record with its target, requester, outcome and SIP status.
"""

from __future__ import annotations

import gc
import os
import re
import socket
import threading
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from gateway.analysis import dominant_frequency
from gateway.config import RecordingConfig, Route, Secret, WebhooksConfig
from gateway.emulator.audio import REPLY_DOMINANT_HZ
from tests.integration.baresip import write_wav
from tests.integration.pcap import PAYLOAD_TYPES, speech_pcap
from tests.integration.sipp import SIPP, run_sipp
from tests.integration.stack import Stack, wait_until
from tests.media.audio import tone
from tests.records.receiver import Receiver

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(SIPP is None, reason="sipp is not installed")]

SECRET = "whsec-e2e-0123456789"
ALL_EVENTS = ("call.started", "call.answered", "transcript", "call.ended")


def _webhooks(url: str, spool: Path, events: tuple[str, ...] = ALL_EVENTS) -> dict[str, Any]:
    """Stack keywords: `[webhooks]` and the secret."""
    return {"webhooks": WebhooksConfig(urls=(url,), events=events, spool_dir=str(spool),
                                       spool_max_mb=10),
            "webhook_secret": Secret(SECRET)}


async def _sipp_call(sip_port: int, workdir: Path, codec: str = "PCMU") -> Any:
    workdir.mkdir(parents=True, exist_ok=True)
    speech_pcap(workdir / "audio.pcap", codec, freq_hz=440.0, talk_s=1.0, quiet_s=2.0)
    run = await run_sipp("uac_pcap_call.xml", sip_port, workdir, extra=(
        "-set", "pt", str(PAYLOAD_TYPES[codec]), "-set", "codec", codec, "-d", "4500"))
    assert run.returncode == 0, run.stderr
    assert (run.successful, run.failed) == (1, 0)
    return run


async def test_receiver_gets_signed_events_with_the_emulators_transcript(tmp_path: Path
                                                                         ) -> None:
    with Receiver(SECRET.encode()) as rx:
        stack = await Stack(**_webhooks(rx.url, tmp_path / "spool")).start()
        try:
            run = await _sipp_call(stack.sip_port, tmp_path / "sipp")
            await wait_until(lambda: any(e["event"] == "call.ended" for e in rx.events), 10,
                             "call.ended at the receiver")
            await stack.assert_clean()
        finally:
            await stack.stop()
    assert rx.bad_signatures == 0
    events = [e["event"] for e in rx.events]
    assert events[:2] == ["call.started", "call.answered"] and events[-1] == "call.ended"
    assert events.count("transcript") == 2  # the caller's utterance, the assistant's reply
    record = rx.events[-1]["call"]
    (session,) = stack.emulator_sessions()
    assert re.fullmatch(r"1-\d+@127\.0\.0\.1", record["sip_call_id"])  # SIPp's [call_id]
    assert run.messages[0].first_line.startswith("INVITE")
    assert record["conversation_id"] == session["conversation_id"]
    assert record["caller"] == "+4930111" and record["callee"] == "+4930123"
    assert record["result"] == "caller_bye" and record["sip_status"] == 200
    assert record["route"] == "*" and record["trunk"] == "loopback"
    assert all(record["timestamps"][k] for k in ("invite", "ringing", "answer", "end"))
    assert set(record["setup_steps_s"]) >= {"media", "client_secrets", "calls", "connected"}
    caller, assistant = record["transcript"]
    assert caller["role"] == "caller" and "440 hertz" in caller["text"]
    assert assistant["role"] == "assistant" and assistant["text"].startswith("Thanks for calling")
    assert "<emotion" not in assistant["text"]  # the clean text
    assert 0.9 < caller["at_s"] < assistant["at_s"] < record["duration_s"]
    assert record["media"]["in"]["packets"] == 150  # the pcap: 3 s of 20 ms packets
    assert record["media"]["out"]["packets"] > 100
    assert len(record["turn_latencies_s"]) == 1
    assert len({e["id"] for e in rx.events}) == len(rx.events)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_receiver_down_records_survive_a_restart_and_arrive_in_order(tmp_path: Path
                                                                          ) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/hook"
    webhooks = _webhooks(url, tmp_path / "spool", events=("call.answered", "call.ended"))
    stack = await Stack(**webhooks).start()
    try:
        for name in ("a", "b"):
            await _sipp_call(stack.sip_port, tmp_path / name)
    finally:
        await stack.stop()  # receiver still down: the four events stay in the spool
    assert len(list((tmp_path / "spool").rglob("*.json"))) == 4

    with Receiver(SECRET.encode(), port=port) as rx:
        restarted = await Stack(**webhooks).start()
        try:
            await _sipp_call(restarted.sip_port, tmp_path / "c")
            await wait_until(lambda: len(rx.events) >= 6, 15, "all six events")
        finally:
            await restarted.stop()
    got = [(e["event"], e["call"]["sip_call_id"]) for e in rx.events]
    ids = list(dict.fromkeys(cid for _, cid in got))  # three calls (three SIPp processes)
    assert len(ids) == 3
    assert got == [(event, cid) for cid in ids for event in ("call.answered", "call.ended")]
    invites = [e["call"]["timestamps"]["invite"] for e in rx.events[1::2]]
    assert invites == sorted(invites)  # in the order the calls happened
    assert len({e["id"] for e in rx.events}) == 6 and rx.bad_signatures == 0
    assert not list((tmp_path / "spool").rglob("*.json"))


def _stereo(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Left and right channel of a recording (WAV: packed int16; Ogg/Opus: planar float)."""
    container = av.open(str(path))
    rate = container.streams.audio[0].rate
    frames = [f.to_ndarray() for f in container.decode(audio=0)]
    container.close()
    if frames[0].shape[0] == 2:
        left, right = np.concatenate(frames, axis=1).astype(np.float64)
    else:
        left, right = np.concatenate(frames, axis=1).reshape(-1, 2).T.astype(np.float64)
    return left, right, rate


@pytest.mark.parametrize("fmt, announce", [("wav", False), ("ogg", True)])
async def test_recording_left_caller_right_agent_aligned(tmp_path: Path, fmt: str,
                                                         announce: bool) -> None:
    # 16 kHz, so the announcement goes through the resampler
    announcement = write_wav(tmp_path / "recorded.wav", tone(300.0, 0.5, 16000), 16000) \
        if announce else None
    with Receiver(SECRET.encode()) as rx:
        stack = await Stack(
            **_webhooks(rx.url, tmp_path / "spool", events=("call.ended",)),
            recording=RecordingConfig(directory=str(tmp_path / "rec"), format=fmt,
                                      announcement=str(announcement) if announcement else None),
            routes=(Route(match="*", record=True),)).start()
        try:
            await _sipp_call(stack.sip_port, tmp_path / "sipp")
            await wait_until(lambda: len(rx.events) == 1, 10, "call.ended at the receiver")
            await stack.assert_clean()
        finally:
            await stack.stop()
    record = rx.events[0]["call"]
    path = Path(record["recording"])
    assert path.parent == tmp_path / "rec" and path.suffix == f".{fmt}"
    assert path.stat().st_mode & 0o777 == 0o600
    left, right, rate = _stereo(path)
    # Digital silence decodes to (almost) 0: anything above 1 % of the peak is signal (the
    # reply fades in, so a higher threshold would find its onset late).
    loud_l = np.abs(left) > 0.01 * np.abs(left).max()
    loud_r = np.abs(right) > 0.01 * np.abs(right).max()
    caller_start = int(np.argmax(loud_l))
    caller_end = len(loud_l) - int(np.argmax(loud_l[::-1]))
    agent_start = caller_end + int(np.argmax(loud_r[caller_end:]))
    assert (caller_end - caller_start) / rate == pytest.approx(1.0, abs=0.05)
    assert abs(dominant_frequency(left[caller_start:caller_end], rate) - 440) < 5
    reply = right[agent_start: agent_start + rate // 5]
    assert abs(dominant_frequency(reply, rate) - REPLY_DOMINANT_HZ) < 10
    if announce:  # the caller heard it first, from the answer on
        heard = int(np.argmax(loud_r))
        assert heard / rate < 0.1
        assert abs(dominant_frequency(right[heard: heard + rate * 2 // 5], rate) - 300) < 5
        assert not loud_r[heard + int(0.55 * rate): caller_end].any()
    else:
        assert not loud_r[:caller_end].any()  # the agent spoke only after the caller
    # Aligned: the gap in the file is the turn latency the gateway measured on the wire.
    (turn,) = record["turn_latencies_s"]
    assert abs((agent_start - caller_end) / rate - turn) < 0.040
    assert left.size / rate == pytest.approx(record["duration_s"], abs=0.3)


async def test_recorded_calls_leave_no_threads_behind(tmp_path: Path) -> None:
    """The encoder's native threads end with each call, not at the next garbage collection
    (the call's RTP session holds its recording: a reference cycle)."""

    def threads() -> int:
        """Native threads (FFmpeg's): all of the process's minus Python's own, which come
        and go with thread pools (asyncio's default executor grows on demand)."""
        return len(os.listdir("/proc/self/task")) - threading.active_count()

    stack = await Stack(recording=RecordingConfig(directory=str(tmp_path / "rec")),
                        routes=(Route(match="*", record=True),)).start()
    gc.disable()  # what a cycle holds stays until collected: make that visible
    try:
        await _sipp_call(stack.sip_port, tmp_path / "0")
        await stack.assert_clean()
        after_first = threads()
        for n in range(1, 4):
            await _sipp_call(stack.sip_port, tmp_path / str(n))
            await stack.assert_clean()
        assert threads() <= after_first
    finally:
        gc.enable()
        await stack.stop()
    assert len(list((tmp_path / "rec").glob("*.ogg"))) == 4


async def test_a_failed_transfer_is_in_the_record(tmp_path: Path) -> None:
    """i14's blind transfer (operator API, SIPp as the transferee reporting 486) lands in the
    record: who asked, the target's name, the outcome and the transferee's status."""
    from dataclasses import replace

    from tests.control.test_transfer_sipp import answered_call, caller, gateway

    records: list[dict[str, Any]] = []

    class Sink:
        def emit(self, event: str, body: dict[str, Any]) -> None:
            if event == "call.ended":
                records.append(body)

    async with gateway() as (rig, api):
        registry = rig.gateway.registry
        assert registry is not None
        registry.ctx = replace(registry.ctx, records=Sink())
        sipp = caller(rig, "uac_transferee_fails.xml", tmp_path, frag="486 Busy Here")
        call = await answered_call(api, sipp)
        assert (await api.post(f"/v1/calls/{call['id']}/transfer",
                               json={"target": "sales"})).status_code == 202
        run = await sipp
        assert run.returncode == 0 and run.successful == 1, run.stderr
        await rig.idle()
    (record,) = records
    (attempt,) = record["transfers"]
    assert {k: attempt[k] for k in ("target", "requested_by", "outcome", "sip_status")} == {
        "target": "sales", "requested_by": "api", "outcome": "failed", "sip_status": 486}
    assert 0 < attempt["started_s"] <= attempt["ended_s"] < record["duration_s"]
    assert record["result"] == "caller_bye"


async def test_sigterm_keeps_undelivered_records_for_the_next_start(tmp_path: Path) -> None:
    """`orga-sip-gateway run` as a process, receiver down: a SIPp call, then SIGTERM (drain,
    exit 0) leaves its events in the spool; the next start, receiver up, delivers them."""
    import signal

    from tests.integration.stack import API_KEY, free_sip_port, free_udp_range
    from tests.integration.test_e2e_cli import CONFIG, Process

    port = _free_port()
    emulator = await Process.start("emulator", "--listen", "127.0.0.1:0", "--api-key", API_KEY,
                                   watch="stdout")
    try:
        orga_url = (await emulator.wait_for_line(r"listening on (http://\S+)")).group(1)
        sip_port = free_sip_port()
        rtp_min, rtp_max = free_udp_range(10)
        config = tmp_path / "gateway.toml"
        config.write_text(CONFIG.format(sip_port=sip_port, rtp_min=rtp_min, rtp_max=rtp_max,
                                        orga_url=orga_url) + f"""
[webhooks]
url = "http://127.0.0.1:{port}/hook"
secret_env = "E2E_WEBHOOK_SECRET"
events = ["call.answered", "call.ended"]
spool_dir = "{tmp_path / 'spool'}"
""")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ORGA_", "NOTIFY_"))}
        env.update(ORGA_API_KEY=API_KEY, E2E_WEBHOOK_SECRET=SECRET)

        first = await Process.start("run", "--config", str(config), env=env)
        try:
            await first.wait_for_line(r"gateway ready")
            await _sipp_call(sip_port, tmp_path / "a")
        finally:
            assert await first.stop(signal.SIGTERM) == 0, "\n".join(first.lines[-20:])
        assert len(list((tmp_path / "spool").rglob("*.json"))) == 2
        assert first.find("webhook spool: 2 events kept for the next start")

        with Receiver(SECRET.encode(), port=port) as rx:
            second = await Process.start("run", "--config", str(config), env=env)
            try:
                await second.wait_for_line(r"gateway ready")
                await wait_until(lambda: len(rx.events) == 2, 15, "the spooled events")
            finally:
                assert await second.stop(signal.SIGTERM) == 0
        assert [e["event"] for e in rx.events] == ["call.answered", "call.ended"]
        assert rx.events[1]["call"]["result"] == "caller_bye" and rx.bad_signatures == 0
        assert second.find("webhook spool: 2 events from a previous run to deliver")
        assert not list((tmp_path / "spool").rglob("*.json"))
    finally:
        assert await emulator.stop(signal.SIGTERM) == 0


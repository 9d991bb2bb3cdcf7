"""Issue 11 item 3: the phone leg's packet time comes from the SDP, both ways (RFC 3264 §5).

SIPp offers `a=ptime:10` or `a=ptime:30` and plays a 440 Hz utterance in packets of that size;
the emulator must hear it. The gateway must answer with the same ptime and send the agent's
reply in packets of that size: every payload the call's RTP session sends is captured (the
send seam, `RtpSession.send_audio`), decoded with the test's own G.711 decoder, and must hold
the reply's dominant 660 Hz, with RTP timestamps advancing one packet time per packet.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.emulator.audio import REPLY_DOMINANT_HZ, dominant_frequency, level_dbfs
from gateway.media.rtp_session import RtpSession
from tests.integration.pcap import speech_pcap, ulaw_decode
from tests.integration.sipp import SCENARIOS, SIPP, run_sipp
from tests.integration.stack import Stack, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SIPP is None, reason="sipp is not installed (apt-get install sip-tester)"),
]


@pytest.mark.parametrize("ptime", [10, 30])
async def test_offered_packet_time_is_heard_and_sent(
    stack: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch, ptime: int,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    sent: list[tuple[bytes, int]] = []
    original = RtpSession.send_audio

    def tap(self: RtpSession, payload: bytes, samples: int, marker: bool = False) -> Any:
        sent.append((payload, samples))
        return original(self, payload, samples, marker)

    monkeypatch.setattr(RtpSession, "send_audio", tap)
    speech_pcap(tmp_path / "audio.pcap", "PCMU", freq_hz=440.0, talk_s=1.0, quiet_s=2.0,
                ptime_ms=ptime)
    scenario = tmp_path / "uac_ptime.xml"
    text = (SCENARIOS / "uac_pcap_call.xml").read_text()
    assert "a=ptime:20" in text
    scenario.write_text(text.replace("a=ptime:20", f"a=ptime:{ptime}"))
    sipp = asyncio.create_task(run_sipp(
        str(scenario), stack.sip_port, tmp_path,
        extra=("-set", "pt", "0", "-set", "codec", "PCMU", "-d", "4500"),
    ))
    await wait_until(lambda: "assistant said:" in caplog.text or sipp.done(), 8,
                     "the assistant's reply")
    run = await sipp
    assert run.returncode == 0, run.stderr

    # The answer names the packet time we send.
    log = (tmp_path / "messages.log").read_text(errors="replace")
    answer = log[log.index("SIP/2.0 200 OK"):]
    assert f"a=ptime:{ptime}" in answer.split("CSeq: 2", 1)[0]

    # Caller → AI: the emulator heard the 440 Hz utterance, about 1 s long.
    (session,) = stack.emulator_sessions()
    (utterance,) = session["utterances"]
    assert utterance["dominant_hz"] == pytest.approx(440, abs=10)
    assert 0.8 <= utterance["speech_s"] <= 1.3

    # AI → caller: every packet is one packet time long; the reply is in them.
    samples = 8 * ptime
    assert len(sent) > 2000 // ptime  # > 2 s of packets
    assert {n for _, n in sent} == {samples}
    assert {len(p) for p, _ in sent} == {samples}
    heard = np.concatenate([ulaw_decode(p) for p, _ in sent]).astype(np.float32) / 32768.0
    frames = [heard[i:i + 160] for i in range(0, heard.size - 159, 160)]
    loud = [f for f in frames if level_dbfs(f) > -30]
    assert len(loud) * 0.02 >= 0.9
    assert dominant_frequency(np.concatenate(loud), 8000) == pytest.approx(REPLY_DOMINANT_HZ,
                                                                           abs=10)
    await stack.assert_clean()

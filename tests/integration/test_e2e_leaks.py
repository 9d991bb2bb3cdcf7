"""Issue 11 item 8: nothing of a call outlives it — threads and tasks back to their idle count.

PyAV's `AudioResampler` runs an FFmpeg filter graph with native threads (two per graph on this
machine); a call that keeps one alive until a full garbage collection leaves its threads (and
memory) behind. The check runs with the cyclic garbage collector off, so a call's media parts
must be released by reference counting alone, the moment the call ends — not whenever the
collector next runs. The emulator runs in its own process: the threads counted are the
gateway's (and this test's).
"""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.pcap import speech_pcap
from tests.integration.sipp import SIPP, run_sipp
from tests.integration.stack import Stack, value_of

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SIPP is None, reason="sipp is not installed (apt-get install sip-tester)"),
]

PCMU = ("-set", "pt", "0", "-set", "codec", "PCMU")


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.fixture
async def isolated() -> AsyncIterator[Stack]:
    running = await Stack(emulator_process=True).start()
    try:
        yield running
    finally:
        await running.stop()


async def test_calls_leave_no_threads_or_tasks(isolated: Stack, tmp_path: Path) -> None:
    speech_pcap(tmp_path / "audio.pcap")

    async def one_call(n: int) -> None:
        run = await run_sipp("uac_pcap_call.xml", isolated.sip_port, tmp_path,
                             extra=(*PCMU, "-d", "1500"))
        assert run.returncode == 0, run.stderr
        await isolated.assert_clean()
        samples = await isolated.metrics()
        assert value_of(samples, "orga_gateway_calls_ended_total", result="caller_bye") == n

    async def gauges() -> tuple[float, float]:
        samples = await isolated.metrics()
        return (value_of(samples, "orga_gateway_process_threads"),
                value_of(samples, "orga_gateway_event_loop_tasks"))

    gc.disable()
    try:
        # The first call may start process-wide pools that stay (asyncio's default executor);
        # from then on a call must leave the thread and task counts where it found them.
        await one_call(1)
        after_first, gauges_first = threads(), await gauges()
        for n in range(2, 6):
            await one_call(n)
        assert threads() == after_first, f"threads {after_first} -> {threads()} after 4 calls"
        assert await gauges() == gauges_first == (after_first, gauges_first[1])
    finally:
        gc.enable()

"""How fast a dead Orga leg is found: media stops, ICE/DTLS stay up (issue 13 item 11).

For each of N sessions against the in-process emulator: connect, let audio flow for 0.5 s,
freeze the emulator's audio track (no more RTP; nothing is closed, as when Orga's media server
is stuck or its process is gone without a goodbye), and time until `OrgaPeer.ended` reports
MEDIA_TIMEOUT. Prints min / p50 / max of that delay next to the configured timeout.

    .venv/bin/python bench/orga_lost.py [--sessions 10] [--media-timeout 2.0]

Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiortc.mediastreams import AudioStreamTrack

from gateway.emulator.server import Emulator, EmulatorConfig
from gateway.orga.api import OrgaApi
from gateway.orga.events import OrgaEndReason
from gateway.orga.peer import OrgaPeer
from gateway.orga.session import open_session
from gateway.orga.settings import OrgaClientSettings, PeerSettings, SessionParams

KEY = "sk_orga_ai_bench_key"


async def main(sessions: int, media_timeout_s: float) -> None:
    emulator = Emulator(EmulatorConfig(api_keys=(KEY,)))
    await emulator.start()
    api = OrgaApi(OrgaClientSettings(base_url=emulator.base_url, api_key=KEY))
    settings = PeerSettings(ice_addresses=("127.0.0.1",), media_timeout_s=media_timeout_s)
    loop = asyncio.get_running_loop()
    delays: list[float] = []
    for _ in range(sessions):
        session = await open_session(
            api, lambda s: OrgaPeer(AudioStreamTrack(), settings, SessionParams(), s),
            SessionParams())
        await asyncio.sleep(0.5)
        emulator.sessions[session.conversation_id]._track.freeze()
        frozen_at = loop.time()
        reason = await session.peer.ended
        assert reason is OrgaEndReason.MEDIA_TIMEOUT, reason
        delays.append(loop.time() - frozen_at)
        await session.peer.close()
    await api.aclose()
    await emulator.stop()
    delays.sort()
    print(f"load {os.getloadavg()[0]:.2f}; media_timeout_s {media_timeout_s}; "
          f"{sessions} sessions: media stop -> session lost "
          f"min {delays[0]:.2f} s, p50 {statistics.median(delays):.2f} s, "
          f"max {delays[-1]:.2f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--media-timeout", type=float, default=2.0)
    args = parser.parse_args()
    asyncio.run(main(args.sessions, args.media_timeout))

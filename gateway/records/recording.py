"""Call recordings: one stereo file per call (caller left, agent right), written off the loop.

The recording taps the phone leg's RTP (`media.rtp_session.RtpTap`): every G.711 packet
received from the phone (caller) and sent to it (agent), with its RTP timestamp and the loop
time it crossed our socket. On the event loop that is one list append per packet;
`CallRecording` hands batches (~0.5 s) to the app's one recording thread (`Recorder`), which
decodes G.711, places each packet on a common sample clock from the answer — by its RTP
timestamp while that agrees with its arrival/send time within `RESYNC_S`, so network jitter
does not chop speech, and by its arrival time after a jump (hold, SSRC change, clock drift) —
lets `StereoAligner` fill the gaps with silence, and encodes with PyAV: Opus in Ogg (small) or
16-bit PCM WAV. The media path's pacing does not change (bench/media_path.py --record).

Files are created 0600 as `<name>.part` and renamed when complete, so a sync job or the
retention sweep never sees half a recording. `Recorder.sweep()` deletes recordings older than
`retention_days`. PyAV is used here (and in `media/transcode.py`) because this is the only
place that writes container files.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
import numpy as np

from gateway.config import RecordingConfig
from gateway.media.transcode import PHONE_RATE, Pcm, g711
from gateway.records.announcement import announcement_pcm

log = logging.getLogger(__name__)

RATE = PHONE_RATE  # recordings keep the phone leg's rate: G.711 is all there is to keep
SNAP_S = 0.010  # a chunk this close to where its channel's audio ended continues it seamlessly
RESYNC_S = 0.040  # RTP time may stray this far from arrival time before it is re-anchored
MAX_LAG_S = 1.0  # a channel that stays silent this long is filled with silence
BATCH = 50  # chunks (both channels) per hand-off to the recording thread: ~0.5 s of audio
SUFFIXES = (".ogg", ".wav")
_CODECS = {"ogg": ("libopus", 32000), "wav": ("pcm_s16le", 0)}

CALLER, AGENT = 0, 1
_Packet = tuple[int, bytes, str, int, int]  # channel, payload, codec, RTP timestamp, position


class StereoAligner:
    """Places mono chunks of two channels at their sample positions; emits stereo blocks."""

    def __init__(self, rate: int = RATE, snap_s: float = SNAP_S, max_lag_s: float = MAX_LAG_S
                 ) -> None:
        self._snap = int(snap_s * rate)
        self._max_lag = int(max_lag_s * rate)
        self._buf = np.zeros((2, 0), dtype=np.int16)
        self._base = 0  # sample position of _buf[:, 0]; everything before it is emitted
        self._end: list[int | None] = [None, None]  # where each channel's audio ends

    def add(self, channel: int, position: int, pcm: Pcm) -> None:
        end = self._end[channel]
        if end is not None and abs(position - end) <= self._snap:
            position = end
        stop = position + pcm.size
        self._end[channel] = stop if end is None else max(end, stop)
        if stop <= self._base:
            return  # too late: that stretch is already written
        if position < self._base:
            pcm, position = pcm[self._base - position:], self._base
        need = stop - self._base
        if need > self._buf.shape[1]:
            grown = np.zeros((2, max(need, 2 * self._buf.shape[1])), dtype=np.int16)
            grown[:, : self._buf.shape[1]] = self._buf
            self._buf = grown
        self._buf[channel, position - self._base: stop - self._base] = pcm

    def ready(self) -> Pcm:
        """Stereo samples (2, n) both channels are complete for (or one lags too far behind)."""
        ends = [e for e in self._end if e is not None]
        if not ends:
            return self._take(0)
        full = min(e if e is not None else self._base for e in self._end)
        return self._take(max(full, max(ends) - self._max_lag) - self._base)

    def rest(self) -> Pcm:
        """Everything, the shorter channel padded with silence (at the end of the call)."""
        ends = [e for e in self._end if e is not None]
        return self._take((max(ends) if ends else self._base) - self._base)

    def _take(self, n: int) -> Pcm:
        n = max(0, min(n, self._buf.shape[1]))
        out = self._buf[:, :n].copy()
        self._buf = self._buf[:, n:]
        self._base += n
        return out


class _Placement:
    """Sample position of a channel's packets: RTP time anchored to the arrival time."""

    def __init__(self) -> None:
        self._anchor: tuple[int, int] | None = None  # (rtp timestamp, sample position)
        self._resync = int(RESYNC_S * RATE)

    def position(self, timestamp: int, arrival: int) -> int:
        if self._anchor is not None:
            ts0, pos0 = self._anchor
            delta = (timestamp - ts0) % (1 << 32)
            if delta >= 1 << 31:
                delta -= 1 << 32  # reordered: before the anchor
            position = pos0 + delta
            if abs(position - arrival) <= self._resync:
                return position
        self._anchor = (timestamp, arrival)
        return arrival


class _FileWriter:
    """One recording file: PyAV container and encoder; used only on the recording thread."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path = path
        self._part = path.with_name(path.name + ".part")
        fd = os.open(self._part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._file = os.fdopen(fd, "wb")
        self._container: Any = av.open(self._file, "w", format=fmt)
        codec, bit_rate = _CODECS[fmt]
        stream: Any = self._container.add_stream(codec, rate=RATE, layout="stereo")
        if bit_rate:
            stream.bit_rate = bit_rate
        self._stream = stream
        self._aligner = StereoAligner()
        self._places = (_Placement(), _Placement())
        self._pts = 0

    def add(self, packets: list[_Packet]) -> None:
        for channel, payload, codec, timestamp, arrival in packets:
            position = self._places[channel].position(timestamp, arrival)
            self._aligner.add(channel, position, g711(codec).decode(payload))
        self._encode(self._aligner.ready())

    def close(self) -> float:
        """Flush, close and rename into place; return the recorded seconds."""
        try:
            self._encode(self._aligner.rest())
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
        finally:
            self._release()
        os.replace(self._part, self.path)
        return self._pts / RATE

    def abort(self) -> None:
        with contextlib.suppress(Exception):  # the file is being thrown away anyway
            self._container.close()
        self._release()
        self._part.unlink(missing_ok=True)

    def _release(self) -> None:
        """Free the encoder now: its native threads must end with the call, not when the
        garbage collector finds the call's reference cycles (the call's RtpSession holds its
        recording as `tap`)."""
        self._file.close()
        self._stream = self._container = None
        self._aligner = StereoAligner()

    def _encode(self, stereo: Pcm) -> None:
        if stereo.shape[1] == 0:
            return
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(stereo.T).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = RATE
        frame.pts = self._pts
        self._pts += stereo.shape[1]
        for packet in self._stream.encode(frame):
            self._container.mux(packet)


class CallRecording:
    """One call's recording, fed from the loop; create with `Recorder.open`."""

    def __init__(self, recorder: Recorder, path: Path, start: float) -> None:
        self.path = path
        self._recorder = recorder
        self._start = start
        self._batch: list[_Packet] = []
        self._writer: concurrent.futures.Future[_FileWriter] = recorder.submit(
            _FileWriter, path, recorder.config.format)
        self._closed = False

    # RtpTap: called by the RTP session for each G.711 packet, on the loop; cheap.
    def received(self, payload: bytes, codec: str, timestamp: int, now: float) -> None:
        """A caller packet that arrived from the phone at loop time `now`."""
        self._add(CALLER, payload, codec, timestamp, now)

    def sent(self, payload: bytes, codec: str, timestamp: int, now: float) -> None:
        """An agent packet sent to the phone at loop time `now`."""
        self._add(AGENT, payload, codec, timestamp, now)

    def _add(self, channel: int, payload: bytes, codec: str, timestamp: int, now: float) -> None:
        if self._closed:
            return
        self._batch.append((channel, payload, codec, timestamp,
                            round((now - self._start) * RATE)))
        if len(self._batch) >= BATCH:
            self._flush()

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        self._recorder.submit(_add_batch, self._writer, batch)

    async def close(self) -> str | None:
        """Finish the file (off the loop); return its path, or None if writing failed."""
        if self._closed:
            return None
        self._flush()
        self._closed = True
        try:
            seconds = await asyncio.wrap_future(self._recorder.submit(_close, self._writer))
        except Exception:
            log.exception("recording %s failed", self.path.name)
            self._recorder.submit(_abort, self._writer)
            self._recorder.result("failed")
            return None
        self._recorder.result("written")
        log.info("recording written: %s (%.1f s)", self.path.name, seconds)
        return str(self.path)


def _add_batch(writer: concurrent.futures.Future[_FileWriter], batch: list[_Packet]) -> None:
    if writer.exception() is None:
        writer.result().add(batch)


def _close(writer: concurrent.futures.Future[_FileWriter]) -> float:
    return writer.result().close()


def _abort(writer: concurrent.futures.Future[_FileWriter]) -> None:
    if writer.exception() is None:
        writer.result().abort()


class Recorder:
    """Owned by the app: the recording thread, the directory and its retention sweep."""

    def __init__(self, config: RecordingConfig,
                 on_result: Callable[[str], None] = lambda result: None) -> None:
        self.config = config
        self.directory = Path(config.directory)
        self._on_result = on_result
        self._pool = concurrent.futures.ThreadPoolExecutor(1, "recording")
        self.announcement: Pcm = np.zeros(0, np.int16)  # played before the agent (`prepare`)

    def prepare(self) -> None:
        """Create the directory 0700 and decode the announcement (blocking: call at start,
        off the loop)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.config.announcement:
            self.announcement = announcement_pcm(self.config.announcement)

    def open(self, record_id: str, start: float, wall_now: float | None = None
             ) -> CallRecording:
        """A recording for one call; `start` is the loop time its position 0 stands for."""
        stamp = datetime.fromtimestamp(time.time() if wall_now is None else wall_now, UTC)
        name = f"{stamp:%Y%m%dT%H%M%SZ}-{record_id}.{self.config.format}"
        return CallRecording(self, self.directory / name, start)

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        return self._pool.submit(fn, *args)

    def result(self, result: str) -> None:
        self._on_result(result)

    def sweep(self, now: float | None = None) -> int:
        """Delete recordings older than `retention_days` (blocking); return how many."""
        if self.config.retention_days <= 0:
            return 0
        cutoff = (time.time() if now is None else now) - self.config.retention_days * 86400
        removed = 0
        for path in self.directory.iterdir():
            name = path.name.removesuffix(".part")
            if name.endswith(SUFFIXES) and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.info("recording retention: deleted %d files older than %g days", removed,
                     self.config.retention_days)
        return removed

    async def run_retention(self, every_s: float = 3600.0) -> None:
        """The app's task: sweep now and every `every_s` until cancelled."""
        while True:
            try:
                await asyncio.wrap_future(self._pool.submit(self.sweep))
            except OSError as exc:
                log.error("recording retention sweep failed: %s", exc)
            await asyncio.sleep(every_s)

    async def start(self) -> None:
        """`prepare` on the recording thread."""
        await asyncio.wrap_future(self._pool.submit(self.prepare))

    def close(self) -> None:
        """Wait for pending writes and end the thread (blocking: after calls have ended)."""
        self._pool.shutdown(wait=True)

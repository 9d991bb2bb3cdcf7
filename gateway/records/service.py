"""The app's records service: the webhook sender and the recorder, started and stopped once.

`app.py` builds one `RecordsService` from `[webhooks]` and `[recording]`, passes `sink` and
`recorder` to every call through `CallContext`, and stops it after the calls have ended (so
their `call.ended` events are spooled before the process exits). Neither part belongs to a
call: a call only hands its record to the sink and its audio to its recording.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.config import Config
from gateway.metrics import Metrics
from gateway.records.record import NULL_SINK, RecordSink
from gateway.records.recording import Recorder
from gateway.records.webhooks import WebhookSender

log = logging.getLogger(__name__)


class RecordsService:
    def __init__(self, config: Config, metrics: Metrics) -> None:
        hooks = config.webhooks
        self.sender = (WebhookSender(hooks, config.webhook_secret, metrics) if hooks.targets
                       else None)
        # The recording thread and the retention sweep exist only when a route records.
        recording_used = any(route.record for route in config.routes)
        self.recorder = Recorder(config.recording, metrics.recording) if recording_used else None
        self._retention: asyncio.Task[None] | None = None
        if self.sender is not None:
            sender = self.sender
            metrics.webhook_spool_from(lambda: sender.spool_bytes)

    @property
    def sink(self) -> RecordSink:
        return self.sender if self.sender is not None else NULL_SINK

    async def start(self) -> None:
        if self.sender is not None:
            await self.sender.start()
        if self.recorder is not None:
            await self.recorder.start()
            self._retention = asyncio.create_task(self.recorder.run_retention(),
                                                  name="recording retention")

    async def stop(self) -> None:
        """After the calls: finish recordings, spool what is queued, end the tasks."""
        if self._retention is not None:
            self._retention.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention
        if self.recorder is not None:
            await asyncio.to_thread(self.recorder.close)
        if self.sender is not None:
            await self.sender.stop()

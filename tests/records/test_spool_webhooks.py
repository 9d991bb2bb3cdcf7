"""The durable spool and the webhook sender against a real local HTTP receiver."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Secret, WebhooksConfig
from gateway.metrics import Metrics
from gateway.records.spool import Spool
from gateway.records.webhooks import WebhookSender, sign, spool_directory, verify_signature
from tests.records.receiver import Receiver

SECRET = "s3cret-for-tests"


def test_spool_keeps_order_across_reopen_and_bounds_its_size(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "q", max_bytes=30)
    assert spool.load() == 0
    assert spool.append(b"a" * 10) and spool.append(b"b" * 10) and spool.append(b"c" * 10)
    assert spool.append(b"d") is None  # full: nothing written
    (tmp_path / "q" / "0000000000000009.json.tmp").write_bytes(b"half")  # a cut-short append
    again = Spool(tmp_path / "q", max_bytes=30)
    assert again.load() == 3 and again.size_bytes == 30
    assert not list((tmp_path / "q").glob("*.tmp"))
    name, body = again.oldest() or ("", b"")
    assert body == b"a" * 10
    again.remove(name)
    assert again.append(b"e" * 10)
    bodies = []
    while (entry := again.oldest()) is not None:
        bodies.append(entry[1][:1])
        again.remove(entry[0])
    assert bodies == [b"b", b"c", b"e"] and again.size_bytes == 0
    assert stat.S_IMODE(os.stat(tmp_path / "q").st_mode) == 0o700


def test_spool_files_are_private(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "q", max_bytes=1000)
    spool.load()
    name = spool.append(b"{}")
    assert name is not None
    assert stat.S_IMODE(os.stat(tmp_path / "q" / name).st_mode) == 0o600


def test_signature_recipe() -> None:
    body = b'{"event":"call.ended"}'
    header = sign(b"k", body, 1_700_000_000)
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify_signature(b"k", header, body, 1_700_000_010)
    assert not verify_signature(b"k", header, body + b" ", 1_700_000_010)
    assert not verify_signature(b"other", header, body, 1_700_000_010)
    assert not verify_signature(b"k", header, body, 1_700_001_000)  # too old: a replay
    assert not verify_signature(b"k", "garbage", body, 1_700_000_010)


def _config(tmp_path: Path, *urls: str, events: tuple[str, ...] = ("call.ended",),
            max_mb: float = 1.0) -> WebhooksConfig:
    return WebhooksConfig(urls=urls, events=events, spool_dir=str(tmp_path / "spool"),
                          spool_max_mb=max_mb)


def _sender(config: WebhooksConfig, metrics: Any, **kwargs: Any) -> WebhookSender:
    return WebhookSender(config, Secret(SECRET), metrics, **kwargs)


def _value(metrics: Metrics, outcome: str) -> float:
    return metrics.registry.get_sample_value("orga_gateway_webhook_events_total",
                                             {"outcome": outcome}) or 0.0


async def _until(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_signed_events_reach_the_receiver_filtered_by_config(tmp_path: Path) -> None:
    metrics = Metrics()
    with Receiver(SECRET.encode()) as rx:
        sender = _sender(_config(tmp_path, rx.url, events=("call.answered", "call.ended")),
                               metrics)
        await sender.start()
        sender.emit("call.started", {"call_id": "1"})  # not configured: not sent
        sender.emit("call.answered", {"call_id": "1"})
        sender.emit("call.ended", {"call_id": "1", "transcript": [{"text": "grüß dich"}]})
        await _until(lambda: len(rx.events) == 2)
        await sender.stop()
    assert [e["event"] for e in rx.events] == ["call.answered", "call.ended"]
    assert rx.events[1]["call"]["transcript"][0]["text"] == "grüß dich"
    assert len({e["id"] for e in rx.events}) == 2 and rx.bad_signatures == 0
    assert _value(metrics, "delivered") == 2 and _value(metrics, "spooled") == 2
    assert not list(spool_directory(sender.config, rx.url).iterdir())  # delivered = removed


async def test_receiver_down_then_up_gets_every_event_in_order_also_after_a_restart(
        tmp_path: Path) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/hook"
    metrics = Metrics()
    first = _sender(_config(tmp_path, url), metrics, backoff_s=(0.05, 0.2),
                          stop_flush_s=0.2)
    await first.start()
    for i in range(5):
        first.emit("call.ended", {"n": i})
    await _until(lambda: (metrics.registry.get_sample_value(
        "orga_gateway_webhook_retries_total") or 0) >= 2)
    await first.stop()  # SIGTERM while the receiver is down: all five stay on disk
    assert len(list(spool_directory(first.config, url).glob("*.json"))) == 5

    metrics2 = Metrics()
    second = _sender(_config(tmp_path, url), metrics2, backoff_s=(0.05, 0.2))
    await second.start()
    for i in range(5, 8):
        second.emit("call.ended", {"n": i})
    await asyncio.sleep(0.3)  # still down after the restart
    with Receiver(SECRET.encode(), port=port) as rx:
        rx.fail_with = 503  # up but failing: still retried
        await _until(lambda: rx.attempts >= 2)
        rx.fail_with = None
        await _until(lambda: len(rx.events) >= 8)
        await second.stop()
    assert [e["call"]["n"] for e in rx.events] == list(range(8))
    assert len({e["id"] for e in rx.events}) == 8
    assert _value(metrics2, "delivered") == 8 and _value(metrics2, "dropped") == 0


async def test_refused_event_is_counted_failed_and_the_next_one_goes_on(tmp_path: Path) -> None:
    metrics = Metrics()
    with Receiver(SECRET.encode()) as rx:
        rx.fail_with = 400
        sender = _sender(_config(tmp_path, rx.url), metrics, backoff_s=(0.05, 0.2))
        await sender.start()
        sender.emit("call.ended", {"n": 0})
        await _until(lambda: _value(metrics, "failed") == 1)
        rx.fail_with = None
        sender.emit("call.ended", {"n": 1})
        await _until(lambda: len(rx.events) == 1)
        await sender.stop()
    assert rx.events[0]["call"] == {"n": 1}


async def test_full_spool_drops_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                           ) -> None:
    url = f"http://127.0.0.1:{_free_port()}/hook"
    metrics = Metrics()
    sender = _sender(_config(tmp_path, url, max_mb=1.0), metrics, backoff_s=(10, 10),
                           stop_flush_s=0.2)
    await sender.start()
    big = {"text": "x" * 400_000}
    for _ in range(4):
        sender.emit("call.ended", big)
    await sender.stop()
    assert _value(metrics, "spooled") == 2 and _value(metrics, "dropped") == 2
    assert "spool full" in caplog.text


async def test_each_receiver_has_its_own_spool_and_order(tmp_path: Path) -> None:
    with Receiver(SECRET.encode()) as a, Receiver(SECRET.encode()) as b:
        b.fail_with = 503
        sender = _sender(_config(tmp_path, a.url, b.url), Metrics(), backoff_s=(0.05, 0.2))
        await sender.start()
        for i in range(3):
            sender.emit("call.ended", {"n": i})
        await _until(lambda: len(a.events) == 3)  # b's outage does not hold a back
        b.fail_with = None
        await _until(lambda: len(b.events) == 3)
        await sender.stop()
    assert [e["call"]["n"] for e in b.events] == [0, 1, 2]
    assert [e["id"] for e in a.events] == [e["id"] for e in b.events]

"""Secrets never leak (issue 7 item 12). With DEBUG logging everywhere (our loggers, aiortc,
aioice, httpx — raw records, before any redaction filter), run a digest-authenticated call with
audio, a wrong-password attempt, and calls that fail at Orga in three ways (token rejected, /calls
error, malformed answer), then search everything the gateway and emulator expose — every log
record's message, arguments, extras and traceback, /metrics, /calls during the call, /ready,
/healthz, the emulator's state, the reprs of the config and API client — for the API key, every
ephemeral token the emulator minted, and the digest password."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from gateway.emulator.server import Emulator
from tests.edge.harness import (
    API_KEY,
    DIGEST_PASSWORD,
    DIGEST_USER,
    Caller,
    make_config,
    place_call,
    running,
    trunk,
)

FORMATTER = logging.Formatter()


def record_texts(records: list[logging.LogRecord]) -> list[str]:
    out = []
    for r in records:
        out.append(r.getMessage())
        out.append(repr(r.args))
        out.append(repr({k: v for k, v in r.__dict__.items() if k not in ("args", "msg")}))
        if r.exc_info:
            out.append(FORMATTER.formatException(r.exc_info))
            out.append(repr(r.exc_info[1]))
        if r.exc_text:
            out.append(r.exc_text)
    return out


async def test_no_secret_in_any_output(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    def config(emu: Emulator):  # type: ignore[no-untyped-def]
        return make_config(emu, trunks=(trunk("pbx", "127.0.0.0/8", auth=True),))

    texts: list[str] = []
    async with running(config) as rig:
        caller = Caller(rig.udp)
        await caller.start()
        creds = (DIGEST_USER, DIGEST_PASSWORD)
        call = await place_call(caller, credentials=creds)
        await asyncio.sleep(1.5)  # caller audio reaches the agent; its reply comes back
        texts.append((await rig.http_get("/calls")).decode())
        texts.append((await rig.http_get("/metrics")).decode())
        await call.hang_up()

        with pytest.raises(AssertionError):
            await place_call(caller, credentials=(DIGEST_USER, "wrong-password"), timeout=5)
        for fault in ({"reject_tokens": True}, {"fail_calls": 1, "fail_status": 401},
                      {"malformed_calls": True}):
            rig.emulator.faults.update({"reject_tokens": False, "malformed_calls": False,
                                        **fault})
            with pytest.raises(AssertionError) as refused:
                await place_call(caller, credentials=creds, timeout=20)
            texts.append(str(refused.value))
        await rig.idle()

        for path in ("/metrics", "/calls", "/ready", "/healthz"):
            texts.append((await rig.http_get(path)).decode())
        texts.append(json.dumps(rig.emulator.state(), default=str))
        texts.append(repr(rig.emulator.config))
        texts.append(repr(rig.gateway.config))
        texts.append(repr(rig.gateway.api))
        texts.append(repr(rig.gateway.screen._auth))
        tokens = list(rig.tokens)
        caller.close()

    texts += record_texts(caplog.records)
    texts.append(caplog.text)
    assert len(tokens) >= 2  # the good call's token and the failed calls' ones
    assert len(caplog.records) > 100  # DEBUG really was on (aiortc/aioice are chatty)
    secrets = {"api key": API_KEY, "digest password": DIGEST_PASSWORD,
               **{f"token {n}": t for n, t in enumerate(tokens)}}
    blob = "\n".join(texts)
    leaks = {name for name, value in secrets.items() if value in blob}
    assert leaks == set()
    # The searches can find things: the call really ran and was logged.
    assert call.call_id in blob

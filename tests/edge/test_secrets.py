"""Secrets never leak (issue 7 item 12). With DEBUG logging everywhere (our loggers, aiortc,
aioice, httpx — raw records, before any redaction filter), run a digest-authenticated call with
audio, a wrong-password attempt, and calls that fail at Orga in three ways (token rejected, /calls
error, malformed answer), then search everything the gateway and emulator expose — every log
record's message, arguments, extras and traceback, /metrics, /calls during the call, /ready,
/healthz, the emulator's state, the reprs of the config and API client — for the API key, every
ephemeral token the emulator minted, and the digest password. A second test does the same for
SDES-SRTP keys: the caller's keys from its offers and the keys in our answers."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
from collections.abc import Callable

import pytest

from gateway.emulator.server import Emulator
from tests.edge.harness import (
    API_KEY,
    DIGEST_PASSWORD,
    DIGEST_USER,
    Caller,
    final_for,
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


def srtp_offer(key: str) -> Callable[[str, int], bytes]:
    def build(host: str, port: int) -> bytes:
        return (f"v=0\r\no=caller 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
                f"m=audio {port} RTP/SAVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
                "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\n"
                f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n"
                "a=sendrecv\r\n").encode()
    return build


async def test_no_srtp_key_in_any_output(caplog: pytest.LogCaptureFixture) -> None:
    """An SRTP call (its RTP is plain, so every packet fails authentication and is counted),
    then a re-INVITE that re-keys and an offer refused: neither side's key shows anywhere."""
    caplog.set_level(logging.DEBUG)
    theirs = base64.b64encode(os.urandom(30)).decode()
    rekey = base64.b64encode(os.urandom(30)).decode()
    unusable = base64.b64encode(os.urandom(30)).decode()

    def config(emu: Emulator):  # type: ignore[no-untyped-def]
        return make_config(emu)

    texts: list[str] = []
    async with running(config) as rig:
        caller = Caller(rig.udp)
        await caller.start()
        call = await place_call(caller, offer=srtp_offer(theirs))
        answer = call.final.body.decode()
        ours = re.search(r"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:(\S+)", answer)
        assert ours is not None, answer
        await asyncio.sleep(1.0)
        texts.append((await rig.http_get("/calls")).decode())
        metrics = (await rig.http_get("/metrics")).decode()
        texts.append(metrics)
        assert re.search(r'rtp_srtp_failures_total\{reason="auth"\} [1-9]', metrics), metrics
        # Re-key in a re-INVITE: our answer carries a fresh key of ours.
        data, _ = caller.request("INVITE", call.uri, call_id=call.call_id, cseq=call.cseq + 1,
                                 from_tag=call.from_tag, to_tag=call.to_tag,
                                 body=srtp_offer(rekey)(caller.host, call.rtp.port))
        caller.send(data)
        reanswer = await caller.wait(final_for(call.call_id, call.cseq + 1), 5)
        assert reanswer.status == 200
        ack, _ = caller.request("ACK", call.uri, call_id=call.call_id, cseq=call.cseq + 1,
                                from_tag=call.from_tag, to_tag=call.to_tag)
        caller.send(ack)
        call.cseq += 1
        ours2 = re.search(r"inline:(\S+)", reanswer.body.decode())
        assert ours2 is not None and ours2.group(1) != ours.group(1)
        await call.hang_up()
        # An offer with only an MKI crypto line to an SRTP-only stream: refused, key not echoed.
        bad = srtp_offer(unusable + "|2^20|1:4")
        with pytest.raises(AssertionError) as refused:
            await place_call(caller, offer=bad, timeout=10)
        texts.append(str(refused.value))
        await rig.idle()
        texts.append((await rig.http_get("/calls")).decode())
        texts.append(repr(rig.gateway.config))
        caller.close()

    texts += record_texts(caplog.records)
    texts.append(caplog.text)
    blob = "\n".join(texts)
    keys = {"caller key": theirs, "caller re-key": rekey, "unusable key": unusable,
            "our key": ours.group(1), "our re-key": ours2.group(1)}
    # Also the raw bytes' hex and base64 without padding, in case a repr shows them.
    for name, value in list(keys.items()):
        raw = base64.b64decode(value)
        keys[f"{name} (hex)"] = raw.hex()
        keys[f"{name} (repr)"] = repr(raw)[2:-1][:24]
    leaks = {name for name, value in keys.items() if value in blob}
    assert leaks == set()
    assert call.call_id in blob

import io
import logging
from collections.abc import Iterator

import pytest

from gateway.logs import (
    OneLineFormatter,
    RateLimitedLog,
    RedactionFilter,
    call_logger,
    format_context,
    setup_logging,
)

API_KEY = "sk-live-abcdef123456"
TOKEN = "eph-tok-987654"


@pytest.fixture
def capture() -> Iterator[tuple[io.StringIO, RedactionFilter]]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    redaction = setup_logging(logging.DEBUG, [API_KEY, ""], stream=stream, journald=False)
    yield stream, redaction
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_one_line_with_context(capture: tuple[io.StringIO, RedactionFilter]) -> None:
    stream, _ = capture
    log = call_logger(logging.getLogger("gateway.call"), "c-1")
    log.info("transcript %s", "hello\nworld")
    log = log.bind(conversation_id="conv 7")
    log.warning("ended", extra={"ctx": {"result": "normal"}})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("INFO gateway.call: transcript hello\\nworld call_id=c-1")
    assert lines[1].endswith('WARNING gateway.call: ended call_id=c-1 conversation_id="conv 7" '
                             "result=normal")
    assert lines[0][:4].isdigit() and "Z INFO" in lines[0]


def test_journald_priority_prefix() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "bad", None, None)
    assert OneLineFormatter(journald=True).format(record) == "<3>ERROR x: bad"


def test_secrets_masked_everywhere(capture: tuple[io.StringIO, RedactionFilter]) -> None:
    stream, redaction = capture
    redaction.register(TOKEN, ephemeral=True)
    log = logging.getLogger("gateway.orga")
    log.info("key %s token %s", API_KEY, TOKEN)
    log.info("headers: Authorization: Bearer %s", "unregistered.jwt-value")
    log.info('Digest username="pbx", response="6629fae49393a05397450978507c4ef1"')
    log.info('{"ephemeral_token": "zzz-unregistered", "password": hunter2}')
    call_logger(log, "c", key=API_KEY).info("ctx")
    try:
        raise RuntimeError(f"failed with {API_KEY}")
    except RuntimeError:
        log.exception("boom")
    log.info("bad format %s %s", "only one")  # must not lose the record or raise
    out = stream.getvalue()
    for secret in (API_KEY, TOKEN, "unregistered.jwt-value", "6629fae49393a05397450978507c4ef1",
                   "zzz-unregistered", "hunter2"):
        assert secret not in out
    assert out.count("***") >= 8
    assert "Traceback" in out and len(out.splitlines()) == 7
    redaction.forget(TOKEN)
    log.info("after %s", TOKEN)
    assert stream.getvalue().splitlines()[-1].endswith(f"after {TOKEN}")


def test_ephemeral_secrets_are_bounded() -> None:
    f = RedactionFilter()
    for i in range(3000):
        f.register(f"token-{i:05d}", ephemeral=True)
    assert f.redact("token-02999 token-00000") == "*** token-00000"


def test_format_context_quotes() -> None:
    assert format_context({"a": 1, "b": None, "c": 'x "y"', "d": "k=v"}) == (
        'a=1 c="x \\"y\\"" d="k=v"')


def test_rate_limited_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    limited = RateLimitedLog(logging.getLogger("gateway.security"), interval_s=10, burst=2)
    written = [limited.log("unknown_source", 100.0 + i * 0.01, logging.WARNING,
                           "dropped INVITE from %s", "192.0.2.1") for i in range(100)]
    assert written.count(True) == 2
    assert limited.log("rate", 100.5, logging.WARNING, "other key")
    assert limited.log("unknown_source", 111.0, logging.WARNING, "again")
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("dropped INVITE from 192.0.2.1") == 2
    assert "98 similar messages suppressed in the last 11 s (unknown_source)" in messages
    assert messages[-1] == "again"


def test_rate_limited_log_flush(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    limited = RateLimitedLog(logging.getLogger("gateway.security"), interval_s=10, burst=1)
    for i in range(5):
        limited.log("register", 0.0 + i, logging.WARNING, "REGISTER dropped")
    limited.flush(5.0)
    assert len(caplog.records) == 1  # window still open
    limited.flush(10.0)
    assert caplog.records[-1].getMessage() == (
        "4 similar messages suppressed in the last 10 s (register)")
    limited.flush(30.0)
    assert len(caplog.records) == 2

"""Logging for a daemon under systemd: one line per record on stderr, per-call context, no secrets.

Owns the log format, the per-call `LoggerAdapter`, the redaction of registered secrets and the
rate limiting of security log lines (issue 7 item 7: a flood must not become a log flood).

Format: `LEVEL logger: message key=value ...`. Under journald (systemd sets `JOURNAL_STREAM`)
each line starts with a `<N>` syslog priority so `journalctl -p err` works, and no timestamp
is printed (the journal has one); elsewhere an ISO timestamp leads. Newlines inside a message or
traceback are escaped so one record is always one line.

Redaction runs as a handler filter, so it applies to records from every logger, to their
arguments, context values and formatted tracebacks. Values registered there (API key, digest
passwords, each call's ephemeral token) become `***`; `Bearer` tokens and digest `response=`
values are masked by pattern even if nobody registered them.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, TextIO

MASK = "***"
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}
_PATTERNS = (
    re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r'(?i)(\bresponse\s*=\s*")[^"]+'),  # a digest response is password-derived
    re.compile(r'(?i)(\b(?:password|passwd|api_key|apikey|ephemeral_token|secret)"?\s*[=:]\s*"?)'
               r'[^",\s]+'),
)
_BARE_VALUE = re.compile(r"^[^\s=\"]+$")
MAX_EPHEMERAL = 1024  # bound on remembered per-call tokens (oldest forgotten first)


def _one_line(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


def format_context(ctx: Mapping[str, Any]) -> str:
    parts = []
    for key, value in ctx.items():
        if value is None:
            continue
        text = str(value)
        if not _BARE_VALUE.match(text):
            text = '"' + _one_line(text).replace('"', '\\"') + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)


class OneLineFormatter(logging.Formatter):
    """`LEVEL logger: message k=v ...`, one physical line per record."""

    def __init__(self, journald: bool | None = None) -> None:
        super().__init__()
        self.journald = "JOURNAL_STREAM" in os.environ if journald is None else journald

    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname} {record.name}: {record.getMessage()}"
        ctx = getattr(record, "ctx", None)
        if ctx:
            text += " " + format_context(ctx)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text += " | " + record.exc_text
        if record.stack_info:
            text += " | " + self.formatStack(record.stack_info)
        text = _one_line(text)
        if self.journald:
            return f"<{_PRIORITY.get(record.levelno, 6)}>{text}"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z {text}"


class RedactionFilter(logging.Filter):
    """Masks registered secrets (and secret-shaped values) in every record it sees."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._static: set[str] = set()
        self._ephemeral: dict[str, None] = {}  # insertion-ordered set, bounded
        self._ordered: tuple[str, ...] | None = ()  # None: rebuild before the next use
        for secret in secrets:
            self.register(secret)

    def register(self, secret: str, *, ephemeral: bool = False) -> None:
        """Mask `secret` from now on; ephemeral ones (per-call tokens) are kept bounded."""
        if not secret:
            return
        if not ephemeral:
            self._static.add(secret)
        else:
            self._ephemeral[secret] = None
            while len(self._ephemeral) > MAX_EPHEMERAL:
                del self._ephemeral[next(iter(self._ephemeral))]
        self._ordered = None

    def forget(self, secret: str) -> None:
        """Stop tracking a per-call token (its call ended; it expires anyway)."""
        if self._ephemeral.pop(secret, 0) is None:
            self._ordered = None

    def redact(self, text: str) -> str:
        if self._ordered is None:
            # Longest first, so a secret containing another is masked whole. Plain substring
            # tests: at most a few hundred live secrets, and no regex to rebuild per call.
            self._ordered = tuple(sorted({*self._static, *self._ephemeral}, key=len,
                                         reverse=True))
        for secret in self._ordered:
            if secret in text:
                text = text.replace(secret, MASK)
        for pattern in _PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + MASK, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = f"{record.msg!r} {record.args!r}"
        record.msg, record.args = self.redact(message), None
        ctx = getattr(record, "ctx", None)
        if ctx:
            record.ctx = {k: (self.redact(str(v)) if v is not None else None)
                          for k, v in ctx.items()}
        if record.exc_info:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


NOISY_LIBRARIES = ("httpx", "httpcore", "aioice", "aiortc")


def setup_logging(level: int | str = logging.INFO, secrets: Iterable[str] = (),
                  stream: TextIO | None = None, journald: bool | None = None
                  ) -> RedactionFilter:
    """Route every record through one stderr handler; returns the filter to register tokens."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(OneLineFormatter(journald))
    redaction = RedactionFilter(secrets)
    handler.addFilter(redaction)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Libraries log per request (httpx: URLs) and per ICE check (aioice) at INFO: keep them to
    # warnings unless the operator asked for DEBUG.
    quiet = logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING
    for name in NOISY_LIBRARIES:
        logging.getLogger(name).setLevel(quiet)
    return redaction


class ContextAdapter(logging.LoggerAdapter[logging.Logger]):
    """Adds `key=value` context (call id, conversation id, ...) to each record."""

    def __init__(self, logger: logging.Logger, ctx: Mapping[str, Any]) -> None:
        super().__init__(logger, dict(ctx))

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[
            str, Any]]:
        extra = dict(kwargs.get("extra") or {})
        extra["ctx"] = {**(self.extra or {}), **extra.get("ctx", {})}
        kwargs["extra"] = extra
        return msg, kwargs

    def bind(self, **ctx: Any) -> ContextAdapter:
        """A new adapter with more context (e.g. the conversation id once Orga answers)."""
        return ContextAdapter(self.logger, {**(self.extra or {}), **ctx})


def call_logger(logger: logging.Logger, call_id: str, conversation_id: str | None = None,
                **ctx: Any) -> ContextAdapter:
    """The logger a call uses: every line carries `call_id=` and, once known, `conversation_id=`."""
    return ContextAdapter(logger, {"call_id": call_id, "conversation_id": conversation_id, **ctx})


class RateLimitedLog:
    """At most `burst` lines per `interval_s` per key; then one summary of what was suppressed.

    For security rejections: a scanner sending 2,000 INVITEs/s must not write 2,000 lines/s.
    Time is passed in (`now`), like everywhere else at the edge.
    """

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter[Any], *,
                 interval_s: float = 10.0, burst: int = 5, max_keys: int = 1024) -> None:
        self._log = logger
        self._interval = interval_s
        self._burst = burst
        self._max_keys = max_keys
        self._windows: dict[str, list[float]] = {}  # key -> [window start, lines, suppressed]

    def log(self, key: str, now: float, level: int, msg: str, *args: Any) -> bool:
        """Log unless over the limit for `key`; returns whether the line was written."""
        window = self._windows.get(key)
        if window is None or now - window[0] >= self._interval:
            if window is not None and window[2]:
                self._log.log(level, "%d similar messages suppressed in the last %.0f s (%s)",
                              int(window[2]), now - window[0], key)
            if window is None and len(self._windows) >= self._max_keys:
                del self._windows[next(iter(self._windows))]
            window = self._windows[key] = [now, 0, 0]
        if window[1] < self._burst:
            window[1] += 1
            self._log.log(level, msg, *args)
            return True
        window[2] += 1
        return False

    def flush(self, now: float, level: int = logging.WARNING) -> None:
        """Write the summaries of windows that ended (call it now and then, e.g. each minute),
        so suppressed lines are reported even when the flood stops."""
        for key, window in list(self._windows.items()):
            if now - window[0] >= self._interval:
                if window[2]:
                    self._log.log(level, "%d similar messages suppressed in the last %.0f s (%s)",
                                  int(window[2]), now - window[0], key)
                del self._windows[key]

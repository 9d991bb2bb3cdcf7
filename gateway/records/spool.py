"""A durable, size-bounded, ordered queue of webhook bodies: one file per event in a directory.

Each entry is written to a temporary file, flushed to disk (`fsync`) and renamed into place, so
a crash or SIGTERM leaves either the whole entry or none of it; stale temporaries are removed at
start. Names are a zero-padded sequence number, so the directory's sorted listing is the order
events were spooled in, across restarts. Files are 0600 in a 0700 directory: they hold
transcripts and digits.

All methods do blocking file I/O: the webhook sender calls them on its I/O thread, never on
the event loop. The lock keeps the index consistent should they ever run on two threads.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
from pathlib import Path

_SUFFIX = ".json"
_TMP = ".tmp"


class Spool:
    """Pending entries of one receiver, oldest first, at most `max_bytes` in total."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._entries: collections.deque[tuple[str, int]] = collections.deque()  # (name, size)
        self._bytes = 0
        self._next = 1
        self._lock = threading.Lock()

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def load(self) -> int:
        """Create the directory (0700) or pick up what a previous run left; return the count."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        names: list[tuple[int, str, int]] = []
        for path in self.directory.iterdir():
            if path.name.endswith(_TMP):  # an append cut short: never renamed, never counted
                path.unlink(missing_ok=True)
            elif path.name.endswith(_SUFFIX) and path.name[: -len(_SUFFIX)].isdigit():
                names.append((int(path.name[: -len(_SUFFIX)]), path.name, path.stat().st_size))
        names.sort()
        self._entries = collections.deque((name, size) for _, name, size in names)
        self._bytes = sum(size for _, _, size in names)
        self._next = (names[-1][0] + 1) if names else 1
        return len(names)

    def append(self, data: bytes) -> str | None:
        """Store `data` durably after all others; None (nothing written) if it would not fit."""
        with self._lock:
            return self._append(data)

    def _append(self, data: bytes) -> str | None:
        if self._bytes + len(data) > self.max_bytes:
            return None
        name = f"{self._next:016d}{_SUFFIX}"
        tmp = self.directory / (name + _TMP)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.directory / name)
        self._next += 1
        self._entries.append((name, len(data)))
        self._bytes += len(data)
        return name

    def oldest(self) -> tuple[str, bytes] | None:
        """The first pending entry and its bytes, or None when empty."""
        with self._lock:
            return self._oldest()

    def _oldest(self) -> tuple[str, bytes] | None:
        while self._entries:
            name, size = self._entries[0]
            try:
                return name, (self.directory / name).read_bytes()
            except FileNotFoundError:  # removed by an operator: skip it
                self._entries.popleft()
                self._bytes -= size
        return None

    def remove(self, name: str) -> None:
        """Forget the oldest entry (delivered, or refused for good)."""
        with self._lock:
            self._remove(name)

    def _remove(self, name: str) -> None:
        if not self._entries or self._entries[0][0] != name:
            raise ValueError(f"{name} is not the oldest spool entry")
        _, size = self._entries.popleft()
        self._bytes -= size
        with contextlib.suppress(FileNotFoundError):
            (self.directory / name).unlink()

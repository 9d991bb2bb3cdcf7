"""Fakes for call tests: the SIP commands a call gives, recorded."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.sip.events import CallHandle


class RecordingSignalling:
    def __init__(self) -> None:
        self.sent: list[tuple[str, CallHandle, int | None, str | None, list[tuple[str, str]]]] = []

    def ring(self, call: CallHandle) -> None:
        self.sent.append(("ring", call, None, None, []))

    def progress(self, call: CallHandle, sdp: bytes) -> None:
        self.sent.append(("progress", call, 183, None, []))

    def answer(self, call: CallHandle, sdp: bytes) -> None:
        self.sent.append(("answer", call, 200, None, []))

    def reject(self, call: CallHandle, status: int, *, reason: str | None = None,
               headers: Iterable[tuple[str, str]] = ()) -> None:
        self.sent.append(("reject", call, status, reason, list(headers)))

    def hang_up(self, call: CallHandle) -> None:
        self.sent.append(("hang_up", call, None, None, []))

    def answer_offer(self, call: CallHandle, sdp: bytes) -> None:
        self.sent.append(("answer_offer", call, 200, None, []))

    def reject_offer(self, call: CallHandle, status: int, *,
                     headers: Iterable[tuple[str, str]] = ()) -> None:
        self.sent.append(("reject_offer", call, status, None, list(headers)))

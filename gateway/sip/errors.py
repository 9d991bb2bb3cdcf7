"""Errors of the sans-IO SIP core.

Peer mistakes are values, not crashes: a `ParseError` says what was wrong and which status a
request deserves (400 by default, 505 for an unknown SIP version, 413 for oversize messages), in
the style of h11's `RemoteProtocolError` with an error status hint.
"""

from __future__ import annotations


class SipError(Exception):
    """Base class for everything the SIP core raises on purpose."""


class ParseError(SipError):
    """A message (or part of one) that breaks RFC 3261 grammar or our size limits."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class UsageError(SipError):
    """The application called the core in a way its state does not allow (a local error)."""

"""Where a SIP message came from or goes to: transport, address and (for TCP/TLS) connection.

The sans-IO core never opens sockets; it names a `Peer` and the driver finds the socket. For
stream transports `conn_id` names the connection a request arrived on, so the response goes
back on it (RFC 3261 §18.2.2); when that connection is gone the driver may open a new one to
`host:port`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

Addr = tuple[str, int]


class Transport(enum.Enum):
    UDP = "UDP"
    TCP = "TCP"
    TLS = "TLS"  # RFC 3261 §26.2: TCP framing inside TLS; Via "SIP/2.0/TLS", transport=tls

    @property
    def reliable(self) -> bool:
        return self is not Transport.UDP

    @classmethod
    def from_name(cls, name: str | None, default: Transport) -> Transport:
        if name is None:
            return default
        try:
            return cls(name.upper())
        except ValueError:
            return default


@dataclass(frozen=True, slots=True)
class Peer:
    """A remote SIP address as seen on the wire."""

    host: str
    port: int
    transport: Transport = Transport.UDP
    conn_id: int | None = None

    @property
    def addr(self) -> Addr:
        return (self.host, self.port)

    def __str__(self) -> str:
        return f"{self.transport.value}:{self.host}:{self.port}"


class Outgoing(NamedTuple):
    """One message the driver must send: bytes, address, transport and optional connection."""

    data: bytes
    addr: Addr
    transport: Transport
    conn_id: int | None

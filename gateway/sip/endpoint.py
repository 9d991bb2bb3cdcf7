"""The sans-IO SIP user agent: the one object drivers and the application talk to.

Inputs (each takes `now`, seconds on the driver's monotonic clock):
  `receive_datagram(data, addr, now)`, `receive_stream(data, conn_id, addr, now)`,
  `connection_closed(conn_id)`, `handle_timer(now)` and the commands below.
Outputs (pulled):
  `datagrams_to_send()` → `[Outgoing(data, addr, transport, conn_id)]`, `next_event()`,
  `get_timer()` → the earliest deadline or None.

Security seams (given by the application): `gate.admit(host, now)` sees every datagram before
it is parsed, requests and responses alike (a source to be dropped costs no parse);
`pre_dispatch.screen(source, request, now, admitted)` sees every new request after parsing,
with what the gate returned for its datagram.
Counting seam: `observe(direction, method, status)` sees every parsed message received ("in")
and every message handed to the driver ("out", retransmissions included); `status` is None for
requests, and a response's method is its CSeq method.

Nothing malformed raises out of here (RFC 3261 §8.2, §16.3 spirit): an unparseable request that
still names where a response goes is answered 400 (or the parser's status hint: 413, 414, 416,
505) with a Warning saying why; anything else is dropped and logged at DEBUG. Commands used in a
state that does not allow them raise `UsageError` (a local error; `StateError` when the call's
state table in `callstate.py` has no such transition). `idle` says whether anything of ours is
still in flight (a shutdown waits for it before closing its sockets).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable

from gateway.sip.address import Addr, Outgoing, Peer, Transport
from gateway.sip.callstate import OfferState, Role, SipCall
from gateway.sip.core import (
    ALLOW,
    DROP,
    Core,
    DatagramGate,
    EndpointConfig,
    PreDispatch,
    SipAction,
    SipVerdict,
)
from gateway.sip.errors import ParseError, UsageError
from gateway.sip.events import CallHandle, Event, RequestHandle
from gateway.sip.message import SipRequest, SipResponse
from gateway.sip.parser import StreamParser, parse_message
from gateway.sip.routing import clean_reason, response_peer, salvage_bad_request
from gateway.sip.transaction import server_key
from gateway.sip.uac import Uac
from gateway.sip.uas import Uas
from gateway.sip.uri import Uri

log = logging.getLogger(__name__)

Observer = Callable[[str, str, "int | None"], None]
_CSEQ_METHOD = re.compile(rb"^CSeq:[ \t]*\d+[ \t]+([A-Za-z]+)", re.M | re.I)

# The configuration and the pre-dispatch seam are part of this module's public face.
__all__ = [
    "ALLOW",
    "DROP",
    "DatagramGate",
    "EndpointConfig",
    "PreDispatch",
    "SipAction",
    "SipEndpoint",
    "SipVerdict",
]


class SipEndpoint:
    """One SIP UA (UAS and UAC) over any number of transports."""

    def __init__(
        self, config: EndpointConfig | None = None, *, pre_dispatch: PreDispatch | None = None,
        gate: DatagramGate | None = None, observe: Observer | None = None,
    ) -> None:
        self._core = Core(config or EndpointConfig(), pre_dispatch)
        self._gate = gate
        self._observe = observe
        self._uas = Uas(self._core)
        self._uac = Uac(self._core)
        self._streams: dict[int, StreamParser] = {}

    @property
    def config(self) -> EndpointConfig:
        return self._core.config

    def bind(self, transport: Transport, host: str, port: int) -> None:
        """Tell the core the address a transport listens on (for Via and Contact)."""
        self._core.bind(transport, (host, port))

    # --- inputs ----------------------------------------------------------------------------
    def receive_datagram(
        self, data: bytes, addr: Addr, now: float, transport: Transport = Transport.UDP,
        conn_id: int | None = None,
    ) -> None:
        """One complete message (a UDP datagram, or a message framed elsewhere)."""
        admitted: object | None = None
        if self._gate is not None and conn_id is None:
            admitted = self._gate.admit(addr[0], now)
            if admitted is None:
                return  # dropped unparsed: a source we would refuse silently anyway
        source = Peer(addr[0], addr[1], transport, conn_id)
        if not data.strip(b"\r\n"):
            return  # a keep-alive (RFC 5626 §4.4.1)
        try:
            message = parse_message(data, self._core.config.limits)
        except ParseError as exc:
            log.debug("unparseable message from %s: %s", source, exc.reason)
            response = salvage_bad_request(data, exc)
            if response is not None:
                # It was never stamped with received/rport: answer where it came from.
                self._core.send(response, source)
            return
        self._dispatch(message, source, now, admitted)

    def receive_stream(self, data: bytes, conn_id: int, addr: Addr, now: float,
                       transport: Transport = Transport.TCP) -> bool:
        """Bytes read from a stream connection (TCP, or TLS after decryption). False: framing
        broke, close this connection."""
        parser = self._streams.get(conn_id)
        if parser is None:
            parser = self._streams[conn_id] = StreamParser(self._core.config.limits)
        source = Peer(addr[0], addr[1], transport, conn_id)
        try:
            messages = parser.feed(data)
        except ParseError as exc:
            log.info("closing stream from %s: %s", source, exc.reason)
            del self._streams[conn_id]
            return False
        for message in messages:
            self._dispatch(message, source, now)
        return True

    def connection_closed(self, conn_id: int) -> None:
        self._streams.pop(conn_id, None)

    def stream_pending(self, conn_id: int) -> bool:
        """True while part of a message waits on this connection (header-read timeouts)."""
        parser = self._streams.get(conn_id)
        return parser is not None and parser.in_message

    def _dispatch(self, message: SipRequest | SipResponse, source: Peer, now: float,
                  admitted: object | None = None) -> None:
        if self._observe is not None:
            if isinstance(message, SipRequest):
                self._observe("in", message.method, None)
            else:
                cseq = message.headers.get("CSeq") or ""
                self._observe("in", cseq.rpartition(" ")[2], message.status)
        try:
            if isinstance(message, SipRequest):
                self._uas.receive_request(message, source, now, admitted)
            else:
                self._uac.receive_response(message, now)
        except ParseError as exc:
            # A header the parser left for later (Require, Session-Expires, Contact ...) is bad.
            log.debug("bad %r from %s: %s", message, source, exc.reason)
            if isinstance(message, SipRequest) and message.method != "ACK":
                self._answer_bad(message, source, exc, now)
        except Exception:
            # A bug of ours met an input we did not foresee: keep serving every other call.
            log.exception("SIP core failed on %r from %s", message, source)

    def _answer_bad(self, request: SipRequest, source: Peer, exc: ParseError, now: float) -> None:
        core = self._core
        try:
            key_txn = core.server_txn(server_key(request))
            if key_txn is not None and key_txn.final_sent:
                return
            reply = response_peer(request.top_via, source)
            status = exc.status if 400 <= exc.status < 600 else 400
            warning = clean_reason(exc.reason)
            response = core.response(
                request, status, f"Bad Request ({warning})" if status == 400 else None,
                headers=[("Warning", f'399 - "{warning}"')],
            )
            if key_txn is not None:
                key_txn.send_response(response, now)
            else:
                core.new_server_txn(request, reply).send_response(response, now)
        except ParseError:
            return

    # --- outputs ---------------------------------------------------------------------------
    def datagrams_to_send(self) -> list[Outgoing]:
        out = self._core.take_outgoing()
        if self._observe is not None:
            for item in out:  # our own well-formed messages: the first line and CSeq suffice
                line = item.data[:item.data.find(b"\r\n")]
                if line.startswith(b"SIP/2.0 "):
                    cseq = _CSEQ_METHOD.search(item.data)
                    self._observe("out", cseq.group(1).decode() if cseq else "",
                                  int(line[8:11]))
                else:
                    self._observe("out", line.split(b" ", 1)[0].decode("ascii", "replace"),
                                  None)
        return out

    def next_event(self) -> Event | None:
        return self._core.next_event()

    def get_timer(self) -> float | None:
        return self._core.next_deadline()

    def handle_timer(self, now: float) -> None:
        core = self._core
        core.run_server_timers(now)
        for key, timed_out, terminated in core.run_client_timers(now):
            if timed_out:
                self._uac.on_timeout(key, now)
            if terminated:
                self._uac.forget_txn(key)
        for call in core.calls():
            if call.retransmitter is not None:
                self._uas.retransmit_2xx(call, now)
                core.settle(call)
            if call.session is not None and call.session.deadline <= now and not call.ended:
                self._uac.session_due(call, now)

    # --- commands: incoming calls -------------------------------------------------------------
    # ring/answer/reject/answer_offer/reject_offer/hang_up return False, doing nothing, when the
    # call already ended (DialogEnded was emitted: CANCEL, BYE, timeout ...) or, for the offer
    # commands, when no offer is waiting (the re-INVITE was cancelled): races with the peer are
    # not errors. Real misuse (a handle never issued, answering twice, reject(200)) raises
    # UsageError.

    def ring(self, call: CallHandle, now: float, *, sdp: bytes | None = None) -> bool:
        """180 Ringing (183 Session Progress when `sdp` is given for early media)."""
        state = self._live(call)
        if state is None:
            return False
        self._uas.ring(state, now, sdp)
        return True

    def answer(
        self, call: CallHandle, sdp: bytes, now: float, *,
        headers: Iterable[tuple[str, str]] = (),
    ) -> bool:
        """200 OK with our SDP answer; retransmitted until the ACK (§13.3.1.4)."""
        state = self._live(call)
        if state is None:
            return False
        self._uas.answer(state, sdp, now, headers)
        return True

    def reject(
        self, call: CallHandle, status: int, now: float, *, reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> bool:
        """A 3xx-6xx final response (e.g. 503 with Retry-After, 403, 404, 486)."""
        state = self._live(call)
        if state is None:
            return False
        self._uas.reject(state, status, now, reason, headers)
        return True

    def answer_offer(
        self, call: CallHandle, sdp: bytes | None, now: float, *,
        headers: Iterable[tuple[str, str]] = (),
    ) -> bool:
        """200 OK to the pending re-INVITE/UPDATE (see ReinviteReceived)."""
        state = self._live(call)
        if state is None or state.offer is not OfferState.THEIRS:
            return False
        self._uas.answer_offer(state, sdp, now, headers)
        return True

    def reject_offer(
        self, call: CallHandle, status: int, now: float, *, reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> bool:
        """A non-2xx (typically 488) to the pending re-INVITE/UPDATE; the session stays."""
        state = self._live(call)
        if state is None or state.offer is not OfferState.THEIRS:
            return False
        self._uas.reject_offer(state, status, now, reason, headers)
        return True

    def hang_up(self, call: CallHandle, now: float) -> bool:
        """End a call in whatever state: BYE (after the ACK, §15), CANCEL (after a provisional,
        §9.1), or 480 before our answer. Idempotent."""
        state = self._live(call)
        if state is None:
            return False
        if state.role is Role.UAS:
            self._uas.hang_up(state, now)
        else:
            self._uac.hang_up(state, now)
        return True

    def _live(self, handle: CallHandle) -> SipCall | None:
        if not 0 < handle <= self._core.issued_handles:
            raise UsageError(f"call handle {handle} was never issued")
        state = self._core.call(handle)
        return None if state is None or state.ended else state

    # --- commands: outgoing ---------------------------------------------------------------------
    def invite(
        self, target: str | Uri, now: float, *, sdp: bytes | None, from_uri: str,
        to_uri: str | None = None, peer: Peer | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> CallHandle:
        """Start an outgoing call; `peer` overrides the next hop taken from `target`."""
        return self._uac.invite(
            target, now, sdp=sdp, from_uri=from_uri, to_uri=to_uri, peer=peer, headers=headers
        )

    def send_request(
        self, call: CallHandle, method: str, now: float, *, body: bytes = b"",
        content_type: str | None = None, headers: Iterable[tuple[str, str]] = (),
    ) -> RequestHandle:
        """An in-dialog request (INFO, re-INVITE for hold/resume, UPDATE, ...)."""
        return self._uac.send_request(
            self._call(call), method, now, body=body, content_type=content_type, headers=headers
        )

    def send_options(
        self, target: str | Uri, now: float, *, from_uri: str, peer: Peer | None = None
    ) -> RequestHandle:
        """An out-of-dialog OPTIONS ping; the outcome comes as RequestCompleted."""
        return self._uac.send_options(target, now, from_uri=from_uri, peer=peer)

    # --- introspection ---------------------------------------------------------------------------
    def call_request(self, call: CallHandle) -> SipRequest:
        """The INVITE that created the call (ours or theirs)."""
        return self._call(call).invite

    @property
    def active_calls(self) -> int:
        return sum(1 for c in self._core.calls() if not c.ended)

    def live_calls(self) -> list[CallHandle]:
        """Calls not yet ended (for draining: hang_up() each on shutdown)."""
        return [c.handle for c in self._core.calls() if not c.ended]

    @property
    def idle(self) -> bool:
        """Nothing of ours is in flight: no call (not even one finishing: BYE after ACK, CANCEL
        after a provisional), no request of ours without its final response (a BYE, a CANCEL),
        no non-2xx of ours to an INVITE without its ACK. A shutdown waits for this (bounded)
        before it closes the sockets."""
        return self._core.idle

    @property
    def transaction_count(self) -> int:
        return self._core.transaction_count

    def table_sizes(self) -> dict[str, int]:
        """Sizes of every internal table (for metrics, and for tests proving nothing leaks)."""
        return {**self._core.sizes(), "streams": len(self._streams)}

    def _call(self, handle: CallHandle) -> SipCall:
        state = self._core.call(handle)
        if state is None:
            raise UsageError(f"unknown or finished call {handle}")
        return state

"""SIP transactions: RFC 3261 §17 state machines with the RFC 6026 Accepted states.

Four machines, each driven by `now` and returning what the transaction user (the endpoint)
must know; messages go out through a `send` callable the endpoint gives them:

* `ServerInviteTransaction` (§17.2.1 + RFC 6026 §7.1): Proceeding → Completed (non-2xx, Timer G
  retransmits until ACK, Timer H gives up) → Confirmed (Timer I) ; or → Accepted on 2xx
  (Timer L), where retransmitted INVITEs are absorbed and the 2xx is the TU's to retransmit.
* `ServerNonInviteTransaction` (§17.2.2): Trying → Proceeding → Completed (Timer J).
* `ClientInviteTransaction` (§17.1.1 + RFC 6026 §7.2): Calling (Timer A, B) → Proceeding →
  Completed (ACK for non-2xx, Timer D) or Accepted (2xx retransmissions passed up, Timer M).
* `ClientNonInviteTransaction` (§17.1.2): Trying (Timer E, F) → Proceeding → Completed (Timer K).

Keys follow §17.1.3 (branch + CSeq method) and §17.2.3 (branch + sent-by + method, ACK and
CANCEL mapped as the RFC says), with an RFC 2543 fallback for branches without the magic cookie.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from gateway.sip.address import Peer
from gateway.sip.headers import Headers
from gateway.sip.message import Message, SipRequest, SipResponse
from gateway.sip.timers import TimerSettings, next_fire

MAGIC_COOKIE = "z9hG4bK"

SendFn = Callable[[Message, Peer], None]
TransactionKey = tuple[str, ...]


def server_key(request: SipRequest, *, method: str | None = None) -> TransactionKey:
    """§17.2.3 key of the server transaction a request belongs to.

    ACK is matched to the INVITE it acknowledges; pass `method="INVITE"` to find the INVITE a
    CANCEL targets.
    """
    via = request.top_via
    method = method or ("INVITE" if request.method == "ACK" else request.method)
    branch = via.branch or ""
    sent_by = f"{via.host}:{via.port or ''}".lower()
    if branch.startswith(MAGIC_COOKIE):
        return ("3261", branch, sent_by, method)
    # RFC 2543 peers: Request-URI, From tag, Call-ID, CSeq number and top Via identify it. The
    # To tag is left out because the ACK for a non-2xx carries the tag our response added.
    return (
        "2543",
        str(request.uri),
        request.from_.tag or "",
        request.call_id,
        str(request.cseq.number),
        str(via),
        method,
    )


def client_key(message: Message) -> TransactionKey:
    """§17.1.3: the top Via branch and the CSeq method identify our client transaction."""
    return (message.top_via.branch or "", message.cseq.method)


class ServerInviteState(enum.Enum):
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


class ServerInviteTransaction:
    """§17.2.1 with RFC 6026: the INVITE server transaction."""

    def __init__(
        self, request: SipRequest, peer: Peer, timers: TimerSettings, send: SendFn
    ) -> None:
        self.key = server_key(request)
        self.request = request
        self.peer = peer
        self.state = ServerInviteState.PROCEEDING
        self.last_response: SipResponse | None = None
        self.ack_timed_out = False  # Timer H fired: the peer never ACKed our non-2xx
        self._timers = timers
        self._send = send
        self._reliable = peer.transport.reliable
        self._g_at: float | None = None
        self._g_interval = timers.T1
        self._end_at: float | None = None  # Timer H, I or L depending on state

    @property
    def terminated(self) -> bool:
        return self.state is ServerInviteState.TERMINATED

    @property
    def final_sent(self) -> bool:
        return self.state is not ServerInviteState.PROCEEDING

    @property
    def awaiting_ack(self) -> bool:
        """Our non-2xx final response is retransmitted until the ACK (Timer G/H)."""
        return self.state is ServerInviteState.COMPLETED

    def receive_request(self, request: SipRequest, now: float) -> bool:
        """A retransmitted INVITE, or an ACK. True when the ACK belonged to this transaction
        (it acknowledged our non-2xx); False sends an ACK on to the dialog (the 2xx case)."""
        if request.method == "ACK":
            if self.state is ServerInviteState.COMPLETED:
                self.state = ServerInviteState.CONFIRMED
                self._g_at = None
                self._end_at = now + self._timers.timer_i(self._reliable)
                return True
            return self.state is ServerInviteState.CONFIRMED  # a duplicate: absorbed
        repeats = self.state in (ServerInviteState.PROCEEDING, ServerInviteState.COMPLETED)
        if repeats and self.last_response is not None:
            self._send(self.last_response, self.peer)
        # Accepted/Confirmed: absorbed (RFC 6026 §7.1); the TU retransmits its own 2xx.
        return False

    def send_response(self, response: SipResponse, now: float) -> None:
        if self.state is not ServerInviteState.PROCEEDING:
            return  # a final response was already sent; anything later is a TU bug we ignore
        self.last_response = response
        self._send(response, self.peer)
        if response.status < 200:
            return
        if response.status < 300:
            self.state = ServerInviteState.ACCEPTED
            self._end_at = now + self._timers.timeout  # Timer L
        else:
            self.state = ServerInviteState.COMPLETED
            self._end_at = now + self._timers.timeout  # Timer H
            if not self._reliable:
                self._g_interval = self._timers.T1
                self._g_at = now + self._g_interval

    def next_deadline(self) -> float | None:
        if self._g_at is not None and self._end_at is not None:
            return min(self._g_at, self._end_at)
        return self._g_at if self._g_at is not None else self._end_at

    def handle_timer(self, now: float) -> None:
        if self._end_at is not None and now >= self._end_at:
            if self.state is ServerInviteState.COMPLETED:
                self.ack_timed_out = True  # Timer H
            self.state = ServerInviteState.TERMINATED
            self._g_at = self._end_at = None
            return
        if self._g_at is not None and now >= self._g_at and self.last_response is not None:
            self._send(self.last_response, self.peer)  # Timer G
            self._g_interval = self._timers.next_interval(self._g_interval)
            self._g_at = next_fire(self._g_at, self._g_interval, now)


class ServerNonInviteState(enum.Enum):
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    TERMINATED = "terminated"


class ServerNonInviteTransaction:
    """§17.2.2: absorbs retransmissions, repeats the last response, Timer J."""

    def __init__(
        self, request: SipRequest, peer: Peer, timers: TimerSettings, send: SendFn
    ) -> None:
        self.key = server_key(request)
        self.request = request
        self.peer = peer
        self.state = ServerNonInviteState.TRYING
        self.last_response: SipResponse | None = None
        self._timers = timers
        self._send = send
        self._reliable = peer.transport.reliable
        self._j_at: float | None = None

    @property
    def terminated(self) -> bool:
        return self.state is ServerNonInviteState.TERMINATED

    @property
    def final_sent(self) -> bool:
        return self.state in (ServerNonInviteState.COMPLETED, ServerNonInviteState.TERMINATED)

    def receive_request(self, request: SipRequest, now: float) -> bool:
        if self.state is not ServerNonInviteState.TRYING and self.last_response is not None:
            self._send(self.last_response, self.peer)
        return False

    def send_response(self, response: SipResponse, now: float) -> None:
        if self.final_sent:
            return
        self.last_response = response
        self._send(response, self.peer)
        if response.status < 200:
            self.state = ServerNonInviteState.PROCEEDING
            return
        self.state = ServerNonInviteState.COMPLETED
        self._j_at = now + self._timers.timer_j(self._reliable)

    def next_deadline(self) -> float | None:
        return self._j_at

    def handle_timer(self, now: float) -> None:
        if self._j_at is not None and now >= self._j_at:
            self.state = ServerNonInviteState.TERMINATED
            self._j_at = None


ServerTransaction = ServerInviteTransaction | ServerNonInviteTransaction


class ClientState(enum.Enum):
    CALLING = "calling"  # INVITE only
    TRYING = "trying"  # non-INVITE only
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    ACCEPTED = "accepted"  # INVITE only (RFC 6026)
    TERMINATED = "terminated"


class ClientInviteTransaction:
    """§17.1.1 with RFC 6026 §7.2: sends the INVITE, ACKs non-2xx, passes every 2xx up."""

    def __init__(
        self, request: SipRequest, peer: Peer, timers: TimerSettings, send: SendFn, now: float
    ) -> None:
        self.key = client_key(request)
        self.request = request
        self.peer = peer
        self.state = ClientState.CALLING
        self.timed_out = False
        self._timers = timers
        self._send = send
        self._reliable = peer.transport.reliable
        self._a_interval = timers.T1
        self._a_at: float | None = None if self._reliable else now + self._a_interval
        self._end_at: float | None = now + timers.timeout  # Timer B, then D or M
        self._ack: SipRequest | None = None
        send(request, peer)

    @property
    def terminated(self) -> bool:
        return self.state is ClientState.TERMINATED

    @property
    def awaiting_final(self) -> bool:
        return self.state in (ClientState.CALLING, ClientState.PROCEEDING)

    def receive_response(self, response: SipResponse, now: float) -> SipResponse | None:
        """Returns the response when the TU must see it, None when it was absorbed."""
        if self.state in (ClientState.CALLING, ClientState.PROCEEDING):
            self._a_at = None
            if response.status < 200:
                self.state = ClientState.PROCEEDING
                self._end_at = None  # Timer B only guards the Calling state
                return response
            if response.status < 300:
                self.state = ClientState.ACCEPTED
                self._end_at = now + self._timers.timeout  # Timer M
                return response
            self.state = ClientState.COMPLETED
            self._ack = self._build_ack(response)
            self._send(self._ack, self.peer)
            self._end_at = now + self._timers.timer_d(self._reliable)
            if self._end_at == now:
                self.state = ClientState.TERMINATED
                self._end_at = None
            return response
        if self.state is ClientState.COMPLETED:
            if response.status >= 300 and self._ack is not None:
                self._send(self._ack, self.peer)  # the peer lost our ACK
            return None
        if self.state is ClientState.ACCEPTED and 200 <= response.status < 300:
            return response  # a 2xx retransmission or a forked 2xx: the TU ACKs it
        return None

    def cancel_sent(self, now: float) -> None:
        """§9.1: after our CANCEL, give the INVITE 64·T1 to end (487) before destroying it."""
        if self.state in (ClientState.CALLING, ClientState.PROCEEDING):
            guard = now + self._timers.timeout
            self._end_at = guard if self._end_at is None else min(self._end_at, guard)

    def _build_ack(self, response: SipResponse) -> SipRequest:
        """§17.1.1.3: the ACK for a non-2xx belongs to this transaction (same branch)."""
        invite = self.request
        headers = Headers()
        headers.add("Via", invite.headers.fields("Via")[0].split(",")[0].strip())
        for value in invite.headers.fields("Route"):
            headers.add("Route", value)
        headers.add("Max-Forwards", "70")
        headers.add("From", invite.headers.get("From") or "")
        headers.add("To", response.headers.get("To") or "")
        headers.add("Call-ID", invite.call_id)
        headers.add("CSeq", f"{invite.cseq.number} ACK")
        return SipRequest(headers=headers, method="ACK", uri=invite.uri)

    def next_deadline(self) -> float | None:
        if self._a_at is not None and self._end_at is not None:
            return min(self._a_at, self._end_at)
        return self._a_at if self._a_at is not None else self._end_at

    def handle_timer(self, now: float) -> bool:
        """Fire due timers; True when Timer B expired (the TU reports a 408)."""
        if self._end_at is not None and now >= self._end_at:
            self.timed_out = self.state is ClientState.CALLING
            self.state = ClientState.TERMINATED
            self._a_at = self._end_at = None
            return self.timed_out
        if self._a_at is not None and now >= self._a_at:
            self._send(self.request, self.peer)  # Timer A: doubles without a cap
            self._a_interval = self._timers.next_interval(self._a_interval, capped=False)
            self._a_at = next_fire(self._a_at, self._a_interval, now)
        return False


class ClientNonInviteTransaction:
    """§17.1.2: Timer E retransmits (T1 doubling to T2), F times out, K absorbs."""

    def __init__(
        self, request: SipRequest, peer: Peer, timers: TimerSettings, send: SendFn, now: float
    ) -> None:
        self.key = client_key(request)
        self.request = request
        self.peer = peer
        self.state = ClientState.TRYING
        self.timed_out = False
        self._timers = timers
        self._send = send
        self._reliable = peer.transport.reliable
        self._e_interval = timers.T1
        self._e_at: float | None = None if self._reliable else now + self._e_interval
        self._end_at: float | None = now + timers.timeout  # Timer F, then K
        send(request, peer)

    @property
    def terminated(self) -> bool:
        return self.state is ClientState.TERMINATED

    @property
    def awaiting_final(self) -> bool:
        return self.state in (ClientState.TRYING, ClientState.PROCEEDING)

    def receive_response(self, response: SipResponse, now: float) -> SipResponse | None:
        if self.state not in (ClientState.TRYING, ClientState.PROCEEDING):
            return None  # Completed: retransmitted finals are absorbed
        if response.status < 200:
            if self.state is ClientState.TRYING and self._e_at is not None:
                # In Proceeding Timer E keeps firing but at T2 (§17.1.2.2).
                self._e_interval = self._timers.T2
            self.state = ClientState.PROCEEDING
            return response
        self.state = ClientState.COMPLETED
        self._e_at = None
        self._end_at = now + self._timers.timer_k(self._reliable)
        if self._end_at == now:
            self.state = ClientState.TERMINATED
            self._end_at = None
        return response

    def next_deadline(self) -> float | None:
        if self._e_at is not None and self._end_at is not None:
            return min(self._e_at, self._end_at)
        return self._e_at if self._e_at is not None else self._end_at

    def handle_timer(self, now: float) -> bool:
        """Fire due timers; True when Timer F expired (the TU reports a 408)."""
        if self._end_at is not None and now >= self._end_at:
            self.timed_out = self.state in (ClientState.TRYING, ClientState.PROCEEDING)
            self.state = ClientState.TERMINATED
            self._e_at = self._end_at = None
            return self.timed_out
        if self._e_at is not None and now >= self._e_at:
            self._send(self.request, self.peer)
            if self.state is ClientState.PROCEEDING:
                self._e_interval = self._timers.T2
            else:
                self._e_interval = self._timers.next_interval(self._e_interval)
            self._e_at = next_fire(self._e_at, self._e_interval, now)
        return False


ClientTransaction = ClientInviteTransaction | ClientNonInviteTransaction

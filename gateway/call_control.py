"""Call control: what the operator API, the agent's tools and DTMF ask of one call.

`CallControl` is a part each `Call` owns (`call.control`). It decides on the requests of
`control/actions.py` — hang up (the agent's waits for its goodbye to finish playing), blind
transfer by REFER and its progress from the REFER's answer and NOTIFYs (`control/transfer.py`),
DTMF towards the phone (`media/dtmf_send.py`) — and keeps the digits the phone sent, acting on
the route's `dtmf_transfer` shortcuts. Every task it starts is a child of the call's
`asyncio.TaskGroup` (`spawn`), cancelled at the call's teardown (`close`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from gateway.control.actions import ActionRefused, Actor
from gateway.control.transfer import Transfer, TransferState
from gateway.logs import ContextAdapter
from gateway.media.dtmf import DtmfReceived
from gateway.media.dtmf_send import send_digits
from gateway.media.rtp_session import RtpSession
from gateway.outcomes import Outcome
from gateway.sip.events import RequestHandle

if TYPE_CHECKING:
    from gateway.call import Call

GOODBYE_QUIET_S = 0.8  # the agent's audio must be quiet this long before its hang-up acts
GOODBYE_MAX_S = 15.0  # ... or the hang-up acts anyway after this long
DTMF_MEMORY = 64  # digits get_call_info remembers
_ASKED_TO_END = {Actor.API: Outcome.API_HANGUP, Actor.AGENT: Outcome.AGENT_HANGUP,
                 Actor.DTMF: Outcome.API_HANGUP}


class CallControl:
    """The control requests of one call, its transfer and its DTMF; the call decides."""

    def __init__(self, call: Call) -> None:
        self._call = call
        self._dtmf_digits: list[str] = []
        self._hang_up_pending = False
        self._dtmf_sending = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.transfer: Transfer | None = None
        self._refer: RequestHandle | None = None
        self.transfer_done: asyncio.Future[Transfer] | None = None

    @property
    def ending(self) -> bool:
        """A hang-up was asked and waits for the agent's goodbye."""
        return self._hang_up_pending

    def request_hang_up(self, actor: Actor, reason: str | None = None) -> None:
        """Asked to end: BYE once answered, else a 603 final response.

        The agent's own hang-up waits for its goodbye to finish playing (its audio quiet for
        `GOODBYE_QUIET_S`, at most `GOODBYE_MAX_S`); an operator's acts at once.
        """
        call = self._call
        if call._stop.done() or self._hang_up_pending:
            raise ActionRefused("the call is already ending")
        outcome = _ASKED_TO_END[actor]
        call.log.info("hang-up requested by %s", actor.value)
        if reason:  # the agent's words may quote the caller: not at INFO
            call.log.debug("hang-up reason: %s", reason[:200])
        if actor is Actor.AGENT and call._answered and call._pump is not None:
            self._hang_up_pending = True
            self.spawn(self._end_after_goodbye(outcome))
        else:
            call._end(outcome)

    def request_transfer(self, target: str, actor: Actor) -> Transfer:
        """Blind transfer (REFER) of the caller to a name from the route's allowlist."""
        call = self._call
        uri = call.route.transfer_target(target)
        if uri is None:
            allowed = ", ".join(self.transfer_targets()) or "none"
            raise ActionRefused(f"{target[:64]!r} is not a transfer target of this call "
                                f"(allowed: {allowed})", 422)
        if not call._answered or call._stop.done() or self._hang_up_pending:
            raise ActionRefused("a transfer needs an answered call that is not ending")
        if self.transfer is not None and not self.transfer.finished:
            raise ActionRefused("a transfer is already in progress")
        transfer = Transfer(target, uri, actor, call._clock.now())
        try:
            self._refer = call.ctx.signalling.send_request(call.handle, "REFER", headers=[
                ("Refer-To", f"<{transfer.uri}>"), ("Referred-By", f"<{call.local_uri}>")])
        except Exception as exc:  # the dialog cannot carry a request now (e.g. not ACKed)
            raise ActionRefused(f"the call cannot be transferred now ({exc})") from None
        self.transfer = transfer
        call.record.transfer_started(target, transfer.started_at, actor.value)
        self.transfer_done = asyncio.get_running_loop().create_future()
        call.log.info("transfer to %s requested by %s", target, actor.value)
        self.spawn(self._watch_transfer(transfer))
        return transfer

    async def transfer_and_wait(self, target: str, actor: Actor) -> str:
        """Transfer and wait for the outcome (the agent's tool reports it)."""
        self.request_transfer(target, actor)
        assert self.transfer_done is not None
        return (await asyncio.shield(self.transfer_done)).outcome_text()

    def transfer_targets(self) -> list[str]:
        return sorted(name for name, _ in self._call.route.transfer_targets)

    def request_dtmf(self, digits: str) -> None:
        """Play `digits` to the phone as RFC 4733 events (one request at a time)."""
        call = self._call
        rtp = call._rtp
        if not call._answered or rtp is None or call._stop.done():
            raise ActionRefused("DTMF needs an answered call")
        if rtp.params.telephone_event_pt is None:
            raise ActionRefused("the phone did not negotiate telephone-event (RFC 4733)")
        if rtp.sending_event or self._dtmf_sending:
            raise ActionRefused("DTMF is already being sent")
        self._dtmf_sending = True
        call.log.debug("sending %d DTMF digits", len(digits))
        self.spawn(self._send_dtmf(rtp, digits))

    def dtmf_received(self) -> str:
        return "".join(self._dtmf_digits)

    # DTMF digits (PINs, card numbers) and transcripts are personal data: their content is
    # logged only with [privacy] log_content = true; otherwise the line says what happened.
    def on_dtmf(self, event: DtmfReceived) -> None:
        """A digit from the phone (RFC 4733 or SIP INFO): remembered, counted, recorded, and
        a transfer when it is one of the route's `dtmf_transfer` keys."""
        call = self._call
        self._dtmf_digits = [*self._dtmf_digits[-(DTMF_MEMORY - 1):], event.digit]
        call.ctx.metrics.dtmf(event.source.value)
        call.record.dtmf(event.digit, call._clock.now(), event.source.value)
        if call.ctx.config.privacy.log_content:
            call.log.info("DTMF %s (%d ms, %s)", event.digit, event.duration_ms,
                          event.source.value)
        else:
            call.log.info("DTMF digit received (%d ms, %s)", event.duration_ms,
                          event.source.value)
        shortcuts = dict(call.route.dtmf_transfer)
        if event.digit in shortcuts:
            try:
                self.request_transfer(shortcuts[event.digit], Actor.DTMF)
            except ActionRefused as exc:
                call.log.info("DTMF transfer not started: %s", exc.message)

    def on_notify(self, body: bytes) -> None:
        """A NOTIFY of our REFER's subscription (already answered 200)."""
        if self.transfer is not None:
            self.transfer.on_notify(body, self._call._clock.now())
            self._transfer_progress()

    def on_request_completed(self, handle: RequestHandle, status: int) -> None:
        """The final answer to a request of this dialog: our REFER's moves the transfer."""
        if handle == self._refer and self.transfer is not None:
            self.transfer.on_refer_response(status, self._call._clock.now())
            self._transfer_progress()

    def describe(self) -> dict[str, object]:
        """The transfer part of the operator API's view of the call."""
        return {"transfer": self.transfer.describe()} if self.transfer is not None else {}

    def close(self) -> None:
        """Teardown: a transfer still awaited and every control task are cancelled."""
        if self.transfer_done is not None and not self.transfer_done.done():
            self.transfer_done.cancel()
        for task in list(self._tasks):
            task.cancel()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """A control request's task, a child of the call's group; cancelled at teardown.
        Its failure is logged, never a crash of the call."""
        call = self._call
        task = call._tasks.create_task(_logged(coro, call.log))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_dtmf(self, rtp: RtpSession, digits: str) -> None:
        try:
            await send_digits(rtp, digits)
        finally:
            self._dtmf_sending = False

    async def _end_after_goodbye(self, outcome: Outcome) -> None:
        call = self._call
        pump = call._pump
        assert pump is not None
        clock = call._clock
        deadline = clock.now() + GOODBYE_MAX_S
        quiet_since = clock.now()
        while clock.now() < deadline:
            await asyncio.sleep(0.05)
            if pump.speaking:
                quiet_since = clock.now()
            elif clock.now() - quiet_since >= GOODBYE_QUIET_S:
                break
        call._end(outcome)

    async def _watch_transfer(self, transfer: Transfer) -> None:
        while not transfer.finished:
            await asyncio.sleep(0.25)
            if transfer.expired(self._call._clock.now()):
                self._transfer_progress()

    def _transfer_progress(self) -> None:
        call = self._call
        transfer = self.transfer
        if transfer is None or not transfer.finished:
            return
        done = self.transfer_done
        if done is None or done.done():
            return
        done.set_result(transfer)
        result = transfer.result.value if transfer.result else "failed"
        call.ctx.metrics.transfer(result, transfer.actor.value)
        call.record.transfer_ended(result, call._clock.now(), transfer.sip_status)
        if transfer.state is TransferState.SUCCEEDED:
            call.log.info("transferred to %s", transfer.target)
            call._end(Outcome.TRANSFERRED)
        else:
            call.log.warning("transfer to %s failed: %s (SIP %s); the call goes on",
                             transfer.target, result, transfer.sip_status)


async def _logged(coro: Coroutine[Any, Any, None], logger: ContextAdapter) -> None:
    try:
        await coro
    except Exception:
        logger.exception("a control request of the call failed")

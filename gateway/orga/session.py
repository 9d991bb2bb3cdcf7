"""Opening one Orga session: client-secrets → ice-config → peer/offer → /calls → answer.

The whole chain runs inside one setup budget (`setup_timeout_s`). Client-secrets and ice-config
are retried by `api.py`; a failed `/calls` is never retried with the same token: a retryable
failure mints a new token and builds a fresh peer (a new offer, so a half-created server session
can never connect to us with the old ICE/DTLS credentials), after the same jittered backoff or
`Retry-After` wait as the other steps (`OrgaApi.back_off`), and only while the budget allows.

No Orga session is left behind that we could have ended: a /calls answer that comes after we
stopped waiting (slow answer, CANCEL, budget spent) or a 2xx without `conversation_id` is
joined and closed by a detached task (`_end_abandoned`, `_join_and_close`). Each step's time is
returned for the setup-time metrics.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiortc import RTCIceServer

from gateway.orga.api import DETACHED_JOIN_S, CallAnswer, OrgaApi, candidates_from_sdp
from gateway.orga.errors import (
    OrgaError,
    OrgaIncompleteAnswer,
    OrgaProtocolError,
    OrgaTimeoutError,
)
from gateway.orga.events import OrgaEndReason
from gateway.orga.peer import OrgaPeer
from gateway.orga.settings import SessionParams

log = logging.getLogger(__name__)

PeerFactory = Callable[[list[RTCIceServer]], OrgaPeer]
STEPS = ("client_secrets", "ice_config", "offer", "calls", "connected", "datachannel_open")


@dataclass(frozen=True, slots=True)
class OrgaSession:
    """A connected session. `timings` holds seconds per step (summed over attempts) + total."""

    peer: OrgaPeer
    conversation_id: str
    timings: dict[str, float] = field(default_factory=dict)
    attempts: int = 1
    token_expires_at: datetime | None = None


async def open_session(
    api: OrgaApi,
    peer_factory: PeerFactory,
    params: SessionParams,
    *,
    setup_timeout_s: float | None = None,
    wait_connected: bool = True,
    max_call_attempts: int = 3,
) -> OrgaSession:
    """Run the setup chain; raise an `OrgaError` (never a foreign exception) on failure.

    With `wait_connected` it also waits for ICE+DTLS `connected` and the data channel to open
    (without it, those two timings stay 0.0). On failure every peer it built is closed.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + (setup_timeout_s or api.settings.setup_timeout_s)
    timings = dict.fromkeys(STEPS, 0.0)
    ice_servers: list[RTCIceServer] | None = None
    attempt = 0

    def step(name: str, since: float) -> float:
        now = loop.time()
        timings[name] += now - since
        return now

    while True:
        attempt += 1
        t = loop.time()
        secret = await api.mint_token(deadline)
        t = step("client_secrets", t)
        if ice_servers is None:
            ice_servers = await api.fetch_ice_servers(secret.token, deadline)
            t = step("ice_config", t)
        peer = _build_peer(peer_factory, ice_servers)
        handed_off = False  # the peer was handed to a detached task, which closes it
        try:
            async with asyncio.timeout_at(deadline):
                offer = await peer.create_offer()
                t = step("offer", t)
                # The request may run up to twice the request timeout, past our wait for it:
                # an answer that comes late still tells us which session to end.
                wait_s = min(api.settings.request_timeout_s, max(0.001, deadline - loop.time()))
                request = asyncio.ensure_future(api.create_call(
                    secret.token, offer, candidates_from_sdp(offer), params,
                    timeout_s=2 * api.settings.request_timeout_s,
                ))
                try:
                    await asyncio.wait({request}, timeout=wait_s)
                except asyncio.CancelledError:
                    if not request.done():  # the caller left (CANCEL) or setup timed out
                        api.detach(_end_abandoned(request, peer), f"end abandoned {peer!r}")
                        handed_off = True
                    raise
                if not request.done():
                    api.detach(_end_abandoned(request, peer), f"end late {peer!r}")
                    handed_off = True
                    raise OrgaTimeoutError("calls", None, "request timed out")
                answer = request.result()
                t = step("calls", t)
                peer.conversation_id = answer.conversation_id
                await peer.accept_answer(answer.sdp)
                if wait_connected:
                    await _first(peer.connected, peer.ended)
                    t = step("connected", t)
                    await _first(peer.datachannel_open, peer.ended)
                    t = step("datachannel_open", t)
        except OrgaError as exc:
            if isinstance(exc, OrgaIncompleteAnswer):  # a session we cannot use: end it
                api.detach(_join_and_close(peer, exc.answer_sdp, None), f"end unusable {peer!r}")
                handed_off = True
            if not handed_off:
                await peer.close()
            if exc.endpoint == "calls" and attempt < max_call_attempts:
                # Raises `exc` when a retry cannot help or cannot start within the budget.
                await api.back_off(exc, attempt, deadline)
                log.info("orga /calls failed (%s), minting a new token", exc.reason)
                continue
            raise
        except TimeoutError:
            if not handed_off:
                await peer.close()
            raise OrgaTimeoutError("setup", None, "setup budget exhausted") from None
        except BaseException:
            if not handed_off:
                await peer.close()
            raise
        timings["total"] = loop.time() - start
        return OrgaSession(
            peer=peer,
            conversation_id=answer.conversation_id,
            timings=timings,
            attempts=attempt,
            token_expires_at=secret.expires_at,
        )


def _build_peer(peer_factory: PeerFactory, ice_servers: list[RTCIceServer]) -> OrgaPeer:
    """aiortc validates ICE servers and more when the peer connection is built: whatever it
    raises there becomes an `OrgaProtocolError`, so no foreign exception leaves `open_session`."""
    try:
        return peer_factory(list(ice_servers))
    except OrgaError:
        raise
    except Exception as exc:
        raise OrgaProtocolError(
            "peer", None, f"peer connection could not be built ({type(exc).__name__})"
        ) from exc


async def _end_abandoned(request: asyncio.Future[CallAnswer], peer: OrgaPeer) -> None:
    """End the Orga session of a setup that stopped waiting for POST /calls.

    Orga creates the session when it accepts /calls, and has no end-call API: a session whose
    client never joins stays open (and billed) until Orga's own timeout; the emulator's did for
    more than a minute. Whether the caller left (CANCEL), the setup budget ran out, or the
    answer was merely slow (the next attempt uses a new token), let the request finish, join
    the session, and close the peer — the close is what Orga sees as a hang-up. Bounded by the
    request's own timeout (twice the request timeout) plus `DETACHED_JOIN_S`; owned by
    `OrgaApi`, which waits for it on shutdown.
    """
    try:
        answer = await request
    except OrgaIncompleteAnswer as exc:
        await _join_and_close(peer, exc.answer_sdp, None)
        return
    except Exception:  # no session was created (or we cannot know): nothing to end
        await peer.close()
        return
    await _join_and_close(peer, answer.sdp, answer.conversation_id)


async def _join_and_close(peer: OrgaPeer, answer_sdp: str, conversation_id: str | None) -> None:
    """Connect to a session we will not use, then close it: Orga's only hang-up signal.

    The caller's track is taken off this peer first: another peer may be carrying the call
    with it (a late answer to an earlier attempt), and must keep it."""
    peer.release_caller_track()
    peer.conversation_id = conversation_id
    try:
        async with asyncio.timeout(DETACHED_JOIN_S):
            await peer.accept_answer(answer_sdp)
            await _first(peer.connected, peer.ended)
            await _first(peer.datachannel_open, peer.ended)
    except Exception as exc:
        log.warning("could not join unused orga session %s to end it: %s",
                    conversation_id, exc)
    finally:
        await peer.close()
    log.info("ended orga session %s, which its call did not use", conversation_id)


async def _first(wanted: asyncio.Future[None], ended: asyncio.Future[OrgaEndReason]) -> None:
    """Wait for `wanted`; fail if the session ends first."""
    waiting: set[asyncio.Future[Any]] = {wanted, ended}
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if wanted.done():
        wanted.result()  # raises if the peer was closed meanwhile
        return
    raise OrgaError("peer", None, f"session ended during setup ({ended.result()})")

"""Opening one Orga session: client-secrets → ice-config → peer/offer → /calls → answer.

The whole chain runs inside one setup budget (`setup_timeout_s`). Client-secrets and ice-config
are retried by `api.py`; a failed `/calls` is never retried with the same token: a retryable
failure mints a new token and builds a fresh peer (a new offer, so a half-created server session
can never connect to us with the old ICE/DTLS credentials). Each step's time is returned for the
setup-time metrics.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiortc import RTCIceServer

from gateway.orga.api import CallAnswer, OrgaApi, candidates_from_sdp
from gateway.orga.errors import OrgaError, OrgaTimeoutError
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
        peer = peer_factory(list(ice_servers))
        abandoned = False  # the peer was handed to `_end_abandoned`, which closes it
        try:
            async with asyncio.timeout_at(deadline):
                offer = await peer.create_offer()
                t = step("offer", t)
                remaining = max(0.001, deadline - loop.time())
                request = asyncio.ensure_future(api.create_call(
                    secret.token, offer, candidates_from_sdp(offer), params,
                    timeout_s=min(api.settings.request_timeout_s, remaining),
                ))
                try:
                    answer = await asyncio.shield(request)
                except asyncio.CancelledError:
                    if not request.done():  # the caller left (CANCEL) or setup timed out
                        api.detach(_end_abandoned(request, peer), f"end abandoned {peer!r}")
                        abandoned = True
                    raise
                t = step("calls", t)
                peer.conversation_id = answer.conversation_id
                await peer.accept_answer(answer.sdp)
                if wait_connected:
                    await _first(peer.connected, peer.ended)
                    t = step("connected", t)
                    await _first(peer.datachannel_open, peer.ended)
                    t = step("datachannel_open", t)
        except OrgaError as exc:
            await peer.close()
            if (
                exc.endpoint == "calls"
                and exc.retryable
                and attempt < max_call_attempts
                and loop.time() < deadline
            ):
                log.info("orga /calls failed (%s), minting a new token", exc.reason)
                continue
            raise
        except TimeoutError:
            if not abandoned:
                await peer.close()
            raise OrgaTimeoutError("setup", None, "setup budget exhausted") from None
        except BaseException:
            if not abandoned:
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


ABANDONED_CONNECT_S = 5.0


async def _end_abandoned(request: asyncio.Future[CallAnswer], peer: OrgaPeer) -> None:
    """End the Orga session of a setup abandoned while POST /calls was in flight.

    Orga creates the session when it accepts /calls, and has no end-call API: a session whose
    client never joins stays open (and billed) until Orga's own timeout; the emulator's did for
    more than a minute. So let the request finish, join the session, and close the peer — the
    close is what Orga sees as a hang-up. Bounded by the request timeout plus
    `ABANDONED_CONNECT_S`; owned by `OrgaApi`, which waits for it on shutdown.
    """
    try:
        answer = await request
    except Exception:  # no session was created (or we cannot know): nothing to end
        await peer.close()
        return
    peer.conversation_id = answer.conversation_id
    try:
        async with asyncio.timeout(ABANDONED_CONNECT_S):
            await peer.accept_answer(answer.sdp)
            await _first(peer.connected, peer.ended)
            await _first(peer.datachannel_open, peer.ended)
    except Exception as exc:
        log.warning("could not join abandoned orga session %s to end it: %s",
                    answer.conversation_id, exc)
    finally:
        await peer.close()
    log.info("ended orga session %s, whose call was abandoned during setup",
             answer.conversation_id)


async def _first(wanted: asyncio.Future[None], ended: asyncio.Future[OrgaEndReason]) -> None:
    """Wait for `wanted`; fail if the session ends first."""
    waiting: set[asyncio.Future[Any]] = {wanted, ended}
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if wanted.done():
        wanted.result()  # raises if the peer was closed meanwhile
        return
    raise OrgaError("peer", None, f"session ended during setup ({ended.result()})")

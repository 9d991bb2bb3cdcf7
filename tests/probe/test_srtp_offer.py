"""The probe's SRTP offer and its reading of the answer: our key in RTP/SAVP, the far end's key
from the answer, and answers that do not take SRTP (or pick another crypto line) refused."""

from __future__ import annotations

import base64

import pytest

from gateway.media.srtp import SrtpKey, SrtpSuite, parse_crypto
from gateway.probe.phone import PROBE_SUITE, build_offer, media_from_answer
from gateway.sdp import SdpNegotiationError, negotiate, parse_offer

THEIRS = base64.b64encode(bytes(range(30))).decode()


def answer(proto: str, crypto: str | None) -> bytes:
    lines = ["v=0", "o=gw 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
             f"m=audio 40000 {proto} 0 101", "a=rtpmap:0 PCMU/8000",
             "a=rtpmap:101 telephone-event/8000", "a=sendrecv"]
    if crypto:
        lines.append(f"a=crypto:{crypto}")
    return ("\r\n".join(lines) + "\r\n").encode()


def test_offer_carries_our_key_and_the_answer_gives_theirs() -> None:
    ours = SrtpKey.generate(PROBE_SUITE)
    offer = build_offer("127.0.0.1", 30000, ("PCMU",), 7, ours).decode()
    assert "m=audio 30000 RTP/SAVP 0 101" in offer
    (line,) = [x for x in offer.split("\r\n") if x.startswith("a=crypto:")]
    offered = parse_crypto(line[len("a=crypto:"):])
    assert offered is not None and offered.key == ours and offered.suite is PROBE_SUITE
    # What our own gateway answers to it, read back by the probe.
    _, gw_answer = negotiate(parse_offer(offer), ("PCMU",), "127.0.0.1", 40000, 1, 1,
                             srtp="required")
    params = media_from_answer(gw_answer.encode(), ("PCMU",), "127.0.0.1", 30000, ours)
    assert params.srtp is not None and params.srtp.local == ours
    assert params.srtp.remote != ours and params.srtp.suite is SrtpSuite.AES_CM_128_HMAC_SHA1_80
    assert "RTP/AVP" in build_offer("127.0.0.1", 30000, ("PCMU",), 7).decode()


@pytest.mark.parametrize(("sdp", "why"), [
    (answer("RTP/AVP", None), "SRTP"),
    (answer("RTP/SAVP", f"2 AES_CM_128_HMAC_SHA1_80 inline:{THEIRS}"), "crypto 2"),
    (answer("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_32 inline:{THEIRS}"), "AES_CM_128_HMAC_SHA1_32"),
])
def test_answers_that_do_not_take_our_srtp_are_refused(sdp: bytes, why: str) -> None:
    with pytest.raises(SdpNegotiationError) as info:
        media_from_answer(sdp, ("PCMU",), "127.0.0.1", 30000, SrtpKey.generate(PROBE_SUITE))
    assert why in info.value.warning and THEIRS not in info.value.warning

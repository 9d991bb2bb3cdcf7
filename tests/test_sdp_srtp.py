"""SDES-SRTP offer/answer per trunk policy: RTP/SAVP answered with one crypto line and a fresh
key of ours, best-effort AVP+crypto, plain fallback under "optional", 488 with the right
Warning under "required", plain-only under "off", keys kept on refresh and renewed on re-key."""

from __future__ import annotations

import base64
import os

import pytest

from gateway.media.srtp import SrtpSuite, parse_crypto
from gateway.sdp import MediaParams, UnusableOffer, negotiate, parse_offer

KEY = base64.b64encode(bytes(range(30))).decode()
KEY_B = base64.b64encode(bytes(range(1, 31))).decode()
GCM = base64.b64encode(bytes(range(28))).decode()


def offer(*media: str, version: int = 1) -> str:
    return (f"v=0\r\no=pbx 1 {version} IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\n"
            "t=0 0\r\n") + "".join(media)


def m(proto: str = "RTP/SAVP", *crypto: str, port: int = 4000) -> str:
    lines = [f"m=audio {port} {proto} 0 101", "a=rtpmap:0 PCMU/8000",
             "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15", "a=sendrecv"]
    lines += [f"a=crypto:{c}" for c in crypto]
    return "\r\n".join(lines) + "\r\n"


def neg(sdp: str, policy: str, previous: MediaParams | None = None) -> tuple[MediaParams, str]:
    return negotiate(parse_offer(sdp), ("PCMU",), "198.51.100.5", 40000, 7, 1, srtp=policy,
                     previous_srtp=previous.srtp if previous else None)


def answer_crypto(answer: str) -> list[str]:
    return [line[len("a=crypto:"):] for line in answer.split("\r\n")
            if line.startswith("a=crypto:")]


@pytest.mark.parametrize("policy", ["optional", "required"])
def test_savp_offer_answered_with_first_supported_suite_and_fresh_key(policy: str) -> None:
    sdp = offer(m("RTP/SAVP", f"1 AES_256_CM_HMAC_SHA1_80 inline:{KEY}{KEY[:10]}",
                  f"2 AES_CM_128_HMAC_SHA1_32 inline:{KEY}", f"3 AES_CM_128_HMAC_SHA1_80 "
                  f"inline:{KEY_B}"))
    params, answer = neg(sdp, policy)
    assert params.srtp is not None and params.srtp.suite is SrtpSuite.AES_CM_128_HMAC_SHA1_32
    assert "m=audio 40000 RTP/SAVP 0 101" in answer
    (line,) = answer_crypto(answer)
    ours = parse_crypto(line)
    assert ours is not None and ours.tag == 2 and ours.suite is SrtpSuite.AES_CM_128_HMAC_SHA1_32
    assert ours.key == params.srtp.local and KEY not in answer
    assert params.srtp.remote.inline() == KEY
    assert KEY not in repr(params) and params.srtp.local.inline() not in repr(params)
    again, _ = neg(sdp, policy)
    assert again.srtp is not None and again.srtp.local != params.srtp.local  # per call


def test_gcm_offer_accepted() -> None:
    params, answer = neg(offer(m("RTP/SAVP", f"9 AEAD_AES_128_GCM inline:{GCM}")), "required")
    assert params.srtp is not None and params.srtp.suite is SrtpSuite.AEAD_AES_128_GCM
    assert answer_crypto(answer)[0].startswith("9 AEAD_AES_128_GCM inline:")


def test_best_effort_avp_with_crypto() -> None:
    sdp = offer(m("RTP/AVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}"))
    params, answer = neg(sdp, "optional")
    assert params.srtp is not None and "m=audio 40000 RTP/AVP 0 101" in answer
    assert len(answer_crypto(answer)) == 1
    plain, plain_answer = neg(sdp, "off")  # off: the same stream as plain RTP
    assert plain.srtp is None and answer_crypto(plain_answer) == []


def test_optional_falls_back_to_plain_and_prefers_srtp_when_both_are_offered() -> None:
    params, answer = neg(offer(m("RTP/AVP")), "optional")
    assert params.srtp is None and "RTP/SAVP" not in answer and answer_crypto(answer) == []
    both = offer(m("RTP/AVP", port=4000),
                 m("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}", port=4002))
    params, answer = neg(both, "optional")
    assert params.srtp is not None and params.remote_port == 4002
    assert "m=audio 0 RTP/AVP 0" in answer and "m=audio 40000 RTP/SAVP 0 101" in answer
    params, answer = neg(both, "off")
    assert params.srtp is None and params.remote_port == 4000
    assert "m=audio 0 RTP/SAVP 0" in answer


def test_required_without_srtp_is_488_with_302_and_unknown_suites_306() -> None:
    with pytest.raises(UnusableOffer) as info:
        neg(offer(m("RTP/AVP")), "required")
    assert (info.value.outcome.disposition.status, info.value.warn_code) == (488, 302)
    assert "SRTP" in info.value.warning
    with pytest.raises(UnusableOffer) as info:
        neg(offer(m("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4")),
            "required")
    assert info.value.warn_code == 306 and KEY not in info.value.warning


def test_off_refuses_savp_only_offer() -> None:
    with pytest.raises(UnusableOffer) as info:
        neg(offer(m("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}")), "off")
    assert info.value.warn_code == 302 and "RTP/AVP" in info.value.warning


def test_reinvite_keeps_keys_on_refresh_and_rekeys_when_the_peer_does() -> None:
    first, _ = neg(offer(m("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}")), "optional")
    refresh, _ = neg(offer(m("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}"),
                                version=2), "optional", first)
    assert refresh.srtp == first.srtp
    new = base64.b64encode(os.urandom(30)).decode()
    rekey, _ = neg(offer(m("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{new}"), version=3),
                   "optional", refresh)
    assert rekey.srtp is not None and first.srtp is not None
    assert rekey.srtp.local != first.srtp.local and rekey.srtp.remote.inline() == new
    dropped, _ = neg(offer(m("RTP/AVP"), version=4), "optional", rekey)
    assert dropped.srtp is None  # the peer went plain and the policy allows it

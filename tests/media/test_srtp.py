"""SRTP with SDES keys: the a=crypto grammar we accept and skip, keys that never show, protect
and unprotect across suites, replay and forgery counted (never raised), SSRC changes and
re-keying that touches only the direction whose key changed."""

from __future__ import annotations

import base64
import os
import struct

import pytest

from gateway.media.srtp import (
    SUPPORTED_SUITES,
    SdesCrypto,
    SrtpContext,
    SrtpKey,
    SrtpParams,
    SrtpSuite,
    choose_params,
    parse_crypto,
)

KEY30 = base64.b64encode(bytes(range(30))).decode()
KEY28 = base64.b64encode(bytes(range(28))).decode()


def rtp(seq: int, ssrc: int = 0x1234, payload: bytes = b"\xff" * 160) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + payload


def pair(suite: SrtpSuite = SrtpSuite.AES_CM_128_HMAC_SHA1_80
         ) -> tuple[SrtpContext, SrtpContext, list[str]]:
    """Two ends of one call: a's local key is b's remote key and vice versa."""
    ka, kb = SrtpKey.generate(suite), SrtpKey.generate(suite)
    failures: list[str] = []
    a = SrtpContext(SrtpParams(suite, 1, ka, kb))
    b = SrtpContext(SrtpParams(suite, 1, kb, ka), on_failure=failures.append)
    return a, b, failures


def test_gcm_available_with_this_libsrtp() -> None:
    assert SrtpSuite.AEAD_AES_128_GCM in SUPPORTED_SUITES


@pytest.mark.parametrize(("value", "usable"), [
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}", True),
    (f"2 AES_CM_128_HMAC_SHA1_32 inline:{KEY30}|2^31", True),
    (f"3 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|1048576", True),
    (f"4 AEAD_AES_128_GCM inline:{KEY28}", True),
    (f"5 AES_CM_128_HMAC_SHA1_80 inline:{KEY30} KDR=0 WSH=128", True),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30.rstrip('=')}", True),  # padding left out
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|2^20|1:4", False),  # MKI
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|1:4", False),  # MKI without lifetime
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30};inline:{KEY30}", False),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30} UNENCRYPTED_SRTP", False),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30} KDR=24", False),
    (f"1 AES_256_CM_HMAC_SHA1_80 inline:{KEY30}", False),  # suite we do not offer
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY28}", False),  # wrong length
    ("1 AES_CM_128_HMAC_SHA1_80 inline:!!notbase64!!", False),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|forever", False),
    ("AES_CM_128_HMAC_SHA1_80 inline:x", False),
    ("", False),
])
def test_crypto_attribute_grammar(value: str, usable: bool) -> None:
    assert (parse_crypto(value) is not None) is usable


def test_key_never_shows_in_reprs_and_round_trips_in_sdp() -> None:
    crypto = parse_crypto(f"7 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}")
    assert crypto is not None and crypto.tag == 7
    params = choose_params(crypto, None)
    for text in (repr(crypto), str(crypto.key), repr(params), f"{params}"):
        assert KEY30 not in text and params.local.inline() not in text and "***" in text
    again = parse_crypto(params.answer_attribute())
    assert again is not None and again.key == params.local and again.tag == 7
    assert params.remote == crypto.key and params.local != crypto.key


def test_keys_kept_on_refresh_fresh_when_the_peer_rekeys() -> None:
    offered = parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}")
    assert offered is not None
    first = choose_params(offered, None)
    assert choose_params(offered, None).local != first.local  # fresh keys per call
    assert choose_params(offered, first).local == first.local  # same offer again: kept
    rekeyed = SdesCrypto(1, offered.suite, SrtpKey(os.urandom(30)))
    assert choose_params(rekeyed, first).local != first.local
    other_suite = SdesCrypto(2, SrtpSuite.AES_CM_128_HMAC_SHA1_32, offered.key)
    assert choose_params(other_suite, first).local != first.local


@pytest.mark.parametrize("suite", SUPPORTED_SUITES)
def test_round_trip_and_tag_lengths(suite: SrtpSuite) -> None:
    a, b, failures = pair(suite)
    packet = rtp(1)
    protected = a.protect(packet)
    assert protected[:12] == packet[:12] and protected[12:172] != packet[12:]
    assert len(protected) - len(packet) == {"AES_CM_128_HMAC_SHA1_80": 10,
                                            "AES_CM_128_HMAC_SHA1_32": 4,
                                            "AEAD_AES_128_GCM": 16}[suite.value]
    assert b.unprotect(protected) == packet
    assert failures == []


def test_forgery_replay_and_garbage_counted_never_raised() -> None:
    a, b, failures = pair()
    first = a.protect(rtp(10))
    assert b.unprotect(first) == rtp(10)
    assert b.unprotect(first) is None  # replayed
    eleven = a.protect(rtp(11))
    tampered = bytearray(eleven)
    tampered[20] ^= 1
    assert b.unprotect(bytes(tampered)) is None
    assert b.unprotect(rtp(12)) is None  # plain RTP into an SRTP call
    assert b.unprotect(b"\x80") is None
    for seq in range(13, 13 + 200):  # move the window far ahead
        assert b.unprotect(a.protect(rtp(seq))) is not None
    assert b.unprotect(eleven) is None  # genuine but behind the window: too old
    assert b.failures["replay"] == 2 and b.failures["auth"] >= 2
    assert failures.count("replay") == 2 and len(failures) == sum(b.failures.values())


def test_ssrc_change_keeps_flowing_and_out_of_order_within_window_accepted() -> None:
    a, b, failures = pair()
    for seq in (1, 3, 2):
        assert b.unprotect(a.protect(rtp(seq))) == rtp(seq)
    for seq in (100, 101):
        assert b.unprotect(a.protect(rtp(seq, ssrc=0xBEEF))) == rtp(seq, ssrc=0xBEEF)
    assert failures == []


def test_rekey_only_the_direction_that_changed() -> None:
    suite = SrtpSuite.AES_CM_128_HMAC_SHA1_80
    a, b, failures = pair(suite)
    assert b.unprotect(a.protect(rtp(1))) is not None
    # The peer (a) re-keys its sending direction; b keeps its own key.
    new_a_key = SrtpKey.generate(suite)
    a.update(SrtpParams(suite, 1, new_a_key, a.params.remote))
    b.update(SrtpParams(suite, 1, b.params.local, new_a_key))
    assert a.rekeys == 1 and b.rekeys == 1
    assert b.unprotect(a.protect(rtp(2))) == rtp(2)
    assert a.unprotect(b.protect(rtp(5))) == rtp(5)
    # A refresh with the same keys changes nothing (replay state kept).
    b.update(SrtpParams(suite, 1, b.params.local, new_a_key))
    assert b.rekeys == 1
    assert failures == []


def test_protect_refusal_is_not_raised() -> None:
    a, _, _ = pair()
    assert a.protect(rtp(1, payload=b"\x00" * 1400)) is None  # beyond libsrtp's buffer
    assert a.protect(rtp(2)) is not None

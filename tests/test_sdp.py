import pytest

from gateway.sdp import (
    Direction,
    NoCommonCodec,
    SdpNegotiationError,
    UnusableOffer,
    negotiate,
    parse_offer,
)

BASE = """v=0\r
o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r
s=-\r
c=IN IP4 192.0.2.10\r
t=0 0\r
m=audio 49170 RTP/AVP 8 0 101\r
a=rtpmap:8 PCMA/8000\r
a=rtpmap:0 PCMU/8000\r
a=rtpmap:101 telephone-event/8000\r
a=fmtp:101 0-16\r
a=ptime:20\r
a=sendrecv\r
"""


def _neg(sdp: str, prefs: tuple[str, ...] = ("PCMU", "PCMA"), version: int = 1):
    return negotiate(parse_offer(sdp), prefs, "198.51.100.5", 40000, 42, version)


def test_basic_offer_prefers_our_codec_and_mirrors_dtmf() -> None:
    params, answer = _neg(BASE)
    assert params.remote_address == "192.0.2.10" and params.remote_port == 49170
    assert (params.codec, params.payload_type, params.clock_rate) == ("PCMU", 0, 8000)
    assert params.telephone_event_pt == 101
    assert params.direction is Direction.SENDRECV and not params.on_hold
    assert params.send_enabled and params.receive_enabled
    assert params.ptime_ms == 20 and params.remote_ptime_ms == 20
    lines = answer.split("\r\n")
    assert "m=audio 40000 RTP/AVP 0 101" in lines
    assert "a=rtpmap:0 PCMU/8000" in lines
    assert "a=rtpmap:101 telephone-event/8000" in lines
    assert "a=ptime:20" in lines and "a=sendrecv" in lines
    assert "o=orga-sip-gateway 42 1 IN IP4 198.51.100.5" in lines
    assert "c=IN IP4 198.51.100.5" in lines
    assert answer.endswith("\r\n")


@pytest.mark.parametrize(("offered", "sent"), [
    ("a=ptime:10", 10), ("a=ptime:30", 30), ("a=ptime:40", 40),
    ("a=ptime:60", 20),  # not one we packetise: RFC 3264 lets us send our own
    ("a=ptime:x", 20), ("", 20),
])
def test_we_send_at_the_offered_packet_time(offered: str, sent: int) -> None:
    params, answer = _neg(BASE.replace("a=ptime:20\r\n", offered + ("\r\n" if offered else "")))
    assert params.ptime_ms == sent
    assert f"a=ptime:{sent}" in answer.split("\r\n")


def test_pcma_preference() -> None:
    params, answer = _neg(BASE, ("PCMA", "PCMU"))
    assert (params.codec, params.payload_type) == ("PCMA", 8)
    assert "m=audio 40000 RTP/AVP 8 101" in answer


def test_static_payload_types_without_rtpmap_and_media_level_connection() -> None:
    sdp = (
        "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nt=0 0\n"
        "m=audio 5004 RTP/AVP 0\nc=IN IP4 10.0.0.2\n"
    )
    params, answer = _neg(sdp)
    assert params.remote_address == "10.0.0.2"
    assert params.codec == "PCMU" and params.telephone_event_pt is None
    assert "telephone-event" not in answer
    assert params.remote_ptime_ms is None


@pytest.mark.parametrize(
    ("attr", "ours", "hold", "sends", "receives"),
    [
        ("a=sendonly", Direction.RECVONLY, True, False, True),
        ("a=recvonly", Direction.SENDONLY, False, True, False),
        ("a=inactive", Direction.INACTIVE, True, False, False),
        ("a=sendrecv", Direction.SENDRECV, False, True, True),
    ],
)
def test_direction_mirroring(
    attr: str, ours: Direction, hold: bool, sends: bool, receives: bool
) -> None:
    params, answer = _neg(BASE.replace("a=sendrecv", attr))
    assert params.direction is ours
    assert params.on_hold is hold
    assert params.send_enabled is sends and params.receive_enabled is receives
    assert f"a={ours.value}" in answer


def test_session_level_direction_applies() -> None:
    sdp = BASE.replace("a=sendrecv\r\n", "").replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n")
    params, _ = _neg(sdp)
    assert params.on_hold and params.direction is Direction.RECVONLY


def test_hold_by_zero_connection_address() -> None:
    params, _ = _neg(BASE.replace("c=IN IP4 192.0.2.10", "c=IN IP4 0.0.0.0"))
    assert params.on_hold and not params.send_enabled


def test_no_common_codec_is_488_with_warning() -> None:
    sdp = BASE.replace("m=audio 49170 RTP/AVP 8 0 101", "m=audio 49170 RTP/AVP 9 101").replace(
        "a=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000", "a=rtpmap:9 G722/8000"
    )
    with pytest.raises(NoCommonCodec) as info:
        _neg(sdp)
    assert info.value.outcome.disposition.status == 488 and info.value.warn_code == 305
    assert isinstance(info.value, SdpNegotiationError)


@pytest.mark.parametrize(
    ("old", "new", "code"),
    [
        ("m=audio 49170 RTP/AVP", "m=audio 49170 RTP/SAVP", 302),
        ("m=audio 49170 RTP/AVP", "m=video 49170 RTP/AVP", 304),
        ("m=audio 49170 RTP/AVP", "m=audio 0 RTP/AVP", 304),
    ],
)
def test_unusable_offers(old: str, new: str, code: int) -> None:
    with pytest.raises(UnusableOffer) as info:
        _neg(BASE.replace(old, new))
    assert info.value.outcome.disposition.status == 488 and info.value.warn_code == code


@pytest.mark.parametrize(
    "sdp",
    [
        "v=0\r\ns=-\r\n",  # no o=
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\n",  # no media
        BASE.replace("c=IN IP4 192.0.2.10", "c=IN IP4 pbx.example"),
        BASE.replace("o=alice 2890844526 2890844526", "o=alice x"),
    ],
)
def test_malformed_is_unusable(sdp: str) -> None:
    with pytest.raises(UnusableOffer):
        _neg(sdp)


def test_missing_connection_is_unusable() -> None:
    with pytest.raises(UnusableOffer):
        _neg(BASE.replace("c=IN IP4 192.0.2.10\r\n", ""))


def test_srtp_plus_plain_audio_picks_plain_and_rejects_other_with_port_zero() -> None:
    sdp = BASE.replace(
        "m=audio 49170 RTP/AVP 8 0 101",
        "m=audio 49172 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x\r\n"
        "m=audio 49170 RTP/AVP 8 0 101",
    )
    params, answer = _neg(sdp)
    assert params.remote_port == 49170
    mlines = [line for line in answer.split("\r\n") if line.startswith("m=")]
    assert mlines == ["m=audio 0 RTP/SAVP 0", "m=audio 40000 RTP/AVP 0 101"]


def test_video_line_rejected_in_answer() -> None:
    sdp = BASE + "m=video 49180 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n"
    _, answer = _neg(sdp)
    assert "m=video 0 RTP/AVP 96" in answer


def test_reinvite_updates_params_and_version() -> None:
    p1, a1 = _neg(BASE, version=1)
    offer2 = BASE.replace("49170", "50000").replace("192.0.2.10", "192.0.2.20").replace(
        "2890844526 2890844526", "2890844526 2890844527"
    )
    parsed = parse_offer(offer2)
    assert parsed.session_version == 2890844527
    p2, a2 = _neg(offer2, version=2)
    assert (p2.remote_address, p2.remote_port) == ("192.0.2.20", 50000)
    assert p1 != p2
    assert "o=orga-sip-gateway 42 2 IN IP4" in a2 and "42 1 " in a1


def test_ipv6_addresses() -> None:
    sdp = BASE.replace("IN IP4 192.0.2.10", "IN IP6 2001:db8::1")
    params, answer = negotiate(parse_offer(sdp), ["PCMU"], "2001:db8::5", 40000, 1, 1)
    assert params.remote_address == "2001:db8::1"
    assert "c=IN IP6 2001:db8::5" in answer


def test_telephone_event_at_other_rate_is_ignored() -> None:
    sdp = BASE.replace("telephone-event/8000", "telephone-event/16000")
    params, answer = _neg(sdp)
    assert params.telephone_event_pt is None and "telephone-event" not in answer


def test_bad_preference_is_programming_error() -> None:
    with pytest.raises(ValueError):
        negotiate(parse_offer(BASE), ["opus"], "1.2.3.4", 4000, 1, 1)

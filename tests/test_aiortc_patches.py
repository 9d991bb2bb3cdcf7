"""The aiortc/aioice patches refuse what they were not tested with (issue 11 item 4), and the
AI leg's direct receive path reads packets as aiortc does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from gateway.aiortc_patches import (
    TESTED,
    UntestedVersionError,
    check_versions,
    receiver_stats,
    tune_receiver,
    tune_send_only_video,
)
from gateway.media.rtp import RtpParseError, parse_rtp


def test_installed_versions_are_the_tested_ones() -> None:
    check_versions()  # what pyproject.toml pins must pass the start-up check


@pytest.mark.parametrize("dist", sorted(TESTED))
def test_an_untested_version_stops_the_start_with_what_to_do(dist: str) -> None:
    def installed(name: str) -> str:
        return "99.0.0" if name == dist else TESTED[name] + ".0"

    with pytest.raises(UntestedVersionError) as info:
        check_versions(installed)
    text = str(info.value)
    assert f"{dist} 99.0.0" in text and f"{dist}=={TESTED[dist]}.*" in text


def test_series_prefix_is_not_a_version_prefix() -> None:
    # "1.160" is not in the 1.16 series
    with pytest.raises(UntestedVersionError):
        check_versions(lambda name: TESTED[name] + "0")


def test_tune_receiver_refuses_unknown_internals() -> None:
    class NotAReceiver:
        pass

    fake = NotAReceiver()
    with pytest.raises(UntestedVersionError, match="internals changed"):
        tune_receiver(fake, deliver=lambda frame: None)  # type: ignore[arg-type]
    assert receiver_stats(fake) is None  # type: ignore[arg-type]


def test_ffmpeg_starts_no_thread_pool_per_call() -> None:
    """In its own process (the setting is process-wide): after `single_threaded_ffmpeg`, an Opus
    encoder and a resampler — a call's FFmpeg parts — start no native threads."""
    import subprocess
    import sys

    code = (
        "import os, numpy as np\n"
        "from gateway.aiortc_patches import single_threaded_ffmpeg\n"
        "from gateway.media.transcode import AiResampler, OpusPhoneEncoder, make_frame\n"
        "n = lambda: len(os.listdir('/proc/self/task'))\n"
        "assert single_threaded_ffmpeg()\n"
        "before = n()\n"
        "enc, down = OpusPhoneEncoder(), AiResampler()\n"
        "enc.encode(np.zeros(160, dtype=np.int16))\n"
        "down.push(make_frame(np.zeros(960, dtype=np.int16), 48000, 0))\n"
        "print(before, n())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out[0] == out[1], out


def test_ffmpeg_threads_left_alone_when_libavutil_is_not_found(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from gateway.aiortc_patches import single_threaded_ffmpeg

    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 0 00:00 0 /usr/lib/libc.so.6\n")
    assert single_threaded_ffmpeg(str(maps)) is False
    assert "left as they are" in caplog.text


async def test_send_only_video_receiver_goes_without_the_bandwidth_estimator() -> None:
    """aiortc gives every video receiver a REMB estimator of 1,000 small objects, which the
    collector walks for every call in flight; the m-line nothing is received on drops it."""
    import gc

    from aiortc import RTCPeerConnection

    async def tracked_objects_of_a_peer(tuned: bool) -> int:
        gc.collect()
        before = len(gc.get_objects())
        pc = RTCPeerConnection()
        transceiver = pc.addTransceiver("video", direction="sendonly")
        if tuned:
            tune_send_only_video(transceiver)
            assert transceiver.receiver._RTCRtpReceiver__remote_bitrate_estimator is None  # type: ignore[attr-defined]
        gc.collect()
        count = len(gc.get_objects()) - before
        await pc.close()
        return count

    untuned = await tracked_objects_of_a_peer(False)
    tuned = await tracked_objects_of_a_peer(True)
    assert untuned - tuned >= 1000


def test_send_only_video_refuses_unknown_internals() -> None:
    class Transceiver:
        sender = receiver = object()

    with pytest.raises(UntestedVersionError, match="internals changed"):
        tune_send_only_video(Transceiver())  # type: ignore[arg-type]


def _wire(csrc: int = 0, mid: str | None = None, padding: int = 0) -> tuple[bytes, Any]:
    extensions = HeaderExtensionsMap()
    extensions.configure(RTCRtpParameters(headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid")]))
    packet = RtpPacket(payload_type=111, marker=1, sequence_number=65535,
                       timestamp=0xFFFFFF00, ssrc=0xDEADBEEF, payload=bytes(range(60)))
    packet.csrc = list(range(1, csrc + 1))
    packet.extensions.mid = mid
    packet.padding_size = padding
    return packet.serialize(extensions), extensions


@pytest.mark.parametrize("csrc,mid,padding", [(0, None, 0), (0, "0", 0), (3, "audio", 0),
                                              (2, "0", 7), (0, None, 1)])
def test_our_parser_reads_what_aiortcs_reads(csrc: int, mid: str | None,
                                             padding: int) -> None:
    """The direct receive path (section 4) reads the AI's RTP with the phone leg's parser."""
    data, extensions = _wire(csrc, mid, padding)
    packet = RtpPacket.parse(data, extensions)
    assert parse_rtp(data) == (packet.payload_type, packet.sequence_number, packet.timestamp,
                               packet.ssrc, bool(packet.marker), packet.payload)
    assert packet.payload == bytes(range(60))


def _truncated_extension() -> bytes:
    data, _ = _wire(0, "0")
    return data[:14]


@pytest.mark.parametrize("data", [
    b"\x80\x6f\x00",  # shorter than a header
    bytes([0x40]) + _wire()[0][1:],  # version 1
    bytes([0x83]) + _wire()[0][1:16],  # three CSRCs announced, one there
    pytest.param(_truncated_extension(), id="truncated extension"),
    _wire(padding=4)[0][:-1] + b"\x00",  # padding length 0
    _wire(padding=4)[0][:-1] + b"\xff",  # padding longer than the payload
])
def test_our_parser_refuses_what_aiortcs_refuses(data: bytes) -> None:
    with pytest.raises(ValueError):
        RtpPacket.parse(data, HeaderExtensionsMap())
    with pytest.raises(RtpParseError):
        parse_rtp(data)


def test_ntp_now_is_aiortcs_ntp_clock() -> None:
    from aiortc import clock

    from gateway.aiortc_patches import ntp_now

    before, ours, after = clock.current_ntp_time(), ntp_now(), clock.current_ntp_time()
    one_ms = (1 << 32) // 1000
    assert before - one_ms <= ours <= after + one_ms


def test_the_adapter_decodes_opus_and_counts_other_payload_types() -> None:
    """What `_ReceiverAdapter.add` does per packet (the reorder buffer releasing at once):
    Opus is decoded and delivered; another payload type is counted, by the codec aiortc
    holds for it now (a codec renegotiated under the same payload type counts as the new
    one)."""
    import numpy as np
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    from gateway.aiortc_patches import _AudioPacket
    from gateway.media.libopus import Encoder
    from tests.media.audio import tone

    class Receiver:
        def __init__(self) -> None:
            opus = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2,
                                         payloadType=111)
            pcmu = RTCRtpCodecParameters(mimeType="audio/PCMU", clockRate=8000, payloadType=0)
            self._RTCRtpReceiver__codecs = {111: opus, 0: pcmu}
            self._RTCRtpReceiver__jitter_buffer = None

    receiver = Receiver()
    delivered: list[np.ndarray] = []
    tune_receiver(receiver, deliver=delivered.append)  # type: ignore[arg-type]
    adapter = receiver._RTCRtpReceiver__jitter_buffer
    adapter._direct = True  # as after the first packet: no DTLS transport to reach into here
    encoder = Encoder(48000, 32000, 5)
    speech = tone(440, 0.2, 48000)

    def packet(seq: int, pt: int, data: bytes) -> _AudioPacket:
        p = _AudioPacket()
        p.sequence_number, p.timestamp, p.payload_type, p._data = seq, seq * 960, pt, data
        return p

    for seq in range(3):
        adapter.add(packet(seq, 111, encoder.encode(speech[seq * 960:(seq + 1) * 960])))
    adapter.add(packet(3, 0, b"\xff" * 160))
    assert [len(pcm) for pcm in delivered] == [160, 160, 160] and adapter.not_opus == 1
    receiver._RTCRtpReceiver__codecs[111] = RTCRtpCodecParameters(
        mimeType="audio/PCMA", clockRate=8000, payloadType=111)
    adapter.add(packet(4, 111, b"\xd5" * 160))
    assert len(delivered) == 3 and adapter.not_opus == 2
    encoder.close()

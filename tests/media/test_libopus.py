"""libopus through ctypes (media/libopus.py): rates, bad input, closing, where the library is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gateway.media import libopus
from tests.media.audio import dominant_hz, rms_dbfs, tone


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_round_trip_keeps_a_tone_at_every_rate(rate: int) -> None:
    enc, dec = libopus.Encoder(rate, 32000, 3), libopus.Decoder(rate)
    src = tone(600, 1.0, rate, dbfs=-12)
    n = rate // 50
    out = np.concatenate([dec.decode(enc.encode(src[i : i + n]))
                          for i in range(0, len(src) - n + 1, n)])
    assert out.dtype == np.int16 and out.shape == (len(src) // n * n,)
    assert abs(dominant_hz(out[rate // 5 :], rate) - 600) <= 5
    assert abs(rms_dbfs(out[rate // 5 :]) - rms_dbfs(src)) <= 1.5


def test_decoding_at_another_rate_than_encoded() -> None:
    """The AI's 48 kHz Opus decoded straight to the phone's 8 kHz: 160 samples per 20 ms."""
    enc, dec = libopus.Encoder(48000, 64000, 3), libopus.Decoder(8000)
    src = tone(1000, 1.0, 48000, dbfs=-12)
    out = [dec.decode(enc.encode(src[i : i + 960])) for i in range(0, 48000, 960)]
    assert {o.shape for o in out} == {(160,)}
    assert abs(dominant_hz(np.concatenate(out)[1600:], 8000) - 1000) <= 5


def test_decoded_samples_are_a_copy() -> None:
    enc, dec = libopus.Encoder(8000, 24000, 3), libopus.Decoder(8000)
    src = tone(440, 0.2, 8000, dbfs=-12)
    first = dec.decode(enc.encode(src[:160]))
    kept = first.copy()
    dec.decode(enc.encode(src[160:320]))
    assert np.array_equal(first, kept)  # the next decode did not overwrite it


def test_bad_input_raises_a_clear_error_and_the_state_survives() -> None:
    enc, dec = libopus.Encoder(8000, 24000, 3), libopus.Decoder(8000)
    with pytest.raises(libopus.OpusError, match="opus_decode"):
        dec.decode(b"\xff\xff\xff")
    with pytest.raises(libopus.OpusError, match="opus_encode"):
        enc.encode(np.zeros(100, dtype=np.int16))  # not an Opus frame size at 8 kHz
    assert dec.decode(enc.encode(np.zeros(160, dtype=np.int16))).shape == (160,)
    with pytest.raises(libopus.OpusError, match="opus_decoder_create"):
        libopus.Decoder(44100)  # not a rate Opus decodes to
    with pytest.raises(libopus.OpusError, match=r"opus_encoder_ctl\(4010, 11\)"):
        libopus.Encoder(8000, 24000, 11)


def test_closed_codecs_refuse_work_and_close_twice() -> None:
    enc, dec = libopus.Encoder(8000, 24000, 3), libopus.Decoder(8000)
    packet = enc.encode(np.zeros(160, dtype=np.int16))
    enc.close()
    enc.close()
    dec.close()
    with pytest.raises(RuntimeError, match="closed"):
        enc.encode(np.zeros(160, dtype=np.int16))
    with pytest.raises(RuntimeError, match="closed"):
        dec.decode(packet)


def test_the_library_is_pyavs_when_loaded_else_the_systems(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 0 00:00 0 /opt/av.libs/libopus-1234.so.0.11.1\n"
                    "7f01-7f02 r-xp 0 00:00 0 /usr/lib/libc.so.6\n")
    assert libopus._candidates(str(maps))[0] == "/opt/av.libs/libopus-1234.so.0.11.1"
    assert libopus._candidates(str(tmp_path / "missing"))[:1] in ([], ["libopus.so.0"])

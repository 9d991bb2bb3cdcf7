"""What the caller's Opus encoder complexity costs and what it buys (issue 11 item 5).

The caller's audio reaches us as G.711 and goes to the AI as narrowband Opus (8 kHz, 24 kb/s,
VoIP: `transcode.OpusPhoneEncoder`). For each libopus complexity this prints the encoder's
time per 20 ms frame (best of three passes, one core) and what survives the round trip
G.711 → Opus → 8 kHz PCM on speech-like signals (`media_signal.speech_like`, several seeds):

- LSD: log-spectral distance, 90–3,500 Hz, over frames above −40 dBFS (lower is better);
- segSNR: segmental SNR over the same frames (higher is better);
- pitch errors: voiced frames whose autocorrelation pitch differs by more than 20 % (or
  vanishes) after the round trip.

SILK (Opus's speech coder) has five complexity tiers: 0–1, 2–3, 4–5, 6–7, 8–10
(libopus `silk/control_codec.c`); complexities within a tier differ only in bit allocation.

    python bench/opus_complexity.py [--seconds 20] [--seeds 5 7 11]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from media_signal import speech_like

from gateway.media import libopus
from gateway.media.transcode import PHONE_FRAME_SAMPLES, PHONE_RATE, G711Codec

BITRATE = 24000  # OpusPhoneEncoder's
COMPLEXITIES = (0, 1, 2, 3, 5, 10)
_WINDOW = 256
_LOUD = (32767 * 10 ** (-40 / 20)) ** 2  # mean square of a −40 dBFS frame


def frames(x: np.ndarray) -> list[np.ndarray]:
    n = PHONE_FRAME_SAMPLES
    return [x[i : i + n] for i in range(0, len(x) - n + 1, n)]


def encode_us(x: np.ndarray, complexity: int) -> float:
    best = float("inf")
    chunks = frames(x)
    for _ in range(3):
        encoder = libopus.Encoder(PHONE_RATE, BITRATE, complexity)
        t0 = time.perf_counter()
        for chunk in chunks:
            encoder.encode(chunk)
        best = min(best, (time.perf_counter() - t0) / len(chunks) * 1e6)
        encoder.close()
    return best


def round_trip(x: np.ndarray, complexity: int) -> tuple[np.ndarray, float]:
    encoder = libopus.Encoder(PHONE_RATE, BITRATE, complexity)
    decoder = libopus.Decoder(PHONE_RATE)
    packets = [encoder.encode(chunk) for chunk in frames(x)]
    y = np.concatenate([decoder.decode(p) for p in packets])
    kbps = sum(len(p) for p in packets) * 8 / (len(packets) * 0.02) / 1000
    encoder.close()
    decoder.close()
    return y, kbps


def align(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop the codec's delay (found by cross-correlation) so sample i matches sample i."""
    n = 2 * PHONE_RATE
    c = np.correlate(y[: n + 400].astype(float), x[:n].astype(float), "valid")
    d = int(np.argmax(c))
    y = y[d:]
    m = min(len(x), len(y))
    return x[:m], y[:m]


def lsd_and_segsnr(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    window = np.hanning(_WINDOW)
    band = slice(3, _WINDOW // 2 * 3500 // 4000)  # bins of 90–3,500 Hz
    lsd, seg = [], []
    for i in range(0, len(x) - _WINDOW, PHONE_FRAME_SAMPLES):
        a = x[i : i + _WINDOW].astype(float)
        b = y[i : i + _WINDOW].astype(float)
        if np.mean(a * a) < _LOUD:
            continue
        pa = np.abs(np.fft.rfft(a * window)) ** 2 + 1e-3
        pb = np.abs(np.fft.rfft(b * window)) ** 2 + 1e-3
        lsd.append(np.sqrt(np.mean((10 * np.log10(pa[band] / pb[band])) ** 2)))
        err = np.sum((a - b) ** 2) + 1e-9
        seg.append(np.clip(10 * np.log10(np.sum(a * a) / err), -10, 35))
    return float(np.mean(lsd)), float(np.mean(seg))


def pitch_hz(frame: np.ndarray) -> float:
    """Autocorrelation pitch in 60–400 Hz, 0 when the frame is not clearly periodic."""
    f = frame.astype(float) - frame.mean()
    ac = np.correlate(f, f, "full")[len(f) - 1 :]
    lo, hi = PHONE_RATE // 400, PHONE_RATE // 60
    k = lo + int(np.argmax(ac[lo:hi]))
    return PHONE_RATE / k if ac[k] > 0.3 * ac[0] else 0.0


def pitch_errors(x: np.ndarray, y: np.ndarray) -> tuple[int, int]:
    voiced = errors = 0
    n = 2 * PHONE_FRAME_SAMPLES
    for i in range(0, len(x) - n, PHONE_FRAME_SAMPLES):
        a = pitch_hz(x[i : i + n])
        if not a:
            continue
        voiced += 1
        b = pitch_hz(y[i : i + n])
        errors += b == 0 or abs(b - a) / a > 0.2
    return errors, voiced


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[5, 7, 11])
    args = ap.parse_args()
    g711 = G711Codec("PCMU")
    signals = [g711.decode(g711.encode(speech_like(PHONE_RATE, args.seconds, seed)))
               for seed in args.seeds]
    print(f"Opus {BITRATE // 1000} kb/s, 8 kHz mono, VoIP; speech-like, {args.seconds:.0f} s "
          f"x seeds {args.seeds}, through G.711 first")
    print("complexity  encode us/frame  kb/s   LSD dB  segSNR dB  pitch errors")
    for complexity in COMPLEXITIES:
        us = float(np.median([encode_us(x, complexity) for x in signals]))
        kbps, lsd, seg, err, voiced = [], [], [], 0, 0
        for x in signals:
            y, rate = round_trip(x, complexity)
            a, b = align(x, y)
            d, s = lsd_and_segsnr(a, b)
            e, v = pitch_errors(a, b)
            kbps.append(rate)
            lsd.append(d)
            seg.append(s)
            err += e
            voiced += v
        print(f"{complexity:>10}  {us:15.1f}  {np.mean(kbps):4.1f}  {np.mean(lsd):7.3f}  "
              f"{np.mean(seg):9.2f}  {err}/{voiced} ({100 * err / voiced:.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""baresip as a real softphone caller: plays a WAV file and records what it hears.

baresip (1.0) is configured from scratch in a temporary directory, loopback only: SIP and RTP
bound to 127.0.0.1 (`net_interface 127.0.0.1`, else it would put the host's LAN address in its
SDP), no registration, no STUN, only the modules needed — `aufile` as the microphone (the
WAV, 8 kHz mono), `aubridge` as a silent speaker, and `sndfile`, the audio filter that dumps
both directions to WAV files: `dump-...-dec.wav` is exactly the decoded audio it received.
`-t SECONDS` makes it hang up (BYE) and quit.

For secure calls (`tls=`): `sip_cafile` is the CA baresip trusts for our certificate,
`sip_certificate` its own certificate and key in one PEM (mutual TLS), and the `srtp` module
with `mediaenc=srtp-mand` makes it offer `RTP/SAVP` with `a=crypto` and refuse plain RTP.
"""

from __future__ import annotations

import asyncio
import shutil
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.integration.pcap import Pcm
from tests.integration.stack import free_sip_port, free_udp_range

BARESIP = shutil.which("baresip")
RATE = 8000


@dataclass(frozen=True, slots=True)
class BaresipRun:
    returncode: int
    output: str
    heard: Pcm  # what it received and decoded, 8 kHz mono (empty if no dump was written)


def write_wav(path: Path, pcm: Pcm, rate: int = RATE) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.astype("<i2").tobytes())
    return path


def read_wav(path: Path) -> Pcm:
    with wave.open(str(path), "rb") as src:
        assert src.getsampwidth() == 2 and src.getframerate() == RATE, path
        data = np.frombuffer(src.readframes(src.getnframes()), dtype="<i2")
        return data.reshape(-1, src.getnchannels())[:, 0].astype(np.int16)


@dataclass(frozen=True, slots=True)
class BaresipTls:
    cafile: Path  # the CA that signed the gateway's certificate
    certificate: Path | None = None  # client certificate + key in one PEM, for mutual TLS


def _config(workdir: Path, wav: Path, tls: BaresipTls | None = None,
            srtp: bool = False) -> str:
    sip_port = free_sip_port()
    rtp_min, rtp_max = free_udp_range(8)
    lines = {
        "poll_method": "epoll",
        "net_interface": "127.0.0.1",
        "sip_listen": f"127.0.0.1:{sip_port}",
        "rtp_ports": f"{rtp_min}-{rtp_max}",
        "audio_source": f"aufile,{wav}",
        "audio_player": "aubridge,speaker",
        "audio_alert": "aubridge,speaker",
        "ausrc_srate": "8000",
        "ausrc_channels": "1",
        "snd_path": str(workdir),
        "module_path": "/usr/lib/baresip/modules",
    }
    if tls is not None:
        lines["sip_cafile"] = str(tls.cafile)
        if tls.certificate is not None:
            lines["sip_certificate"] = str(tls.certificate)
    modules = ["module\t\tg711.so", "module\t\taufile.so", "module\t\taubridge.so",
               "module\t\tsndfile.so", "module_app\taccount.so", "module_app\tmenu.so"]
    if srtp:
        modules.append("module\t\tsrtp.so")
    return "\n".join([*(f"{k}\t\t{v}" for k, v in lines.items()), *modules, ""])


async def baresip_call(target: str, workdir: Path, wav: Path, *, codec: str = "PCMU",
                       seconds: int = 6, tls: BaresipTls | None = None,
                       mediaenc: str | None = None) -> BaresipRun:
    """Dial `target` (a SIP URI, `;transport=tcp|tls` allowed), talk for `seconds`, hang up.

    `mediaenc`: baresip's media encryption for the account, e.g. "srtp-mand"."""
    assert BARESIP is not None
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config").write_text(_config(workdir, wav, tls, srtp=mediaenc is not None))
    account = "<sip:baresip@127.0.0.1;transport=tls>" if tls else "<sip:baresip@127.0.0.1>"
    enc = f";mediaenc={mediaenc}" if mediaenc else ""
    (workdir / "accounts").write_text(f"{account};regint=0;audio_codecs={codec}{enc}\n")
    (workdir / "contacts").write_text("")
    proc = await asyncio.create_subprocess_exec(
        BARESIP, "-f", str(workdir), "-e", f"/dial {target}", "-t", str(seconds),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, cwd=workdir,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), seconds + 15)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
    dumps = sorted(workdir.glob("dump-*-dec.wav"))
    heard = read_wav(dumps[-1]) if dumps else np.zeros(0, dtype=np.int16)
    return BaresipRun(proc.returncode or 0, out.decode(errors="replace"), heard)

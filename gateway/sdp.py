"""SIP-side SDP offer/answer: parse the caller's offer, choose G.711, build our answer.

Owns RFC 4566 parsing (the subset a G.711 phone leg needs) and the RFC 3264 answer rules:
one answer m-line per offered m-line (rejected streams get port 0, §6), the first usable
audio stream carries the call, the direction attribute is mirrored (§6.1), and hold is
understood both as `a=sendonly`/`a=inactive` and as the RFC 2543 `c=0.0.0.0` form (§8.4).
Re-INVITE offers go through the same two functions with an incremented `o=` version (§8).

SRTP with SDES (RFC 4568) follows the trunk's `srtp` policy: `RTP/SAVP` streams (and
`RTP/AVP` streams carrying `a=crypto`, the best-effort form some SBCs send) are answered with
the first offered crypto line we support and a fresh key of ours (`media/srtp.py`); "optional"
prefers such a stream and falls back to plain RTP; "required" answers 488 with Warning 302
when no SRTP is offered (306 when only suites we do not know are); "off" takes plain RTP only.

The result is `MediaParams`, the only contract between signalling and media. Failures are
`SdpNegotiationError` values carrying the SIP status (488) and a Warning code (RFC 3261 §20.43)
so the call layer has one teardown path.
"""

from __future__ import annotations

import contextlib
import enum
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.media.srtp import SdesCrypto, SrtpParams, choose_params, parse_crypto
from gateway.outcomes import Outcome

# Static payload types we understand without an rtpmap (RFC 3551 §6).
_STATIC_AUDIO: dict[int, tuple[str, int]] = {0: ("PCMU", 8000), 8: ("PCMA", 8000)}
SUPPORTED_CODECS = ("PCMU", "PCMA")
_SUPPORTED_PROTO = "RTP/AVP"
_SECURE_PROTO = "RTP/SAVP"
SRTP_POLICIES = ("off", "optional", "required")
ANSWER_PTIME_MS = 20  # what we send when the offer names no packet time we support
PACKET_TIMES_MS = frozenset({10, 20, 30, 40})  # a=ptime values we send as asked (RFC 3264 §5)
_MAX_SDP_BYTES = 16384


class Direction(enum.Enum):
    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    def reversed(self) -> Direction:
        """The direction the answerer uses for an offered direction (RFC 3264 §6.1)."""
        return _REVERSED[self]

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)


_REVERSED = {
    Direction.SENDRECV: Direction.SENDRECV,
    Direction.SENDONLY: Direction.RECVONLY,
    Direction.RECVONLY: Direction.SENDONLY,
    Direction.INACTIVE: Direction.INACTIVE,
}


class SdpNegotiationError(Exception):
    """An offer we answer with 488 Not Acceptable Here and a Warning header.

    `warn_code` is the RFC 3261 warn-code, `warning` the quoted warn-text; the call layer adds
    its own host as warn-agent: `Warning: 305 gw.example "Incompatible media format"`. The
    error classifies itself: `outcome` is the call's outcome (status, metric result).
    """

    outcome = Outcome.BAD_OFFER

    def __init__(self, warning: str, warn_code: int = 399) -> None:
        super().__init__(warning)
        self.warning = warning
        self.warn_code = warn_code

    @property
    def sip_warning(self) -> tuple[int, str]:
        return self.warn_code, self.warning


class NoCommonCodec(SdpNegotiationError):
    """The offer has an audio stream we could use, but none of our codecs."""

    outcome = Outcome.NO_CODEC

    def __init__(self, warning: str = "Incompatible media format: PCMU/PCMA required") -> None:
        super().__init__(warning, warn_code=305)


class UnusableOffer(SdpNegotiationError):
    """Malformed SDP, no audio stream, or only transports the trunk's policy refuses (plain RTP
    where SRTP is required, RTP/SAVP where it is off)."""


@dataclass(frozen=True, slots=True)
class PayloadFormat:
    payload_type: int
    encoding: str  # as written in rtpmap, e.g. "PCMU", "telephone-event"
    clock_rate: int
    fmtp: str | None = None


@dataclass(frozen=True, slots=True)
class MediaDescription:
    media: str
    port: int
    proto: str
    formats: tuple[PayloadFormat, ...]  # in offer order (the offerer's preference)
    connection: str | None  # media-level c= address, if any
    ptime_ms: int | None
    direction: Direction | None  # media-level attribute, if any
    crypto: tuple[SdesCrypto, ...] = ()  # usable a=crypto lines, in offer order (RFC 4568)
    crypto_lines: int = 0  # every a=crypto line, usable or not

    @property
    def secure_proto(self) -> bool:
        return self.proto.upper() == _SECURE_PROTO


@dataclass(frozen=True, slots=True)
class Offer:
    origin_username: str
    session_id: str
    session_version: int
    connection: str | None  # session-level c= address
    direction: Direction | None  # session-level attribute
    media: tuple[MediaDescription, ...]


@dataclass(frozen=True, slots=True)
class MediaParams:
    """What the media plane needs for one call; replaced as a whole on re-INVITE."""

    remote_address: str
    remote_port: int
    codec: str  # "PCMU" or "PCMA"
    payload_type: int
    clock_rate: int
    ptime_ms: int  # what we send
    telephone_event_pt: int | None
    direction: Direction  # our direction, as written in the answer
    on_hold: bool  # the caller put us on hold (sendonly/inactive offer or c=0.0.0.0)
    remote_ptime_ms: int | None = None
    srtp: SrtpParams | None = None  # SDES keys when the stream is SRTP (keys hidden in repr)

    @property
    def send_enabled(self) -> bool:
        return self.direction.sends and not self.on_hold_address

    @property
    def receive_enabled(self) -> bool:
        return self.direction.receives

    @property
    def on_hold_address(self) -> bool:
        return self.remote_address in ("0.0.0.0", "::")


def parse_offer(sdp: str) -> Offer:
    """Parse an SDP body (RFC 4566). Liberal: unknown lines are ignored, CRLF or LF accepted."""
    if len(sdp) > _MAX_SDP_BYTES:
        raise UnusableOffer("SDP too large")
    origin: tuple[str, str, int] | None = None
    session_conn: str | None = None
    session_dir: Direction | None = None
    media: list[_MediaBuilder] = []
    for raw in sdp.splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:].strip()
        current = media[-1] if media else None
        if kind == "o":
            origin = _parse_origin(value)
        elif kind == "c":
            address = _parse_connection(value)
            if current is None:
                session_conn = address
            else:
                current.connection = address
        elif kind == "m":
            media.append(_parse_media_line(value))
        elif kind == "a":
            name, _, arg = value.partition(":")
            direction = _direction(name)
            if direction is not None:
                if current is None:
                    session_dir = direction
                else:
                    current.direction = direction
            elif current is not None:
                current.attribute(name, arg)
    if origin is None:
        raise UnusableOffer("SDP without o= line")
    if not media:
        raise UnusableOffer("SDP without media", warn_code=304)
    return Offer(
        origin_username=origin[0],
        session_id=origin[1],
        session_version=origin[2],
        connection=session_conn,
        direction=session_dir,
        media=tuple(m.build() for m in media),
    )


def negotiate(
    offer: Offer,
    codec_preference: Sequence[str],
    local_address: str,
    local_port: int,
    session_id: int,
    session_version: int,
    ptime_ms: int | None = None,
    *,
    srtp: str = "off",
    previous_srtp: SrtpParams | None = None,
) -> tuple[MediaParams, str]:
    """Choose the stream and codec, and build the answer SDP (RFC 3264 §6).

    Packet time (RFC 3264 §5): we send at the offer's `a=ptime` when it is one of
    `PACKET_TIMES_MS`, else at `ptime_ms` (default `ANSWER_PTIME_MS`); the answer's `a=ptime`
    says which.

    `codec_preference` is ours (config); the first of our codecs the offer carries wins.
    `srtp` is the trunk's policy ("off", "optional", "required"); `previous_srtp` the keys
    in use (a re-INVITE, or the same offer answered again), kept while the peer keeps its key.
    Raises `NoCommonCodec` or `UnusableOffer` (both 488).
    """
    prefs = [c.upper() for c in codec_preference if c.upper() in SUPPORTED_CODECS]
    if not prefs:
        raise ValueError("codec_preference names neither PCMU nor PCMA")
    if srtp not in SRTP_POLICIES:
        raise ValueError(f"srtp policy {srtp!r} is not one of {SRTP_POLICIES}")
    chosen_index: int | None = None
    chosen: tuple[PayloadFormat, PayloadFormat | None] | None = None
    secure = False
    saw_audio_rtp = False
    # "optional" looks for an SRTP stream first, then a plain one; the others look once.
    passes = {"off": (False,), "optional": (True, False), "required": (True,)}[srtp]
    for want_secure in passes:
        for index, m in enumerate(offer.media):
            if not _acceptable(m, want_secure):
                continue
            saw_audio_rtp = True
            pick = _choose_codec(m, prefs)
            if pick is not None:
                chosen_index, chosen, secure = index, pick, want_secure
                break
        if chosen is not None:
            break
    if chosen is None or chosen_index is None:
        if saw_audio_rtp:
            raise NoCommonCodec()
        audio = [m for m in offer.media if m.media == "audio" and m.port != 0]
        if srtp == "required" and any(m.crypto_lines for m in audio):
            raise UnusableOffer("Attribute not understood: no a=crypto suite we support "
                                "(AES_CM_128_HMAC_SHA1_80/32, AEAD_AES_128_GCM)", warn_code=306)
        if srtp == "required" and audio:
            raise UnusableOffer("Incompatible transport protocol: SRTP (RTP/SAVP with "
                                "a=crypto) required", warn_code=302)
        if audio:
            raise UnusableOffer("Incompatible transport protocol: RTP/AVP required", warn_code=302)
        raise UnusableOffer("Media type not available: no audio stream", warn_code=304)

    stream = offer.media[chosen_index]
    address = stream.connection or offer.connection
    if address is None:
        raise UnusableOffer("Offer without connection address")
    offered_dir = stream.direction or offer.direction or Direction.SENDRECV
    hold_address = address in ("0.0.0.0", "::")
    our_dir = offered_dir.reversed()
    codec, dtmf = chosen
    params = MediaParams(
        remote_address=address,
        remote_port=stream.port,
        codec=codec.encoding.upper(),
        payload_type=codec.payload_type,
        clock_rate=codec.clock_rate,
        ptime_ms=(stream.ptime_ms if stream.ptime_ms in PACKET_TIMES_MS
                  else ptime_ms or ANSWER_PTIME_MS),
        telephone_event_pt=dtmf.payload_type if dtmf else None,
        direction=our_dir,
        on_hold=hold_address or offered_dir in (Direction.SENDONLY, Direction.INACTIVE),
        remote_ptime_ms=stream.ptime_ms,
        srtp=choose_params(stream.crypto[0], previous_srtp) if secure else None,
    )
    answer = _build_answer(
        offer, chosen_index, params, codec, dtmf, local_address, local_port,
        session_id, session_version,
    )
    return params, answer


# ---------------------------------------------------------------------------- internals


def _acceptable(m: MediaDescription, secure: bool) -> bool:
    """An audio stream we could carry the call on, as SRTP (`secure`) or as plain RTP."""
    if m.media != "audio" or m.port == 0:
        return False
    proto = m.proto.upper()
    if secure:
        return proto in (_SECURE_PROTO, _SUPPORTED_PROTO) and bool(m.crypto)
    return proto == _SUPPORTED_PROTO


class _MediaBuilder:
    __slots__ = ("connection", "crypto", "crypto_lines", "direction", "fmtp", "formats", "media",
                 "port", "proto", "ptime", "rtpmap")

    def __init__(self, media: str, port: int, proto: str, formats: list[int]) -> None:
        self.media, self.port, self.proto, self.formats = media, port, proto, formats
        self.connection: str | None = None
        self.direction: Direction | None = None
        self.ptime: int | None = None
        self.rtpmap: dict[int, tuple[str, int]] = {}
        self.fmtp: dict[int, str] = {}
        self.crypto: list[SdesCrypto] = []
        self.crypto_lines = 0

    def attribute(self, name: str, arg: str) -> None:
        if name == "rtpmap":
            pt_text, _, spec = arg.partition(" ")
            parts = spec.strip().split("/")
            try:
                pt, rate = int(pt_text), int(parts[1])
            except (ValueError, IndexError):
                return  # liberal: a broken rtpmap just makes that format unknown
            self.rtpmap[pt] = (parts[0], rate)
        elif name == "fmtp":
            pt_text, _, params = arg.partition(" ")
            if pt_text.isdigit():
                self.fmtp[int(pt_text)] = params.strip()
        elif name == "ptime":
            with contextlib.suppress(ValueError):
                self.ptime = int(float(arg))
        elif name == "crypto":
            self.crypto_lines += 1
            if len(self.crypto) < 16 and (crypto := parse_crypto(arg)) is not None:
                self.crypto.append(crypto)

    def build(self) -> MediaDescription:
        formats = []
        for pt in self.formats:
            spec = self.rtpmap.get(pt) or _STATIC_AUDIO.get(pt)
            if spec is None:
                continue
            formats.append(PayloadFormat(pt, spec[0], spec[1], self.fmtp.get(pt)))
        return MediaDescription(
            media=self.media,
            port=self.port,
            proto=self.proto,
            formats=tuple(formats),
            connection=self.connection,
            ptime_ms=self.ptime,
            direction=self.direction,
            crypto=tuple(self.crypto),
            crypto_lines=self.crypto_lines,
        )


def _parse_origin(value: str) -> tuple[str, str, int]:
    parts = value.split()
    if len(parts) != 6:
        raise UnusableOffer("Malformed o= line")
    try:
        version = int(parts[2])
    except ValueError as exc:
        raise UnusableOffer("Malformed o= version") from exc
    return parts[0], parts[1], version


def _parse_connection(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise UnusableOffer("Malformed c= line")
    address = parts[2].split("/")[0]  # drop multicast TTL/count
    try:
        ipaddress.ip_address(address)
    except ValueError as exc:
        # FQDNs are legal in SDP but we do not resolve names on the media path.
        raise UnusableOffer("c= address is not an IP literal") from exc
    return address


def _parse_media_line(value: str) -> _MediaBuilder:
    parts = value.split()
    if len(parts) < 4:
        raise UnusableOffer("Malformed m= line")
    port_text = parts[1].split("/")[0]
    if not port_text.isdigit() or int(port_text) > 65535:
        raise UnusableOffer("Malformed m= port")
    formats = [int(f) for f in parts[3:] if f.isdigit() and int(f) < 128]
    return _MediaBuilder(parts[0].lower(), int(port_text), parts[2], formats)


def _direction(name: str) -> Direction | None:
    try:
        return Direction(name)
    except ValueError:
        return None


def _choose_codec(
    m: MediaDescription, prefs: Sequence[str]
) -> tuple[PayloadFormat, PayloadFormat | None] | None:
    codec: PayloadFormat | None = None
    for name in prefs:
        codec = next(
            (f for f in m.formats if f.encoding.upper() == name and f.clock_rate == 8000), None
        )
        if codec is not None:
            break
    if codec is None:
        return None
    dtmf = next(
        (f for f in m.formats
         if f.encoding.lower() == "telephone-event" and f.clock_rate == codec.clock_rate),
        None,
    )
    return codec, dtmf


def _addr_type(address: str) -> str:
    return "IP6" if ipaddress.ip_address(address).version == 6 else "IP4"


def _build_answer(
    offer: Offer,
    chosen_index: int,
    params: MediaParams,
    codec: PayloadFormat,
    dtmf: PayloadFormat | None,
    local_address: str,
    local_port: int,
    session_id: int,
    session_version: int,
) -> str:
    at = _addr_type(local_address)
    lines = [
        "v=0",
        f"o=orga-sip-gateway {session_id} {session_version} IN {at} {local_address}",
        "s=orga-sip-gateway",
        f"c=IN {at} {local_address}",
        "t=0 0",
    ]
    for index, m in enumerate(offer.media):
        if index != chosen_index:
            # RFC 3264 §6: reject with port 0, keep one format from the offer.
            fmt = m.formats[0].payload_type if m.formats else 0
            lines.append(f"m={m.media} 0 {m.proto} {fmt}")
            continue
        fmts = [str(codec.payload_type)]
        if dtmf is not None:
            fmts.append(str(dtmf.payload_type))
        # Our answer mirrors the offered profile (RTP/SAVP, or best-effort RTP/AVP+crypto).
        proto = m.proto if params.srtp is not None else _SUPPORTED_PROTO
        lines.append(f"m=audio {local_port} {proto} {' '.join(fmts)}")
        lines.append(f"a=rtpmap:{codec.payload_type} {codec.encoding.upper()}/{codec.clock_rate}")
        if dtmf is not None:
            lines.append(f"a=rtpmap:{dtmf.payload_type} telephone-event/{dtmf.clock_rate}")
            lines.append(f"a=fmtp:{dtmf.payload_type} 0-15")
        lines.append(f"a=ptime:{params.ptime_ms}")
        lines.append(f"a={params.direction.value}")
        if params.srtp is not None:
            lines.append(f"a=crypto:{params.srtp.answer_attribute()}")
    return "\r\n".join(lines) + "\r\n"

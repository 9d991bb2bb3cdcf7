"""SRTP on the phone leg with SDES keys (RFC 3711, RFC 4568 SDES, RFC 7714 AES-GCM).

Owns the crypto suites we speak, the `a=crypto` attribute's value (parse what a peer offers,
write what we answer), fresh master keys, and one call's SRTP contexts (libsrtp through
`pylibsrtp`, the library aiortc already uses for DTLS-SRTP):

- `SrtpParams` is what offer/answer agreed: the suite, the offer's tag, our key (protects what
  we send) and the peer's key (authenticates and decrypts what we receive). It rides in
  `MediaParams`; re-INVITE negotiation produces a new one, and `SrtpContext.update` re-keys
  only the direction whose key changed, so a refresh that keeps the keys keeps the replay
  state and the rollover counters.
- Incoming packets are matched by any SSRC (libsrtp's `ssrc_any_inbound` template), so a peer
  that changes SSRC (re-INVITE, SBC failover) keeps flowing; libsrtp adds a stream for a new
  SSRC only once a packet authenticated, so bogus packets cannot grow the session. Replays
  within and behind the 128-packet window are refused.
- An unprotect failure is never fatal: the packet is dropped and counted by reason
  (`auth`, `replay`, `malformed`), for `rtp_srtp_failures_total`.

Keys are secrets: `SrtpKey` never shows its bytes in a repr or str, so `MediaParams`, logs and
exceptions cannot leak them; only `inline()` (for our SDP answer) and the libsrtp policy see
them. Crypto lines with MKIs, several keys or session parameters other than `KDR=0` and
`WSH` are skipped (RFC 4568 §5.1.2/§6.1: an answerer rejects what it does not support).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hmac
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

import pylibsrtp

log = logging.getLogger(__name__)


class SrtpSuite(enum.Enum):
    AES_CM_128_HMAC_SHA1_80 = "AES_CM_128_HMAC_SHA1_80"
    AES_CM_128_HMAC_SHA1_32 = "AES_CM_128_HMAC_SHA1_32"
    AEAD_AES_128_GCM = "AEAD_AES_128_GCM"  # RFC 7714 §12: 16-byte key, 12-byte salt

    @property
    def key_length(self) -> int:
        """Master key plus master salt, as carried base64-encoded in `inline:`."""
        return 28 if self is SrtpSuite.AEAD_AES_128_GCM else 30

    @property
    def profile(self) -> int:
        return int(_PROFILES[self])


_PROFILES: dict[SrtpSuite, int] = {
    SrtpSuite.AES_CM_128_HMAC_SHA1_80: pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    SrtpSuite.AES_CM_128_HMAC_SHA1_32: pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    SrtpSuite.AEAD_AES_128_GCM: pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
}


def _available(suite: SrtpSuite) -> bool:
    """libsrtp builds without OpenSSL/NSS lack GCM: offer and accept only what works here."""
    try:
        pylibsrtp.Session(pylibsrtp.Policy(key=bytes(suite.key_length),
                                           ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                                           srtp_profile=suite.profile))
    except (pylibsrtp.Error, ValueError):
        return False
    return True


SUPPORTED_SUITES: tuple[SrtpSuite, ...] = tuple(s for s in SrtpSuite if _available(s))


class SrtpKey:
    """An SRTP master key with its salt; its repr and str never show the bytes."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = bytes(value)

    @classmethod
    def generate(cls, suite: SrtpSuite) -> SrtpKey:
        return cls(os.urandom(suite.key_length))

    def reveal(self) -> bytes:
        return self._value

    def inline(self) -> str:
        """The key as written in SDP (`inline:` value, RFC 4568 §6.1)."""
        return base64.b64encode(self._value).decode("ascii")

    def __repr__(self) -> str:
        return "SrtpKey('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SrtpKey) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class SdesCrypto:
    """One usable `a=crypto` attribute of an offer (RFC 4568 §9.1)."""

    tag: int
    suite: SrtpSuite
    key: SrtpKey

    def attribute(self) -> str:
        """The attribute value: `<tag> <suite> inline:<key||salt>`."""
        return f"{self.tag} {self.suite.value} inline:{self.key.inline()}"


@dataclass(frozen=True, slots=True)
class SrtpParams:
    """What SDES negotiation agreed for one call (both keys hidden in any repr)."""

    suite: SrtpSuite
    tag: int
    local: SrtpKey  # ours: protects what we send; written in our answer
    remote: SrtpKey  # the peer's: checks and decrypts what we receive

    def answer_attribute(self) -> str:
        return SdesCrypto(self.tag, self.suite, self.local).attribute()


_CRYPTO_RE = re.compile(r"^(\d{1,9})\s+(\S+)\s+(\S+)(?:\s+(.*))?$")
_LIFETIME_RE = re.compile(r"^(?:2\^\d{1,2}|\d{1,20})$")
_SUITES_BY_NAME = {s.value: s for s in SUPPORTED_SUITES}


def parse_crypto(value: str) -> SdesCrypto | None:
    """An `a=crypto:` value we can use, or None (unknown suite, MKI, bad key, session params).

    None skips this attribute only; the caller tries the offer's next one (§6.1)."""
    m = _CRYPTO_RE.match(value.strip())
    if m is None:
        return None
    tag, suite_name, key_params, session_params = m.groups()
    suite = _SUITES_BY_NAME.get(suite_name.upper())
    if suite is None or ";" in key_params or not key_params.lower().startswith("inline:"):
        return None  # several keys need MKIs; key methods other than inline do not exist
    parts = key_params[len("inline:"):].split("|")
    if len(parts) > 3:
        return None
    if len(parts) == 3 or (len(parts) == 2 and ":" in parts[1]):
        return None  # an MKI: libsrtp through pylibsrtp has no MKI support
    if len(parts) == 2 and not _LIFETIME_RE.match(parts[1]):
        return None
    try:
        key = base64.b64decode(parts[0] + "=" * (-len(parts[0]) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(key) != suite.key_length:
        return None
    for param in (session_params or "").split():
        name, _, arg = param.partition("=")
        if name.upper() == "WSH" or (name.upper() == "KDR" and arg == "0"):
            continue
        return None  # UNENCRYPTED_SRTP, FEC_ORDER, KDR>0 ...: not supported, skip the line
    return SdesCrypto(int(tag), suite, SrtpKey(key))


def choose_params(offered: SdesCrypto, previous: SrtpParams | None) -> SrtpParams:
    """Our side for an accepted offer line: keep our key while the peer keeps theirs (a
    refresh), else a fresh one (new call, or the peer re-keyed: RFC 4568 §7.1.4)."""
    if (previous is not None and previous.suite is offered.suite
            and previous.remote == offered.key):
        return SrtpParams(offered.suite, offered.tag, previous.local, offered.key)
    return SrtpParams(offered.suite, offered.tag, SrtpKey.generate(offered.suite), offered.key)


# --- one call's contexts --------------------------------------------------------------------------

FAILURE_REASONS = ("auth", "replay", "malformed")


def _reason(exc: Exception) -> str:
    text = str(exc)
    if "authentication" in text:
        return "auth"
    if "replay" in text:
        return "replay"
    return "malformed"


class SrtpContext:
    """Protect what we send and unprotect what we receive for one call."""

    def __init__(self, params: SrtpParams,
                 on_failure: Callable[[str], None] | None = None) -> None:
        self._on_failure = on_failure
        self.failures: dict[str, int] = dict.fromkeys(FAILURE_REASONS, 0)
        self.rekeys = 0
        self._params = params
        self._tx = self._session(params.suite, params.local, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        self._rx = self._session(params.suite, params.remote, pylibsrtp.Policy.SSRC_ANY_INBOUND)

    @staticmethod
    def _session(suite: SrtpSuite, key: SrtpKey, ssrc_type: int) -> pylibsrtp.Session:
        policy = pylibsrtp.Policy(key=key.reveal(), ssrc_type=ssrc_type,
                                  srtp_profile=suite.profile)
        return pylibsrtp.Session(policy)

    @property
    def params(self) -> SrtpParams:
        return self._params

    def update(self, params: SrtpParams) -> None:
        """Apply a re-INVITE's keys: a direction whose key (or suite) changed starts afresh."""
        old, self._params = self._params, params
        if old.suite is not params.suite or old.local != params.local:
            self._tx = self._session(params.suite, params.local,
                                     pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
            self.rekeys += 1
        if old.suite is not params.suite or old.remote != params.remote:
            self._rx = self._session(params.suite, params.remote,
                                     pylibsrtp.Policy.SSRC_ANY_INBOUND)
            self.rekeys += 1

    def protect(self, packet: bytes) -> bytes | None:
        """The SRTP packet, or None if libsrtp refused it (oversized; logged, never raised)."""
        try:
            return bytes(self._tx.protect(packet))
        except (pylibsrtp.Error, ValueError) as exc:
            log.warning("SRTP protect failed (%s): packet of %d bytes dropped", exc, len(packet))
            return None

    def unprotect(self, packet: bytes) -> bytes | None:
        """The RTP packet, or None when it failed authentication, replay or parsing (counted)."""
        try:
            return bytes(self._rx.unprotect(packet))
        except (pylibsrtp.Error, ValueError) as exc:
            reason = _reason(exc)
            self.failures[reason] += 1
            if self._on_failure is not None:
                self._on_failure(reason)
            return None

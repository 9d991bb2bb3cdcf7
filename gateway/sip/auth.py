"""Server-side SIP digest authentication: RFC 3261 §22, RFC 8760 (SHA-256), RFC 7616 rules.

Works on header *values* (strings), not on a message class, so the SIP core and the call layer
can use it however they carry headers. A UAS answers 401 with one `WWW-Authenticate` value per
algorithm from `challenge()` — SHA-256 first, MD5 second for old PBXs (RFC 8760 §2.4: the client
uses the first it supports) — and checks the `Authorization` value of the retry with `verify()`.

Nonces are `<ms-time>.<seq>.<mac>` with mac = HMAC-SHA256(secret, time.seq|source-ip): they need
no server state until used, cannot be forged, are bound to the source address they were issued
to and expire after `nonce_ttl_s`. A correct response with an expired nonce gets `stale=true`
(RFC 7616 §3.3), so the phone retries without asking anyone for a password. Replays are refused
by tracking the highest `nc` seen per nonce in a bounded LRU map; when an entry is evicted, all
nonces as old as it count as stale from then on, so a bounded map never re-opens a replay.

Only `qop=auth` is offered and accepted: it is what gives `nc`/`cnonce` replay protection.
No time or randomness is read here: `now` comes from the caller and the HMAC secret is given.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

MAX_HEADER_LEN = 4096


class Algorithm(Enum):
    SHA256 = "SHA-256"
    MD5 = "MD5"

    def hash(self, text: str) -> str:
        data = text.encode("utf-8")
        if self is Algorithm.SHA256:
            return hashlib.sha256(data).hexdigest()
        return hashlib.md5(data, usedforsecurity=False).hexdigest()


class AuthResult(Enum):
    """Outcome of `verify`; `reason` is the `security_rejections` metric label."""

    OK = "ok"
    MISSING = "missing"  # no Authorization: first contact, send a challenge
    MALFORMED = "malformed"
    UNSUPPORTED = "unsupported"  # algorithm or qop we did not offer
    WRONG_USER = "wrong_user"  # unknown username or realm
    BAD_RESPONSE = "bad_response"  # wrong password
    BAD_NONCE = "bad_nonce"  # forged, or issued to another source address
    STALE = "stale"  # right password, expired nonce: challenge again with stale=true
    REPLAY = "replay"  # nc not above the last one seen for this nonce

    @property
    def reason(self) -> str:
        return _REASONS[self]


_REASONS = {
    AuthResult.OK: "ok", AuthResult.MISSING: "auth_missing", AuthResult.MALFORMED: "auth_failed",
    AuthResult.UNSUPPORTED: "auth_failed", AuthResult.WRONG_USER: "auth_failed",
    AuthResult.BAD_RESPONSE: "auth_failed", AuthResult.BAD_NONCE: "auth_bad_nonce",
    AuthResult.STALE: "auth_stale", AuthResult.REPLAY: "auth_replay",
}


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """The parameters of a `Digest` Authorization header value."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"  # RFC 7616 §3.4: absent means MD5
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None


_PARAM_RE = re.compile(
    r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]+))\s*(,|$)')
_QUOTED = frozenset({"username", "realm", "nonce", "uri", "response", "cnonce", "opaque"})


def _digest_params(value: str) -> dict[str, str] | None:
    """The `k=v, ...` parameters of a `Digest ...` header value, names lower-cased; None if it
    is not a well-formed digest value. A repeated parameter is ambiguous: refused."""
    if len(value) > MAX_HEADER_LEN:
        return None
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    params: dict[str, str] = {}
    pos, rest = 0, rest.strip()
    while pos < len(rest):
        m = _PARAM_RE.match(rest, pos)
        if m is None:
            return None
        name = m.group(1).lower()
        raw = m.group(2)
        if name in params:
            return None
        params[name] = re.sub(r"\\(.)", r"\1", raw) if raw is not None else m.group(3)
        pos = m.end()
    return params


def parse_authorization(value: str) -> DigestCredentials | None:
    """Parse `Digest k=v, ...`; None if it is not a well-formed digest header value."""
    params = _digest_params(value)
    if params is None:
        return None
    try:
        return DigestCredentials(
            username=params["username"], realm=params["realm"], nonce=params["nonce"],
            uri=params["uri"], response=params["response"],
            algorithm=params.get("algorithm", "MD5"), qop=params.get("qop"),
            nc=params.get("nc"), cnonce=params.get("cnonce"), opaque=params.get("opaque"))
    except KeyError:
        return None


def compute_response(algorithm: Algorithm, *, username: str, realm: str, password: str,
                     method: str, uri: str, nonce: str, nc: str, cnonce: str,
                     qop: str = "auth") -> str:
    """RFC 7616 §3.4.1 response for qop=auth (RFC 3261 §22.4 uses the same computation)."""
    ha1 = algorithm.hash(f"{username}:{realm}:{password}")
    ha2 = algorithm.hash(f"{method}:{uri}")
    return algorithm.hash(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def parse_challenge(value: str) -> dict[str, str] | None:
    """The parameters of a `Digest` WWW-Authenticate / Proxy-Authenticate value (lower-case
    names); None if it is not a well-formed digest challenge with a realm and a nonce."""
    params = _digest_params(value)
    return params if params is not None and "realm" in params and "nonce" in params else None


def answer_challenge(challenge: str, *, method: str, uri: str, username: str, password: str,
                     cnonce: str) -> str | None:
    """Our `Authorization` (or `Proxy-Authorization`) value for a challenge to a request we
    sent (RFC 3261 §22.2, RFC 7616 §3.4): qop=auth when offered, the RFC 2617 form without
    qop otherwise. None for a challenge we cannot answer (unknown algorithm, auth-int only)."""
    params = parse_challenge(challenge)
    if params is None:
        return None
    algorithm = _ALGORITHMS.get(params.get("algorithm", "MD5").lower())
    if algorithm is None:
        return None
    offered = [q.strip().lower() for q in params.get("qop", "").split(",") if q.strip()]
    if offered and "auth" not in offered:
        return None
    realm, nonce = params["realm"], params["nonce"]
    fields = [f"username={_quote(username)}", f"realm={_quote(realm)}",
              f"nonce={_quote(nonce)}", f"uri={_quote(uri)}"]
    if offered:
        nc = "00000001"
        response = compute_response(algorithm, username=username, realm=realm,
                                    password=password, method=method, uri=uri, nonce=nonce,
                                    nc=nc, cnonce=cnonce)
        fields += [f"response={_quote(response)}", "qop=auth", f"nc={nc}",
                   f"cnonce={_quote(cnonce)}"]
    else:
        ha1 = algorithm.hash(f"{username}:{realm}:{password}")
        ha2 = algorithm.hash(f"{method}:{uri}")
        fields.append(f"response={_quote(algorithm.hash(f'{ha1}:{nonce}:{ha2}'))}")
    fields.append(f"algorithm={algorithm.value}")
    if "opaque" in params:
        fields.append(f"opaque={_quote(params['opaque'])}")
    return "Digest " + ", ".join(fields)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_ALGORITHMS = {a.value.lower(): a for a in Algorithm}
_HEX8 = re.compile(r"^[0-9a-fA-F]{8}$")


class DigestAuthenticator:
    """Issues challenges and verifies answers for every trunk of one gateway process."""

    def __init__(self, secret: bytes, *, nonce_ttl_s: float = 300.0,
                 max_tracked_nonces: int = 10000,
                 algorithms: Sequence[Algorithm] = (Algorithm.SHA256, Algorithm.MD5)) -> None:
        if len(secret) < 16:
            raise ValueError("the nonce secret needs at least 16 bytes")
        self._secret = secret
        self._ttl_ms = int(nonce_ttl_s * 1000)
        self._algorithms = tuple(algorithms)
        self._max = max_tracked_nonces
        self._seen: OrderedDict[str, int] = OrderedDict()  # nonce -> highest nc accepted
        self._evicted_up_to_ms = -1  # nonces this old may have lost their replay record
        self._seq = 0

    def __repr__(self) -> str:  # never show the secret
        return f"DigestAuthenticator(tracked={len(self._seen)})"

    # --- nonces ---------------------------------------------------------------------------------
    def _mac(self, stamp: str, source_ip: str) -> str:
        digest = hmac.new(self._secret, f"{stamp}|{source_ip}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:18]).decode("ascii")

    def make_nonce(self, source_ip: str, now: float) -> str:
        self._seq += 1  # two challenges in the same millisecond still get distinct nonces
        stamp = f"{int(now * 1000):x}.{self._seq:x}"
        return f"{stamp}.{self._mac(stamp, source_ip)}"

    def _nonce_time_ms(self, nonce: str, source_ip: str) -> int | None:
        """Issue time of a genuine nonce for this source, else None."""
        stamp, _, mac = nonce.rpartition(".")
        if not stamp or not hmac.compare_digest(mac.encode(), self._mac(stamp,
                                                                         source_ip).encode()):
            return None
        try:
            return int(stamp.split(".", 1)[0], 16)
        except ValueError:
            return None

    # --- the two operations -----------------------------------------------------------------
    def challenge(self, realm: str, source_ip: str, now: float, *, stale: bool = False,
                  algorithms: Sequence[Algorithm] | None = None) -> list[str]:
        """`WWW-Authenticate` values for a 401, strongest algorithm first, one shared nonce.
        `algorithms` (a subset, e.g. one trunk's) overrides the authenticator's list."""
        nonce = self.make_nonce(source_ip, now)
        tail = ", stale=true" if stale else ""
        return [f"Digest realm={_quote(realm)}, nonce={_quote(nonce)}, algorithm={a.value}, "
                f'qop="auth"{tail}' for a in (algorithms or self._algorithms)]

    def verify(self, authorization: str | None, *, method: str, source_ip: str, now: float,
               realm: str, username: str, password: str,
               request_uri: str | None = None,
               algorithms: Sequence[Algorithm] | None = None) -> AuthResult:
        """Check an `Authorization` value against one trunk's credentials.

        `request_uri`, when given, must equal the digest `uri` (RFC 7616 §3.4.6). Any result
        but OK means: answer 401 with `challenge(..., stale=result is AuthResult.STALE)`.
        """
        if authorization is None:
            return AuthResult.MISSING
        creds = parse_authorization(authorization)
        if creds is None:
            return AuthResult.MALFORMED
        algorithm = _ALGORITHMS.get(creds.algorithm.lower())
        offered = algorithms or self._algorithms
        if algorithm is None or algorithm not in offered or creds.qop != "auth":
            return AuthResult.UNSUPPORTED
        if creds.nc is None or not _HEX8.match(creds.nc) or not creds.cnonce:
            return AuthResult.MALFORMED
        if request_uri is not None and creds.uri != request_uri:
            return AuthResult.MALFORMED
        if not (hmac.compare_digest(creds.username.encode(), username.encode())
                and creds.realm == realm):
            return AuthResult.WRONG_USER
        issued_ms = self._nonce_time_ms(creds.nonce, source_ip)
        if issued_ms is None:
            return AuthResult.BAD_NONCE
        expected = compute_response(algorithm, username=username, realm=realm,
                                    password=password, method=method, uri=creds.uri,
                                    nonce=creds.nonce, nc=creds.nc, cnonce=creds.cnonce)
        if not hmac.compare_digest(expected.encode(), creds.response.lower().encode()):
            return AuthResult.BAD_RESPONSE
        now_ms = int(now * 1000)
        last = self._seen.get(creds.nonce)
        if now_ms - issued_ms > self._ttl_ms or now_ms < issued_ms or (
                last is None and issued_ms <= self._evicted_up_to_ms):
            return AuthResult.STALE
        nc = int(creds.nc, 16)
        if last is not None and nc <= last:
            return AuthResult.REPLAY
        self._remember(creds.nonce, nc, now_ms)
        return AuthResult.OK

    def _remember(self, nonce: str, nc: int, now_ms: int) -> None:
        self._seen[nonce] = nc
        self._seen.move_to_end(nonce)
        while len(self._seen) > self._max:
            old, _ = self._seen.popitem(last=False)
            old_ms = int(old.split(".", 1)[0], 16)
            self._evicted_up_to_ms = max(self._evicted_up_to_ms, old_ms)
        # Expired entries can never verify again (they are stale): drop them from the front.
        while self._seen:
            first = next(iter(self._seen))
            if now_ms - int(first.split(".", 1)[0], 16) <= self._ttl_ms:
                break
            del self._seen[first]

    @property
    def tracked_nonces(self) -> int:
        return len(self._seen)

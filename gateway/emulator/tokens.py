"""Ephemeral tokens for the emulator: HS256 JWTs (RFC 7519, RFC 7515 §3.1 compact form).

The claims copy the token in Orga's docs (`sub`, `api_key_id`, `scope: "api"`, `iat`, `exp`,
reference §1) plus a random `jti` so two tokens minted in the same second differ (tokens are
single use on /calls, so the emulator must tell them apart). `expires_at` is the naive-UTC ISO
form with microseconds that Orga returns. Standard library only (hmac, hashlib, base64).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

_HEADER = {"alg": "HS256", "typ": "JWT"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _ids_for_key(api_key: str) -> tuple[str, str]:
    """Stable, non-reversible ids for an API key: a 24-hex user id and a 20-hex key id."""
    digest = hashlib.sha256(api_key.encode()).hexdigest()
    return digest[:24], digest[24:44]


class TokenIssuer:
    """Mints and verifies tokens; `clock` returns wall-clock seconds (injectable for tests)."""

    def __init__(self, secret: bytes, ttl_s: float, clock: Callable[[], float]) -> None:
        self._secret = secret
        self.ttl_s = ttl_s
        self._clock = clock

    def mint(self, api_key: str) -> tuple[str, str, dict[str, Any]]:
        """Returns (token, expires_at, claims)."""
        now = self._clock()
        expires = now + self.ttl_s
        sub, key_id = _ids_for_key(api_key)
        claims = {
            "sub": sub,
            "api_key_id": key_id,
            "scope": "api",
            "iat": int(now),
            "exp": int(expires),
            "jti": secrets.token_hex(8),
        }
        signing_input = f"{_b64(json.dumps(_HEADER).encode())}.{_b64(json.dumps(claims).encode())}"
        signature = hmac.new(self._secret, signing_input.encode(), hashlib.sha256).digest()
        expires_at = (
            datetime.fromtimestamp(expires, UTC).replace(tzinfo=None).isoformat(
                timespec="microseconds")
        )
        return f"{signing_input}.{_b64(signature)}", expires_at, claims

    def verify(self, token: str) -> dict[str, Any] | None:
        """The claims of a well-signed, unexpired token; None otherwise."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        signing_input = f"{parts[0]}.{parts[1]}".encode()
        expected = hmac.new(self._secret, signing_input, hashlib.sha256).digest()
        try:
            if not hmac.compare_digest(expected, _unb64(parts[2])):
                return None
            header = json.loads(_unb64(parts[0]))
            claims = json.loads(_unb64(parts[1]))
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(header, dict) or header.get("alg") != "HS256":
            return None
        if not isinstance(claims, dict) or not isinstance(claims.get("exp"), int):
            return None
        if self._clock() >= claims["exp"]:
            return None
        return claims

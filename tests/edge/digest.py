"""An independent RFC 7616 §3.4.1 digest client (qop=auth, SHA-256 or MD5) for tests: it
shares no code with `gateway/sip/auth.py`, so a test passing proves the two agree."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable


def challenge_params(challenge: str) -> dict[str, str]:
    return {k: a or b for k, a, b in re.findall(r'(\w+)=(?:"([^"]*)"|([^\s,]+))', challenge)}


def digest_authorization(challenge: str, *, method: str, uri: str, username: str,
                         password: str, nc: int = 1, cnonce: str | None = None) -> str:
    """Our own RFC 7616 §3.4.1 computation (not the gateway's), qop=auth."""
    params = challenge_params(challenge)
    algorithm = params.get("algorithm", "MD5")
    h: Callable[[str], str] = (
        (lambda s: hashlib.sha256(s.encode()).hexdigest()) if algorithm == "SHA-256"
        else (lambda s: hashlib.md5(s.encode(), usedforsecurity=False).hexdigest()))
    cnonce = cnonce or secrets.token_hex(8)
    ncs = f"{nc:08x}"
    ha1 = h(f"{username}:{params['realm']}:{password}")
    ha2 = h(f"{method}:{uri}")
    response = h(f"{ha1}:{params['nonce']}:{ncs}:{cnonce}:auth:{ha2}")
    return (f'Digest username="{username}", realm="{params["realm"]}", '
            f'nonce="{params["nonce"]}", uri="{uri}", response="{response}", '
            f"algorithm={algorithm}, qop=auth, nc={ncs}, cnonce=\"{cnonce}\"")

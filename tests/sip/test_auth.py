import hashlib
import re

import pytest

from gateway.sip.auth import (
    Algorithm,
    AuthResult,
    DigestAuthenticator,
    compute_response,
    parse_authorization,
)

SECRET = b"0123456789abcdef-test-secret"
REALM = "gw.example"
USER, PASSWORD = "pbx", "s3cret pw"
URI = "sip:+4930123@gw.example"
SRC = "192.0.2.10"


def h(name: str, text: str) -> str:
    return hashlib.new(name, text.encode()).hexdigest()


def client_response(hname: str, nonce: str, nc: str, cnonce: str, *, password: str = PASSWORD,
                    method: str = "INVITE", uri: str = URI) -> str:
    """The UAC side, computed independently with hashlib (RFC 7616 §3.4.1)."""
    ha1 = h(hname, f"{USER}:{REALM}:{password}")
    ha2 = h(hname, f"{method}:{uri}")
    return h(hname, f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")


def authorization(challenge: str, nc: str = "00000001", cnonce: str = "0a4f113b", *,
                  password: str = PASSWORD, extra: str = "") -> str:
    nonce = re.search(r'nonce="([^"]+)"', challenge).group(1)  # type: ignore[union-attr]
    alg = re.search(r"algorithm=([\w-]+)", challenge).group(1)  # type: ignore[union-attr]
    hname = {"SHA-256": "sha256", "MD5": "md5"}[alg]
    resp = client_response(hname, nonce, nc, cnonce, password=password)
    return (f'Digest username="{USER}", realm="{REALM}", nonce="{nonce}", uri="{URI}", '
            f"response=\"{resp}\", algorithm={alg}, qop=auth, nc={nc}, cnonce=\"{cnonce}\"{extra}")


@pytest.fixture
def auth() -> DigestAuthenticator:
    return DigestAuthenticator(SECRET, nonce_ttl_s=300, max_tracked_nonces=4)


def verify(auth: DigestAuthenticator, header: str | None, now: float = 1000.0,
           src: str = SRC, password: str = PASSWORD) -> AuthResult:
    return auth.verify(header, method="INVITE", source_ip=src, now=now, realm=REALM,
                       username=USER, password=password, request_uri=URI)


# RFC 7616 §3.9.1 example (HTTP, but the digest computation is the one SIP uses).
RFC7616 = dict(username="Mufasa", realm="http-auth@example.org", password="Circle of Life",
               method="GET", uri="/dir/index.html",
               nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc="00000001",
               cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")


@pytest.mark.parametrize(("algorithm", "expected"), [
    (Algorithm.MD5, "8ca523f5e9506fed4657c9700eebdbec"),
    (Algorithm.SHA256, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
])
def test_rfc7616_known_answers(algorithm: Algorithm, expected: str) -> None:
    assert compute_response(algorithm, **RFC7616) == expected
    hname = "md5" if algorithm is Algorithm.MD5 else "sha256"
    v = RFC7616
    ha1 = h(hname, f"{v['username']}:{v['realm']}:{v['password']}")
    ha2 = h(hname, f"{v['method']}:{v['uri']}")
    assert h(hname, f"{ha1}:{v['nonce']}:{v['nc']}:{v['cnonce']}:auth:{ha2}") == expected


def test_challenge_offers_sha256_first_then_md5(auth: DigestAuthenticator) -> None:
    sha, md5 = auth.challenge(REALM, SRC, 1000.0)
    assert sha.startswith(f'Digest realm="{REALM}", nonce="') and "algorithm=SHA-256" in sha
    assert 'qop="auth"' in sha and "stale" not in sha
    assert "algorithm=MD5" in md5
    nonce = re.search(r'nonce="([^"]+)"', sha).group(1)  # type: ignore[union-attr]
    assert f'nonce="{nonce}"' in md5
    assert "stale=true" in auth.challenge(REALM, SRC, 1000.0, stale=True)[0]
    # Nonces are unique even within the same millisecond.
    assert auth.challenge(REALM, SRC, 1000.0)[0] != sha
    assert SECRET.decode() not in sha + repr(auth)


@pytest.mark.parametrize("index", [0, 1])
def test_full_exchange_and_replay(auth: DigestAuthenticator, index: int) -> None:
    assert verify(auth, None) is AuthResult.MISSING
    challenge = auth.challenge(REALM, SRC, 1000.0)[index]
    header = authorization(challenge)
    assert verify(auth, header, 1001.0) is AuthResult.OK
    assert verify(auth, header, 1001.5) is AuthResult.REPLAY
    assert verify(auth, authorization(challenge, nc="00000002"), 1002.0) is AuthResult.OK
    assert verify(auth, authorization(challenge, nc="00000002"), 1002.0) is AuthResult.REPLAY
    assert verify(auth, authorization(challenge, nc="00000001", cnonce="ff"), 1003.0) is (
        AuthResult.REPLAY)


def test_wrong_password_source_and_forged_nonce(auth: DigestAuthenticator) -> None:
    challenge = auth.challenge(REALM, SRC, 1000.0)[0]
    assert verify(auth, authorization(challenge, password="guess")) is AuthResult.BAD_RESPONSE
    assert verify(auth, authorization(challenge), src="198.51.100.7") is AuthResult.BAD_NONCE
    forged = authorization(challenge).replace('nonce="', 'nonce="1')
    assert verify(auth, forged) is AuthResult.BAD_NONCE
    # A wrong password never makes the nonce unusable for the right one.
    assert verify(auth, authorization(challenge)) is AuthResult.OK


def test_expired_nonce_is_stale_only_with_the_right_password(auth: DigestAuthenticator) -> None:
    challenge = auth.challenge(REALM, SRC, 1000.0)[0]
    assert verify(auth, authorization(challenge), now=1000.0 + 301) is AuthResult.STALE
    assert verify(auth, authorization(challenge, password="guess"), now=1000.0 + 301) is (
        AuthResult.BAD_RESPONSE)
    assert verify(auth, authorization(challenge), now=999.0) is AuthResult.STALE  # from future
    assert AuthResult.STALE.reason == "auth_stale"


def test_unsupported_and_malformed(auth: DigestAuthenticator) -> None:
    challenge = auth.challenge(REALM, SRC, 1000.0)[0]
    good = authorization(challenge)
    assert verify(auth, good.replace("qop=auth, ", "")) is AuthResult.UNSUPPORTED
    assert verify(auth, good.replace("algorithm=SHA-256", "algorithm=SHA-256-sess")) is (
        AuthResult.UNSUPPORTED)
    assert verify(auth, good.replace("nc=00000001", "nc=1")) is AuthResult.MALFORMED
    assert verify(auth, good.replace(f'uri="{URI}"', 'uri="sip:other@x"')) is AuthResult.MALFORMED
    assert verify(auth, good.replace(f'username="{USER}"', 'username="root"')) is (
        AuthResult.WRONG_USER)
    assert verify(auth, good.replace(f'realm="{REALM}"', 'realm="x"')) is AuthResult.WRONG_USER
    for bad in ("Basic dXNlcjpwYXNz", "Digest", "Digest username=", 'Digest a="unterminated',
                good + ", nonce=\"dup\"", "Digest " + "a=b, " * 2000):
        assert verify(auth, bad) is AuthResult.MALFORMED, bad
    assert AuthResult.MALFORMED.reason == "auth_failed"


def test_replay_memory_is_bounded_and_never_reopens_a_replay(auth: DigestAuthenticator) -> None:
    first = auth.challenge(REALM, SRC, 1000.0)[0]
    assert verify(auth, authorization(first), now=1000.0) is AuthResult.OK
    for i in range(10):  # max_tracked_nonces=4: the first nonce is evicted
        c = auth.challenge(REALM, SRC, 1001.0 + i)[0]
        assert verify(auth, authorization(c), now=1001.0 + i) is AuthResult.OK
    assert auth.tracked_nonces <= 4
    # Replaying the evicted nonce's first request is refused (as stale, so a real phone simply
    # retries with a fresh nonce), not accepted as new.
    assert verify(auth, authorization(first), now=1012.0) is AuthResult.STALE


def test_expired_entries_leave_the_replay_map() -> None:
    auth = DigestAuthenticator(SECRET, nonce_ttl_s=10, max_tracked_nonces=100)
    for i in range(5):
        c = auth.challenge(REALM, SRC, 1000.0 + i)[0]
        assert verify(auth, authorization(c), now=1000.0 + i) is AuthResult.OK
    c = auth.challenge(REALM, SRC, 1100.0)[0]
    assert verify(auth, authorization(c), now=1100.0) is AuthResult.OK
    assert auth.tracked_nonces == 1


def test_parse_authorization() -> None:
    creds = parse_authorization(
        'digest USERNAME="a\\"b", realm="r", nonce="n", uri="sip:x@y", response="abc", '
        'algorithm=md5, qop=auth, nc=00000001, cnonce="c", opaque="o"')
    assert creds is not None
    assert (creds.username, creds.algorithm, creds.qop, creds.opaque) == ('a"b', "md5", "auth",
                                                                          "o")
    assert parse_authorization('Digest username="u", realm="r"') is None
    assert DigestAuthenticator(SECRET).verify(
        'Digest username="a\\"b"', method="INVITE", source_ip=SRC, now=0, realm="r",
        username='a"b', password="p") is AuthResult.MALFORMED


def test_secret_too_short() -> None:
    with pytest.raises(ValueError):
        DigestAuthenticator(b"short")

"""RFC 4475 torture corpus (our own messages), invalid half: tests/data/sip/invalid.

Every file has a row with the status and the reason the parser must give. Categories follow
RFC 4475 §3.1.2 and §3.3, RFC 5118 and issue 7's hostile input (see tests/data/sip/README.md).
"""

from __future__ import annotations

import pytest

from gateway.sip.errors import ParseError
from gateway.sip.parser import FramingError, Limits, StreamParser, parse_message
from tests.sip.fuzzing import CORPUS_DIR

INVALID_DIR = CORPUS_DIR / "invalid"

BIG = Limits(max_message_bytes=1 << 20)

# name → (status, reason fragment, limits). Sections are RFC 4475 unless said otherwise.
INVALID: dict[str, tuple[int, str, Limits | None]] = {
    # §3.1.2.1 extraneous header field separators
    "extraneous-separators-via": (400, "empty header parameter", None),
    "extraneous-separators-contact": (400, "empty header parameter", None),
    # §3.1.2.2 / §3.1.2.3 Content-Length larger than the body, negative; issue 7 lies
    "content-length-larger-than-body": (400, "Content-Length 9999 but only 5", None),
    "content-length-negative": (400, "bad Content-Length '-999'", None),
    "content-length-absurd": (400, "bad Content-Length", None),
    "content-length-duplicated": (400, "more than one Content-Length", None),
    "content-length-list": (400, "bad Content-Length '0, 0'", None),
    # §3.1.2.4 request scalar fields with overlarge values; issue 7 absurd CSeq
    "cseq-overlarge": (400, "CSeq number out of range", None),
    "cseq-two-to-the-31": (400, "CSeq number out of range", None),
    "cseq-negative": (400, "bad CSeq", None),
    "cseq-thousand-digits": (400, "CSeq number out of range", None),
    "cseq-unicode-digits": (400, "bad CSeq", None),
    "max-forwards-overlarge": (400, "bad Max-Forwards '300'", None),
    "expires-overlarge": (400, "bad Expires", None),
    # §3.1.2.5 response scalar fields with overlarge values
    "response-overlarge-scalars": (400, "bad Retry-After", None),
    # §3.1.2.6 unterminated quoted strings
    "unterminated-quoted-display-name": (400, "unterminated quoted", None),
    "unterminated-quoted-param": (400, "unterminated quoted", None),
    # §3.1.2.7 <> around the Request-URI; §3.1.2.8 LWS in it; §3.1.2.9/10 extra SP
    "ltgt-request-uri": (400, "bad Request-URI", None),
    "lws-in-request-uri": (400, "bad request line", None),
    "multiple-sp-request-line": (400, "bad request line", None),
    "trailing-sp-request-line": (400, "bad request line", None),
    # §3.1.2.11 escaped headers in the Request-URI
    "headers-in-request-uri": (400, "must not carry URI headers", None),
    # §3.1.2.13 URI with '?' not in <>; §3.1.2.14 LWS inside <>; §3.1.2.15 non-token display
    "addr-spec-with-headers-not-enclosed": (400, "must be enclosed in <>", None),
    "spaces-within-addr-spec": (400, "URI without a scheme: ' sip:", None),
    "non-token-display-name": (400, "bad display name", None),
    # §3.1.2.16 unknown protocol version; malformed versions
    "unknown-sip-version": (505, "unsupported SIP version 7.0", None),
    "malformed-sip-version": (400, "bad request line", None),
    "via-unknown-version": (400, "bad Via", None),
    # §3.1.2.17/18 CSeq method mismatch (known, unknown, case)
    "cseq-method-mismatch": (400, "does not match", None),
    "unknown-method-cseq-mismatch": (400, "does not match NEWMETHOD", None),
    "cseq-method-case-mismatch": (400, "CSeq method invite does not match INVITE", None),
    # §3.1.2.19 overlarge response code; codes below 100
    "response-overlarge-status-code": (400, "bad status line", None),
    "response-status-code-below-100": (400, "out of range", None),
    # §3.3.3 missing required headers
    "missing-call-id-from-to": (400, "missing From", None),
    "missing-via": (400, "missing Via", None),
    "missing-cseq": (400, "missing CSeq", None),
    # §3.3.4 multiple values in single-value headers; duplicated mandatory headers/parameters
    "multiple-values-in-to": (400, "more than one '@'", None),
    "duplicated-call-id": (400, "more than one Call-ID", None),
    "duplicated-cseq": (400, "more than one CSeq", None),
    "duplicated-from": (400, "more than one From", None),
    "duplicated-to-tag": (400, "'tag' given twice", None),
    "duplicated-branch": (400, "'branch' given twice", None),
    "empty-call-id": (400, "empty Call-ID", None),
    "call-id-with-space": (400, "Call-ID must be one word", None),
    # Issue 7: huge headers, Via floods, NUL, bad UTF-8, control octets
    "huge-header": (413, "header line longer than", None),
    "ten-thousand-vias": (413, "exceeds 65535", None),
    "150-vias-in-one-field": (413, "more than 100 Via", None),
    "hundred-contacts": (413, "more than 64 Contact entries", None),
    "nul-in-call-id": (400, "NUL byte in Call-ID", None),
    "nul-in-request-uri": (400, "NUL byte in start line", None),
    "nul-in-header-name": (400, "bad header line", None),
    "bad-utf8-in-header": (400, "not valid UTF-8", None),
    "overlong-utf8-in-display-name": (400, "not valid UTF-8", None),
    "bare-cr-in-header-value": (400, "control character 0x0d in Subject", None),
    "escape-char-in-header-value": (400, "control character 0x1b in Subject", None),
    # URIs: bad escapes, RFC 5118 §4.2 unbracketed IPv6, malformed IPv6, port, scheme
    "truncated-escape-in-uri": (400, "bad user part '%4'", None),
    "bad-escape-in-uri": (400, "bad user part '%GG'", None),
    "ipv6-not-bracketed": (400, "bad Request-URI", None),
    "ipv6-triple-colon": (400, "bad IPv6 reference", None),
    "port-out-of-range": (400, "bad port '65536'", None),
    "request-uri-without-scheme": (416, "URI without a scheme", None),
    # Header-section grammar and framing
    "header-line-without-colon": (400, "bad header line", None),
    "continuation-before-first-header": (400, "continuation line before any header", None),
    "via-without-sent-by": (400, "missing host", None),
    "no-blank-line-truncated": (400, "no blank line", None),
    "http-request": (400, "bad request line", None),
}

# The 10,000-Via file is refused for size first; with a roomier size limit the header count
# limit still refuses it.
INVALID_WITH_LIMITS = [("ten-thousand-vias", BIG, 413, "more than 256 header lines")]



def test_every_invalid_file_has_a_row() -> None:
    assert {p.stem for p in INVALID_DIR.glob("*.sip")} == set(INVALID)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_message_is_rejected_with_status(name: str) -> None:
    status, reason, limits = INVALID[name]
    data = (INVALID_DIR / f"{name}.sip").read_bytes()
    with pytest.raises(ParseError) as info:
        parse_message(data, limits or Limits())
    assert info.value.status == status
    assert reason in info.value.reason


@pytest.mark.parametrize(("name", "limits", "status", "reason"), INVALID_WITH_LIMITS)
def test_invalid_message_with_other_limits(
    name: str, limits: Limits, status: int, reason: str
) -> None:
    with pytest.raises(ParseError) as info:
        parse_message((INVALID_DIR / f"{name}.sip").read_bytes(), limits)
    assert info.value.status == status and reason in info.value.reason


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_message_never_yields_a_message_on_a_stream(name: str) -> None:
    """On TCP an invalid message either breaks framing or waits for bytes that never came."""
    data = (INVALID_DIR / f"{name}.sip").read_bytes()
    parser = StreamParser()
    try:
        assert parser.feed(data) == []
    except FramingError as exc:
        assert exc.messages == [] and exc.status in (400, 413, 414, 416, 505)

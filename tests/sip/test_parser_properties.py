"""Property tests for the SIP parser (issue 3 item 12): whatever the bytes, the only outcomes are
a message or `ParseError`; a parsed message round-trips; and how a TCP stream is chunked never
changes what `StreamParser` returns.

Inputs come from hypothesis directly (random bytes) and from the generators in `fuzzing.py`
driven by a hypothesis-controlled `Random` (corpus mutations, structure-aware messages), the
same generators `bench/fuzz_sip.py` runs a million times, and from hypothesis' Unicode text
put into header values. Derandomised: the same examples on every run, no example database,
about 5,000 examples in all.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.sip.errors import ParseError
from gateway.sip.message import SipRequest, SipResponse
from gateway.sip.parser import StreamParser, parse_message
from tests.sip.fuzzing import (
    generate,
    header_values,
    load_corpus,
    mutate,
    outcome,
    random_cuts,
    round_trip_problem,
    stream_outcome,
)

CORPUS = load_corpus("valid") + load_corpus("invalid")
VALID_WIRE = [parse_message(data).to_bytes() for data in load_corpus("valid")]


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def _parses_or_refuses(data: bytes) -> None:
    try:
        message = parse_message(data)
    except ParseError as exc:
        assert 400 <= exc.status <= 599 and exc.reason
        return
    assert isinstance(message, SipRequest | SipResponse)
    assert round_trip_problem(data) is None


def _chunking_does_not_matter(data: bytes, rng: random.Random) -> None:
    whole = stream_outcome(data, [])
    assert stream_outcome(data, random_cuts(rng, len(data))) == whole
    assert stream_outcome(data, list(range(1, len(data)))) == whole  # byte by byte


@_settings(400)
@given(st.binary(max_size=1_500))
def test_random_bytes(data: bytes) -> None:
    _parses_or_refuses(data)


START_LINES = [b"INVITE sip:a@b SIP/2.0\r\n", b"SIP/2.0 200 OK\r\n", b"ACK sip:[::1] SIP/2.0\r\n"]


@_settings(400)
@given(st.sampled_from(START_LINES), st.binary(max_size=800))
def test_random_bytes_after_a_start_line(start: bytes, rest: bytes) -> None:
    _parses_or_refuses(start + rest)


@_settings(800)
@given(st.randoms(use_true_random=False))
def test_mutated_corpus_messages(rng: random.Random) -> None:
    _parses_or_refuses(mutate(rng, CORPUS))


@_settings(600)
@given(st.randoms(use_true_random=False))
def test_generated_messages(rng: random.Random) -> None:
    data = generate(rng)
    _parses_or_refuses(data)
    if rng.random() < 0.5:
        _parses_or_refuses(mutate(rng, [data]))


@_settings(500)
@given(st.sampled_from(VALID_WIRE), st.integers(min_value=1, max_value=40), st.text(max_size=30))
def test_header_value_replaced_with_arbitrary_text(wire: bytes, index: int, text: str) -> None:
    """Any Unicode (digits like '²' or '١', odd spaces, line breaks) in any header value."""
    head, _, body = wire.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    index = 1 + index % (len(lines) - 1)
    name = lines[index].split(b":", 1)[0]
    lines[index] = name + b": " + text.encode("utf-8", "surrogatepass")
    _parses_or_refuses(b"\r\n".join(lines) + b"\r\n\r\n" + body)


NUMERIC_TEMPLATE = (
    "INVITE sip:a@gw.example.net:{0} SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.1:{1};branch=z9hG4bK1"
    ";rport={2}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: n@h\r\nCSeq: {3} INVITE\r\n"
    "Max-Forwards: {4}\r\nExpires: {5}\r\nRetry-After: {6}\r\nContent-Length: {7}\r\n\r\n"
)
DIGITS = st.text(
    alphabet=st.sampled_from("0123456789") | st.characters(categories=["Nd", "No"]),
    min_size=1,
    max_size=12,
)


@_settings(500)
@given(st.integers(min_value=0, max_value=7), DIGITS)
def test_numbers_written_with_any_unicode_digit(field: int, number: str) -> None:
    """str.isdigit, int() and regex \\d accept '²', '١' or '߀': none may crash or be misread."""
    values = ["5060", "5060", "5060", "1", "70", "60", "5", "0"]
    values[field] = number
    data = NUMERIC_TEMPLATE.format(*values).encode("utf-8")
    _parses_or_refuses(data)
    if not number.isascii():
        try:
            parse_message(data)
        except ParseError:
            return
        raise AssertionError(f"non-ASCII digits {number!r} accepted as a number")


@_settings(500)
@given(st.sampled_from(VALID_WIRE), st.integers(min_value=0), st.sampled_from(["\r\n ", "\r\n\t"]))
def test_folding_at_a_single_space_changes_nothing(wire: bytes, which: int, fold: str) -> None:
    """A line break plus LWS is one SP (§7.3.1): folding a header at any single space leaves
    every header value unchanged, wherever the space is (also right after the colon)."""
    head, _, body = wire.partition(b"\r\n\r\n")
    start, _, rest = head.partition(b"\r\n")
    spaces = [
        i for i in range(1, len(rest) - 1)
        if rest[i : i + 1] == b" " and rest[i - 1 : i] not in b" \t\n"
        and rest[i + 1 : i + 2] not in b" \t\r" and b":" in rest[: i].rsplit(b"\n", 1)[-1]
    ]
    if not spaces:
        return
    i = spaces[which % len(spaces)]
    folded = start + b"\r\n" + rest[:i] + fold.encode() + rest[i + 1 :] + b"\r\n\r\n" + body
    assert header_values(parse_message(folded)) == header_values(parse_message(wire))


@_settings(400)
@given(st.sampled_from(VALID_WIRE), st.integers(min_value=0), st.text(min_size=1, max_size=8))
def test_arbitrary_text_inserted_anywhere(wire: bytes, where: int, text: str) -> None:
    where %= len(wire) + 1
    _parses_or_refuses(wire[:where] + text.encode("utf-8", "surrogatepass") + wire[where:])


@_settings(400)
@given(st.randoms(use_true_random=False))
def test_stream_chunking_never_changes_the_result(rng: random.Random) -> None:
    data = mutate(rng, CORPUS) if rng.random() < 0.6 else generate(rng)
    _chunking_does_not_matter(data, rng)


@_settings(300)
@given(st.randoms(use_true_random=False))
def test_stream_pipelined_messages_with_keepalives(rng: random.Random) -> None:
    """Valid messages, CRLF keep-alives between them, maybe a mutated one: chunking is
    invisible, and every message before a broken one is delivered intact."""
    parts = [rng.choice(VALID_WIRE) for _ in range(rng.randint(1, 4))]
    data = b"".join(rng.choice([b"", b"\r\n", b"\r\n\r\n"]) + part for part in parts)
    if rng.random() < 0.5:
        data += mutate(rng, CORPUS)
    _chunking_does_not_matter(data, rng)
    messages, _ = stream_outcome(data, random_cuts(rng, len(data)))
    assert messages[: len(parts)] == parts


@_settings(300)
@given(st.lists(st.binary(max_size=300), max_size=6))
def test_stream_random_feeds_only_message_or_parse_error(chunks: list[bytes]) -> None:
    parser = StreamParser()
    for chunk in chunks:
        try:
            for message in parser.feed(chunk):
                assert isinstance(message, SipRequest | SipResponse)
        except ParseError:
            return


def test_outcome_helper_sees_errors_and_messages() -> None:
    """The oracle itself can fail: a refused message and a parsed one give different results."""
    assert outcome(b"garbage\r\n\r\n") == ("error", 400)
    assert outcome(VALID_WIRE[0])[0] == "ok"

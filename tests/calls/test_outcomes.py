"""The outcome table: one type for why a call ended, and the one builder of refusal headers."""

from __future__ import annotations

from gateway.outcomes import OfferRefusal, Outcome, classify, response_headers, sip_warning
from gateway.sdp import NoCommonCodec, UnusableOffer


def test_results_are_unique_labels() -> None:
    results = [o.result for o in Outcome]
    assert len(results) == len(set(results))


def test_refusal_headers() -> None:
    assert response_headers(Outcome.CAPACITY.disposition) == [("Retry-After", "30")]
    assert response_headers(Outcome.NO_ROUTE.disposition) == []
    failure = NoCommonCodec()
    assert classify(failure) is Outcome.NO_CODEC
    assert response_headers(Outcome.NO_CODEC.disposition, agent="192.0.2.1",
                            warning=sip_warning(failure)) == [
        ("Warning", '305 192.0.2.1 "Incompatible media format: PCMU/PCMA required"')]


def test_offer_refusals_match_the_wire_format() -> None:
    assert OfferRefusal.PENDING.disposition.status == 491
    assert response_headers(OfferRefusal.PENDING.disposition, agent="h") == []
    assert response_headers(OfferRefusal.REQUIRED.disposition, agent="h") == [
        ("Warning", '399 - "offer required"')]
    bad = UnusableOffer("no audio stream", 304)
    assert response_headers(OfferRefusal.NOT_ACCEPTABLE.disposition, agent="h",
                            warning=bad.sip_warning) == [("Warning", '304 h "no audio stream"')]


def test_errors_without_an_outcome_are_internal() -> None:
    assert classify(ValueError("bug")) is Outcome.INTERNAL
    assert sip_warning(ValueError("bug")) is None

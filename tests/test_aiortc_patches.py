"""The aiortc/aioice patches refuse what they were not tested with (issue 11 item 4)."""

from __future__ import annotations

import pytest

from gateway.aiortc_patches import (
    TESTED,
    UntestedVersionError,
    check_versions,
    receiver_stats,
    tune_receiver,
)


def test_installed_versions_are_the_tested_ones() -> None:
    check_versions()  # what pyproject.toml pins must pass the start-up check


@pytest.mark.parametrize("dist", sorted(TESTED))
def test_an_untested_version_stops_the_start_with_what_to_do(dist: str) -> None:
    def installed(name: str) -> str:
        return "99.0.0" if name == dist else TESTED[name] + ".0"

    with pytest.raises(UntestedVersionError) as info:
        check_versions(installed)
    text = str(info.value)
    assert f"{dist} 99.0.0" in text and f"{dist}=={TESTED[dist]}.*" in text


def test_series_prefix_is_not_a_version_prefix() -> None:
    # "1.160" is not in the 1.16 series
    with pytest.raises(UntestedVersionError):
        check_versions(lambda name: TESTED[name] + "0")


def test_tune_receiver_refuses_unknown_internals() -> None:
    class NotAReceiver:
        pass

    fake = NotAReceiver()
    with pytest.raises(UntestedVersionError, match="internals changed"):
        tune_receiver(fake, deliver=lambda frame: None)  # type: ignore[arg-type]
    assert receiver_stats(fake) is None  # type: ignore[arg-type]

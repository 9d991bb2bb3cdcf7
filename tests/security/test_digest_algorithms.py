"""`digest_algorithms` per trunk: the default offers SHA-256 then MD5; a trunk may offer only
MD5 for UACs that answer just the first challenge (SIPp 3.6, old PBXs); bad values are refused
by config validation. A trunk's algorithm list is also what its answers are checked against."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config
from gateway.metrics import Metrics
from gateway.security.screen import SecurityScreen
from gateway.sip.address import Peer
from gateway.sip.core import SipAction
from tests.edge.digest import challenge_params, digest_authorization
from tests.security.test_screen import URI, request

ENV = {"ORGA_API_KEY": "k", "PBX_PW": "pw"}


def trunk_doc(**extra: object) -> dict[str, object]:
    return {"trunks": [{"name": "pbx", "allow": ["192.0.2.0/24"], "username": "u",
                        "password_env": "PBX_PW", **extra}]}


def test_default_and_md5_only() -> None:
    assert parse_config(trunk_doc(), ENV).trunks[0].digest_algorithms == ("SHA-256", "MD5")
    config = parse_config(trunk_doc(digest_algorithms=["MD5"]), ENV)
    assert config.trunks[0].digest_algorithms == ("MD5",)
    screen = SecurityScreen(config, Metrics(), secret=b"s" * 32)
    source = Peer("192.0.2.5", 5060)
    verdict = screen.screen(source, request(), 1.0)
    offered = [v for k, v in verdict.headers if k == "WWW-Authenticate"]
    assert [challenge_params(c)["algorithm"] for c in offered] == ["MD5"]
    # A SHA-256 answer to this trunk is refused: it was not offered.
    sha = offered[0].replace("algorithm=MD5", "algorithm=SHA-256")
    auth = digest_authorization(sha, method="INVITE", uri=URI, username="u", password="pw")
    assert screen.screen(source, request(auth=auth, cseq=2), 2.0).status == 401
    auth = digest_authorization(offered[0], method="INVITE", uri=URI, username="u",
                                password="pw")
    assert screen.screen(source, request(auth=auth, cseq=3), 2.0).action is SipAction.ALLOW


@pytest.mark.parametrize("value", [[], ["SHA-512"], "MD5", ["MD5", "MD5"], [1]])
def test_bad_values_refused(value: object) -> None:
    with pytest.raises(ConfigError, match="digest_algorithms"):
        parse_config(trunk_doc(digest_algorithms=value), ENV)

"""Property tests: hostile or random input never escapes as anything but the documented error."""

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import ConfigError, parse_config
from gateway.sip.auth import AuthResult, DigestAuthenticator, parse_authorization

AUTH = DigestAuthenticator(b"0123456789abcdef0123", max_tracked_nonces=8)

toml_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                         st.floats(allow_nan=True), st.text(max_size=20))
toml_values = st.recursive(toml_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=20)
keys = st.sampled_from(["sip", "rtp", "orga", "http", "limits", "security", "trunks", "routes",
                        "port", "bind", "allow", "match", "name", "username", "password_env",
                        "max_calls", "codecs", "temperature", "x"])
documents = st.dictionaries(keys, st.one_of(
    toml_values, st.dictionaries(keys, toml_values, max_size=6),
    st.lists(st.dictionaries(keys, toml_values, max_size=6), max_size=3)), max_size=6)


@settings(max_examples=300, deadline=None)
@given(documents)
def test_config_validation_never_crashes(raw: dict[str, object]) -> None:
    try:
        config = parse_config(raw, {"ORGA_API_KEY": "k"})
    except ConfigError as exc:
        assert exc.problems and all(" — " in p for p in exc.problems)
    else:
        assert config.api_key.reveal() == "k"


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300))
def test_authorization_parsing_never_crashes(value: str) -> None:
    parse_authorization(value)
    parse_authorization("Digest " + value)
    result = AUTH.verify("Digest " + value, method="INVITE", source_ip="192.0.2.1", now=1.0,
                         realm="r", username="u", password="p")
    assert result is not AuthResult.OK

"""Config keys of secure trunks: `[sip] transports = [..., "tls"]`, `tls_port`,
`tls_certificate`, `tls_private_key`, `tls_ca`; per trunk `srtp` and `tls_client_ca`. Bad
values and bad certificate files are reported as `key: problem — fix` by check-config."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, parse_config
from tests.certs import issue, make_ca

ENV = {"ORGA_API_KEY": "sk-test-key-123"}


def problems(raw: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, ENV)
    return list(info.value.problems)


def trunk(**extra: object) -> dict[str, object]:
    return {"name": "pbx", "allow": ["127.0.0.1/32"], **extra}


def test_defaults_and_a_good_tls_config(tmp_path: Path) -> None:
    config = parse_config({}, ENV)
    assert config.sip.tls_port == 5061 and config.sip.tls_certificate is None
    assert all(t.srtp == "optional" and t.tls_client_ca is None for t in config.trunks)
    ca = make_ca(tmp_path)
    leaf = issue(ca, tmp_path, "gw", names=("192.0.2.10",))
    config = parse_config({
        "sip": {"transports": ["udp", "tls"], "public_address": "192.0.2.10",
                "tls_certificate": str(leaf.cert), "tls_private_key": str(leaf.key),
                "tls_ca": str(ca.cert)},
        "trunks": [trunk(srtp="required", tls_client_ca=str(ca.cert))],
    }, ENV)
    assert config.sip.transports == ("udp", "tls")
    assert config.trunks[0].srtp == "required"
    assert config.trunks[0].tls_client_ca == str(ca.cert)
    assert config.warnings() == []


def test_tls_without_files_and_port_clash() -> None:
    found = problems({"sip": {"transports": ["tcp", "tls"], "port": 5070, "tls_port": 5070}})
    assert found == [
        "sip.tls_port: 5070 is sip.port, which TCP already listens on — use another port "
        "(5061 is the standard)",
        'sip.tls_certificate: is required with "tls" in sip.transports — set it to a PEM file '
        "(the certificate chain / its private key)",
        'sip.tls_private_key: is required with "tls" in sip.transports — set it to a PEM file '
        "(the certificate chain / its private key)",
    ]


def test_bad_certificate_files_are_named(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    a = issue(ca, tmp_path, "a", names=("sip.example.com",))
    b = issue(ca, tmp_path, "b")
    found = problems({"sip": {"transports": ["tls"], "public_address": "192.0.2.10",
                              "tls_certificate": str(a.cert), "tls_private_key": str(b.key),
                              "tls_ca": str(tmp_path / "none.pem")},
                      "trunks": [trunk(tls_client_ca=str(tmp_path / "missing-ca.pem"))]})
    keys = [p.split(":")[0] for p in found]
    assert keys == ["sip.tls_private_key", "sip.tls_certificate", "trunks.pbx.tls_client_ca",
                    "sip.tls_ca"], found
    assert "does not belong to the certificate" in found[0]
    assert "does not name '192.0.2.10'" in found[1]


def test_srtp_choices_and_client_ca_needs_tls() -> None:
    found = problems({"trunks": [trunk(srtp="mandatory", tls_client_ca="/etc/ca.pem")]})
    assert found == [
        'trunks[0].srtp: \'mandatory\' is not a choice — use "off" or "optional" or "required"',
        'trunks.pbx.tls_client_ca: has no effect without "tls" in sip.transports — add "tls" '
        "to sip.transports or remove tls_client_ca",
    ]


def test_required_srtp_without_tls_is_a_start_warning() -> None:
    config = parse_config({"trunks": [trunk(srtp="required")]}, ENV)
    (warning,) = config.warnings()
    assert "'pbx' requires SRTP" in warning and "tls" in warning


def test_check_config_warns_of_a_certificate_about_to_expire(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from gateway import config_cli

    ca = make_ca(tmp_path)
    leaf = issue(ca, tmp_path, "gw", days=3)
    path = tmp_path / "gw.toml"
    path.write_text(f'[sip]\ntransports = ["tls"]\ntls_certificate = "{leaf.cert}"\n'
                    f'tls_private_key = "{leaf.key}"\n\n[[trunks]]\nname = "pbx"\n'
                    f'allow = ["127.0.0.1/32"]\nsrtp = "required"\n'
                    f'tls_client_ca = "{ca.cert}"\n')
    monkeypatch.setenv("ORGA_API_KEY", "sk-test-key-123")
    assert config_cli.main(argparse.Namespace(config=str(path))) == 0
    out = capsys.readouterr()
    assert "warning: sip.tls_certificate: expires on" in out.err
    assert "tls (TLS on 5061)" in out.out and "mutual TLS, srtp required" in out.out

"""check-config's TLS file checks: readable, key matches, validity period, names covered."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from gateway.transport.tls_context import TlsFiles, check_files
from tests.certs import issue, make_ca


def test_good_files_pass_and_name_checks_cover_ips_dns_and_wildcards(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    leaf = issue(ca, tmp_path, "gw", names=("sip.example.com", "*.trunks.example.com",
                                            "192.0.2.10"))
    files = TlsFiles(str(leaf.cert), str(leaf.key), client_cas={"pbx": str(ca.cert)})
    names = ["sip.example.com", "a.trunks.example.com", "192.0.2.10"]
    assert check_files(files, names) == ([], [])
    problems, _ = check_files(files, ["other.example.com"])
    assert len(problems) == 1 and problems[0].startswith("sip.tls_certificate: does not name "
                                                         "'other.example.com'")


def test_each_broken_file_is_named_with_a_fix(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    a = issue(ca, tmp_path, "a")
    b = issue(ca, tmp_path, "b")
    problems, _ = check_files(TlsFiles(str(a.cert), str(b.key)))
    assert len(problems) == 1 and "does not belong to the certificate" in problems[0]
    problems, _ = check_files(TlsFiles(str(tmp_path / "nope.crt"), str(tmp_path / "nope.key"),
                                       client_cas={"pbx": str(a.key)}))
    assert [p.split(":")[0] for p in problems] == [
        "sip.tls_certificate", "sip.tls_private_key", "trunks.pbx.tls_client_ca"]
    assert all(" — " in p for p in problems)
    secret = b.key.read_text()
    assert not any(secret[40:80] in p for p in problems)


def test_validity_period(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    expired = issue(ca, tmp_path, "old", days=-1, start_days=-10)
    future = issue(ca, tmp_path, "future", days=20, start_days=2)
    soon = issue(ca, tmp_path, "soon", days=3)
    assert "expired on" in check_files(TlsFiles(str(expired.cert), str(expired.key)))[0][0]
    assert "not valid before" in check_files(TlsFiles(str(future.cert), str(future.key)))[0][0]
    problems, warnings = check_files(TlsFiles(str(soon.cert), str(soon.key)))
    assert problems == [] and "expires on" in warnings[0]
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=5)
    assert "expired on" in check_files(TlsFiles(str(soon.cert), str(soon.key)), now=later)[0][0]

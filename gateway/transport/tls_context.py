"""TLS settings for SIP over TLS (RFC 3261 §26.2, RFC 5922): the `ssl.SSLContext`s and their files.

Owns building the contexts from the configured files, swapping them on SIGHUP, and the checks
`check-config` runs on the files before a start:

- one server context with our certificate chain and key, TLS 1.2 or newer, forward-secret
  AEAD ciphers only (TLS 1.3 suites are OpenSSL's defaults, all modern);
- per trunk with a `tls_client_ca`, a server context that demands a client certificate signed
  by that CA (mutual TLS). A connection is matched to its trunk by source address before the
  handshake, the same way the security screen matches requests, so a client from an mTLS
  trunk's network without a good certificate is refused at the handshake;
- client contexts for connections we open: the server's certificate is verified against the
  trunk's `tls_client_ca` (the CA that signs that trunk's certificates), else the configured
  `[sip] tls_ca` bundle, else the system store; its name against the address we dial; and we
  present our own certificate if the server asks for one.

`reload()` builds every context from the files again and swaps them only when all succeeded:
a broken file at SIGHUP keeps the old contexts (and the calls) and reports why. Connections
already up keep the context they were made with, so no call drops.

Private keys must be unencrypted PEM files readable by the service user (mode 0600).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

# TLS 1.2 suites: ECDHE key exchange (forward secrecy) with AEAD only; no CBC, no RSA kx.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
# Certificates that expire within this many days are reported by check-config as a warning.
EXPIRY_WARNING_DAYS = 14


class TlsConfigError(Exception):
    """A TLS file could not be used; the message names the file and the problem, never a key."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    certificate: str
    private_key: str
    # trunk name → CA file whose signatures that trunk's clients must present (mutual TLS)
    client_cas: Mapping[str, str] = field(default_factory=dict)
    # CA bundle for servers we connect to (a trunk's client CA wins); None: the system store
    server_ca: str | None = None


def _server_context(files: TlsFiles, client_ca: str | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    _load_chain(ctx, files)
    if client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(f"{client_ca}: cannot load the client CA ({_why(exc)})") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _client_context(files: TlsFiles, cafile: str | None) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(f"{cafile}: cannot load the CA bundle ({_why(exc)})") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    _load_chain(ctx, files)  # presented when a trunk asks us for a client certificate
    return ctx


def _load_chain(ctx: ssl.SSLContext, files: TlsFiles) -> None:
    if not files.certificate:
        return  # a client only (the probe): no certificate to present, nothing to serve
    try:
        ctx.load_cert_chain(files.certificate, files.private_key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(f"{files.certificate} / {files.private_key}: cannot load the "
                             f"certificate chain and key ({_why(exc)})") from None


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


@dataclass(frozen=True, slots=True)
class _Contexts:
    server: ssl.SSLContext
    client: ssl.SSLContext
    trunk_server: dict[str, ssl.SSLContext]
    trunk_client: dict[str, ssl.SSLContext]


class TlsContexts:
    """The live TLS contexts; `trunk_of(host)` names the trunk a source address belongs to."""

    def __init__(self, files: TlsFiles, trunk_of: Callable[[str], str | None]) -> None:
        self._files = files
        self._trunk_of = trunk_of
        self._contexts = self._build(files)
        self.generation = 1  # counts successful loads (tests and logs)

    @staticmethod
    def _build(files: TlsFiles) -> _Contexts:
        return _Contexts(
            server=_server_context(files, None),
            client=_client_context(files, files.server_ca),
            trunk_server={name: _server_context(files, ca)
                          for name, ca in files.client_cas.items()},
            trunk_client={name: _client_context(files, ca)
                          for name, ca in files.client_cas.items()},
        )

    def server_context(self, host: str) -> ssl.SSLContext:
        """The context for a connection from `host`: its trunk's mTLS context, or the default."""
        trunk = self._trunk_of(host)
        ctx = self._contexts.trunk_server.get(trunk) if trunk is not None else None
        return ctx or self._contexts.server

    def requires_client_certificate(self, host: str) -> bool:
        return self.server_context(host).verify_mode == ssl.CERT_REQUIRED

    def client_context(self, host: str) -> ssl.SSLContext:
        """The context for a connection we open to `host` (verifies the server)."""
        trunk = self._trunk_of(host)
        ctx = self._contexts.trunk_client.get(trunk) if trunk is not None else None
        return ctx or self._contexts.client

    def reload(self, files: TlsFiles | None = None) -> None:
        """Load the files again (SIGHUP); on any failure keep the old contexts and raise."""
        files = files or self._files
        self._contexts = self._build(files)
        self._files = files
        self.generation += 1


# --- check-config --------------------------------------------------------------------------------

def check_files(files: TlsFiles, names: Sequence[str] = (), *,
                now: dt.datetime | None = None) -> tuple[list[str], list[str]]:
    """Problems and warnings with the TLS files, each `key: problem — fix`.

    Problems: unreadable or unparsable files, a key that does not belong to the certificate,
    a certificate outside its validity period, a name in `names` (the address we advertise)
    that the certificate does not cover. Warnings: expiry within `EXPIRY_WARNING_DAYS`.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    now = now or dt.datetime.now(dt.UTC)
    problems: list[str] = []
    warnings: list[str] = []
    certs: list[x509.Certificate] = []
    try:
        certs = x509.load_pem_x509_certificates(Path(files.certificate).read_bytes())
    except OSError as exc:
        problems.append(f"sip.tls_certificate: cannot read {files.certificate} ({_why(exc)}) "
                        "— check the path and that the service user may read it")
    except ValueError:
        problems.append(f"sip.tls_certificate: {files.certificate} holds no PEM certificate "
                        "— give the PEM chain, server certificate first")
    key = None
    try:
        key = serialization.load_pem_private_key(Path(files.private_key).read_bytes(), None)
    except OSError as exc:
        problems.append(f"sip.tls_private_key: cannot read {files.private_key} ({_why(exc)}) "
                        "— check the path and that the service user may read it")
    except (ValueError, TypeError):
        # TypeError: the key is encrypted. The text of the error never includes key material.
        problems.append(f"sip.tls_private_key: {files.private_key} is not an unencrypted PEM "
                        "private key — convert it (openssl pkey -in KEY -out KEY.pem)")
    if certs:
        leaf = certs[0]
        if key is not None and _public(key) != _public_of(leaf):
            problems.append(f"sip.tls_private_key: {files.private_key} does not belong to the "
                            f"certificate in {files.certificate} — use the key the certificate "
                            "was issued for")
        if leaf.not_valid_after_utc < now:
            problems.append(f"sip.tls_certificate: expired on "
                            f"{leaf.not_valid_after_utc:%Y-%m-%d} — renew it")
        elif leaf.not_valid_before_utc > now:
            problems.append(f"sip.tls_certificate: not valid before "
                            f"{leaf.not_valid_before_utc:%Y-%m-%d} — check the system clock "
                            "or the certificate")
        elif leaf.not_valid_after_utc - now < dt.timedelta(days=EXPIRY_WARNING_DAYS):
            warnings.append(f"sip.tls_certificate: expires on "
                            f"{leaf.not_valid_after_utc:%Y-%m-%d} — renew it soon")
        covered = certificate_names(leaf)
        for name in names:
            if not _covers(covered, name):
                problems.append(f"sip.tls_certificate: does not name {name!r} (it names "
                                f"{', '.join(sorted(covered)) or 'nothing'}) — issue it with "
                                f"subjectAltName DNS:{name} or IP:{name}")
    for trunk, path in files.client_cas.items():
        try:
            x509.load_pem_x509_certificates(Path(path).read_bytes())
        except OSError as exc:
            problems.append(f"trunks.{trunk}.tls_client_ca: cannot read {path} ({_why(exc)}) "
                            "— check the path and permissions")
        except ValueError:
            problems.append(f"trunks.{trunk}.tls_client_ca: {path} holds no PEM certificate "
                            "— give the CA certificate(s) in PEM")
    return problems, warnings


def certificate_names(cert: object) -> set[str]:
    """The names a certificate is valid for: subjectAltName DNS, IP and sip: URIs (RFC 5922
    §7.1); the subject CN only when there is no subjectAltName."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    assert isinstance(cert, x509.Certificate)
    names: set[str] = set()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
            names.add(str(attr.value).lower())
        return names
    names.update(n.lower() for n in san.get_values_for_type(x509.DNSName))
    names.update(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.lower().startswith("sip:"):
            names.add(uri[4:].lower())
    return names


def _covers(names: set[str], name: str) -> bool:
    name = name.lower().strip("[]")
    try:
        return str(ipaddress.ip_address(name)) in names
    except ValueError:
        pass
    if name in names:
        return True
    head, _, rest = name.partition(".")
    return bool(head) and f"*.{rest}" in names


def _public(key: object) -> bytes:
    from cryptography.hazmat.primitives import serialization

    public = key.public_key()  # type: ignore[attr-defined]
    return bytes(public.public_bytes(serialization.Encoding.DER,
                                     serialization.PublicFormat.SubjectPublicKeyInfo))


def _public_of(cert: object) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(cert.public_key().public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))

"""Certificates and tokens for the security tests (fixtures: conftest.py).

Certificates are generated at test time with ``cryptography``: :func:`make_ca`
makes a self-signed CA; :meth:`CertificateAuthority.issue` signs a server
certificate (SANs ``localhost`` and ``127.0.0.1``) or a client certificate
with it; :func:`make_pki` makes the set the tests use. Everything is written
as PEM files, the form both kvserver and :class:`keyvalue.Client` read. Keys
are EC P-256: quick to make.

The tokens are those of :data:`TOKEN_FILE`, for ``kvserver --auth-token-file``.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=1)

READ_TOKEN = "read-token-0123"
"""May call the methods that read, on every key."""
WRITE_TOKEN = "write-token-4567"
"""May call every method, on every key."""
SCOPED_TOKEN = "scoped-token-89ab"
"""May call every method, on the keys under :data:`SCOPE` only."""
SCOPE = "team-a/"
TOKEN_FILE = f"""\
# token role [prefix]
{READ_TOKEN} read
{WRITE_TOKEN} readwrite
{SCOPED_TOKEN} readwrite {SCOPE}
"""


@dataclass(frozen=True)
class CertFiles:
    """A PEM certificate and its PEM private key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA: its certificate file, and what it needs to sign more."""

    cert: Path
    _certificate: x509.Certificate
    _key: ec.EllipticCurvePrivateKey

    def issue(self, directory: Path, name: str, *, server: bool) -> CertFiles:
        """Sign a certificate for ``name``, written to ``directory/name.{pem,key}``.

        Args:
            directory: Where the two files go.
            name: The file stem and the certificate's common name.
            server: A server certificate (SANs ``localhost``, ``127.0.0.1``;
                server auth) rather than a client one (client auth).
        """
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self._certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
        certificate = builder.sign(self._key, hashes.SHA256())
        return _write(directory, name, certificate, key)


@dataclass(frozen=True)
class Pki:
    """The certificate files of a test session."""

    ca: Path
    """The CA that signed ``server`` and ``client``."""
    server: CertFiles
    client: CertFiles
    other_ca: Path
    """An unrelated CA, which signed ``other_client``."""
    other_client: CertFiles

    def server_args(self) -> list[str]:
        """The kvserver flags that serve TLS with ``server``."""
        return ["--tls-cert", str(self.server.cert), "--tls-key", str(self.server.key)]


def make_pki(directory: Path) -> Pki:
    """Two CAs, a server certificate and a client certificate from each, in ``directory``."""
    ca = make_ca(directory, "ca")
    other = make_ca(directory, "other-ca")
    return Pki(
        ca=ca.cert,
        server=ca.issue(directory, "server", server=True),
        client=ca.issue(directory, "client", server=False),
        other_ca=other.cert,
        other_client=other.issue(directory, "other-client", server=False),
    )


def make_ca(directory: Path, name: str = "test-ca") -> CertificateAuthority:
    """A new self-signed CA, its certificate written to ``directory/name.pem``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    files = _write(directory, name, certificate, key)
    return CertificateAuthority(cert=files.cert, _certificate=certificate, _key=key)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(
    directory: Path, name: str, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> CertFiles:
    files = CertFiles(cert=directory / f"{name}.pem", key=directory / f"{name}.key")
    files.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files

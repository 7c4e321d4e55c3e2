"""A throwaway certificate authority for the secure local broker: CA, broker and client certificates.

Everything is PEM, which both sides read directly: the broker with ``ssl.keystore.type=PEM`` and
``ssl.truststore.type=PEM`` (Kafka 3.9), librdkafka with ``ssl.ca.location`` / ``ssl.certificate.location``
/ ``ssl.key.location``. A client certificate's subject is ``CN=<principal>`` only, so the broker's
``ssl.principal.mapping.rules`` turns it into ``User:<principal>`` for the ACLs.

The files live under ``<data_dir>/kafka/security`` (never in git); keys are written 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Short-lived on purpose: a local CA that outlives its broker is a liability, and a restart renews.
VALIDITY = dt.timedelta(days=30)


@dataclass(frozen=True, slots=True)
class CertFiles:
    """PEM paths of one identity: its certificate, its private key (PKCS#8) and both in one file."""

    cert: Path
    key: Path
    bundle: Path  # key + certificate chain: what a PEM keystore's ssl.keystore.location reads


def _write(path: Path, data: bytes, *, secret: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created with the final mode: a key must never be world-readable, not even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _key() -> ec.EllipticCurvePrivateKey:
    # P-256: fast to generate (a fresh CA per test module), accepted by Java and OpenSSL alike.
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # Unencrypted PKCS#8: the only private-key PEM form both Kafka's PEM keystore and librdkafka read.
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class CertificateAuthority:
    """Creates (once) and signs with a CA kept under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.ca_cert_path = self.directory / "ca.pem"
        self.ca_key_path = self.directory / "ca.key"
        self.created = False  # True when this call made a new CA: every certificate must be reissued
        if self.ca_cert_path.is_file() and self.ca_key_path.is_file():
            self.cert = x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())
            loaded = serialization.load_pem_private_key(self.ca_key_path.read_bytes(), None)
            assert isinstance(loaded, ec.EllipticCurvePrivateKey)
            self.key = loaded
            if not expiring(self.ca_cert_path):
                return
        self.created = True
        self.key = _key()
        self.cert = self_signed(self.key, "its-local-ca", ca=True)
        _write(self.ca_key_path, _key_pem(self.key), secret=True)
        _write(self.ca_cert_path, self.cert.public_bytes(serialization.Encoding.PEM), secret=False)

    def issue(
        self, common_name: str, *, server: bool = False, hosts: tuple[str, ...] = (), name: str | None = None
    ) -> CertFiles:
        """A certificate for ``CN=common_name`` signed by this CA (a server one carries ``hosts`` as SANs)."""
        key = _key()
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))  # clock skew between processes
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                # The broker is a TLS client too (to its own controller listener): both usages.
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                    if server
                    else [ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if hosts:
            sans: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    sans.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return write_identity(self.directory, name or common_name, key, [cert, self.cert])


def expiring(cert_path: Path, margin: dt.timedelta = dt.timedelta(days=1)) -> bool:
    """True when the (first) certificate in ``cert_path`` is missing or ends within ``margin``."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return True
    return cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < margin


def self_signed(key: ec.EllipticCurvePrivateKey, common_name: str, *, ca: bool = False) -> x509.Certificate:
    """A self-signed certificate: the CA's own, or (``ca=False``) one a broker must refuse."""
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
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
    return builder.sign(key, hashes.SHA256())


def write_identity(
    directory: Path, name: str, key: ec.EllipticCurvePrivateKey, chain: list[x509.Certificate]
) -> CertFiles:
    """Write ``<name>.pem`` (chain), ``<name>.key`` and ``<name>.bundle.pem`` (key + chain)."""
    files = CertFiles(directory / f"{name}.pem", directory / f"{name}.key", directory / f"{name}.bundle.pem")
    chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    key_pem = _key_pem(key)
    _write(files.cert, chain_pem, secret=False)
    _write(files.key, key_pem, secret=True)
    _write(files.bundle, key_pem + chain_pem, secret=True)
    return files


def self_signed_identity(directory: Path, common_name: str) -> CertFiles:
    """A client identity no CA vouches for (what an impostor would present)."""
    key = _key()
    return write_identity(directory, f"selfsigned-{common_name}", key, [self_signed(key, common_name)])

"""The deployment's own certificate authorities (the site API's, the MPC parties'): a P-256 CA
kept as `ca.crt` and `ca.key` in a folder, and the leaf certificates it issues, each naming one
host or site (CN and DNS names) with only the uses it needs. Files are written whole or not at
all, private ones readable by their owner only."""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# The project's OID arc for its own certificate extensions and usages: 2.25.<a UUID as an
# integer> (ITU-T X.667), made once for it. The MPC CA's use .1 to .3
# (jobs/engines/mpc/certificates.py), the site API CA's storage usage .4
# (parties/site_certificates.py).
ARC = "2.25.169216588681285289786902714113949489106"

# The longest validity TLS clients accept for a leaf certificate (CA/Browser Forum's 825 days).
VALIDITY = datetime.timedelta(days=825)
# Issued a little in the past, so a peer whose clock runs behind accepts a new certificate.
BACKDATE = datetime.timedelta(minutes=5)


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Write atomically into a private folder: a reader sees the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not signs_certificates,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _builder(subject: x509.Name, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
    )


@dataclass(frozen=True)
class Leaf:
    """A certificate the authority issued, with its new private key."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    def save(self, folder: Path) -> None:
        """As `tls.key` (0600) and `tls.crt` (0644) in `folder`."""
        write_file(folder / "tls.key", private_pem(self.key), 0o600)
        write_file(
            folder / "tls.crt", self.certificate.public_bytes(serialization.Encoding.PEM), 0o644
        )


@dataclass(frozen=True)
class Authority:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(cls, name: str, folder: Path) -> Authority:
        """A new CA named `name`, saved in `folder` as `ca.key` (0600) and `ca.crt` (0644)."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        certificate = (
            _builder(subject, subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(signs_certificates=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        write_file(folder / "ca.key", private_pem(key), 0o600)
        write_file(folder / "ca.crt", certificate.public_bytes(serialization.Encoding.PEM), 0o644)
        return cls(key, certificate)

    @classmethod
    def load(cls, folder: Path) -> Authority:
        """The CA saved in `folder`; ValueError when its key is not one `create` makes."""
        key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"The CA key in {folder} is not the EC key this project makes.")
        return cls(key, x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes()))

    def issue(
        self,
        common_name: str,
        dns_names: Iterable[str],
        usages: Iterable[x509.ObjectIdentifier],
        extensions: Iterable[x509.ExtensionType] = (),
    ) -> Leaf:
        """A leaf certificate for a new P-256 key: CN `common_name`, those DNS names, signing
        only (no CA), the extended key `usages`, and any further non-critical `extensions`."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        builder = (
            _builder(subject, self.certificate.subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(signs_certificates=False), critical=True)
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(name) for name in dns_names]),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        for extension in extensions:
            builder = builder.add_extension(extension, critical=False)
        return Leaf(key, builder.sign(self.key, hashes.SHA256()))

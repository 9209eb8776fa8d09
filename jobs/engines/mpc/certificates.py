"""The deployment's MPC certificate authority and each compute party's credentials.

Under the credentials folder (MPC_CREDENTIALS_DIR, default var/mpc/; `MpcConfig.credentials`):

    ca.crt, ca.key                 the per-deployment MPC CA (P-256), signs party certificates
    parties/<site>/tls.crt, .key   the party's TLS certificate (CN and DNS name = the site name,
                                   client and server use) and key
    parties/<site>/share.key       the party's X25519 key: owners seal its input shares to it

A party accepts a peer only if the peer's certificate chains to this CA and names the site the
job placed at that party index (dataplane/mpc/party.py checks both directions), so a party
cannot claim another party's index. `manage.py mpc_credentials` makes them ahead of time; the
first use makes whatever is missing, under a file lock, so concurrent workers agree on one CA.
In a production deployment the CA key belongs offline: copy each site only its own folder and
ca.crt.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cleanroom.crypto.sealing import public_bytes

CA_NAME = "Cleanroom MPC CA"
_VALIDITY = datetime.timedelta(days=825)
_SITE_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62})$")


@dataclass(frozen=True)
class TlsFiles:
    """What a party process needs to speak TLS: the CA to trust, its certificate and key."""

    ca: Path
    certificate: Path
    key: Path


def _site_folder(root: Path, site: str) -> Path:
    if not _SITE_NAME.match(site):
        raise ValueError(f"{site!r} is not a site name.")
    return root / "parties" / site


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically: a reader sees the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(root / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _make_ca(root: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
    _write(root / "ca.key", _pem_key(key), 0o600)
    _write(root / "ca.crt", certificate.public_bytes(serialization.Encoding.PEM), 0o644)


def _make_party(root: Path, site: str) -> None:
    ca_key = serialization.load_pem_private_key((root / "ca.key").read_bytes(), password=None)
    ca = x509.load_pem_x509_certificate((root / "ca.crt").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, site)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(site)]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder = _site_folder(root, site)
    share_key = X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    _write(folder / "share.key", share_key, 0o600)
    _write(folder / "tls.key", _pem_key(key), 0o600)
    _write(folder / "tls.crt", certificate.public_bytes(serialization.Encoding.PEM), 0o644)


def ensure_credentials(root: Path, sites: list[str]) -> list[str]:
    """Make the CA and the named sites' credentials where missing; return the sites made."""
    made = []
    with _locked(root):
        if not (root / "ca.crt").exists():
            _make_ca(root)
        for site in sites:
            if not (_site_folder(root, site) / "tls.crt").exists():
                _make_party(root, site)
                made.append(site)
    return made


def _site_file(root: Path, site: str, name: str) -> Path:
    path = _site_folder(root, site) / name
    if not path.exists():
        ensure_credentials(root, [site])
    return path


def party_private_key(root: Path, site: str) -> X25519PrivateKey:
    """The key that opens input shares sealed to the party at `site`."""
    return X25519PrivateKey.from_private_bytes(_site_file(root, site, "share.key").read_bytes())


def party_public_key(root: Path, site: str) -> bytes:
    """The raw X25519 public key owners seal the party's input shares to."""
    return public_bytes(party_private_key(root, site))


def party_tls_files(root: Path, site: str) -> TlsFiles:
    certificate = _site_file(root, site, "tls.crt")
    folder = certificate.parent
    return TlsFiles(ca=root / "ca.crt", certificate=certificate, key=folder / "tls.key")

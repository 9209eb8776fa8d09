"""The deployment's site API CA: the control plane's server certificate and each site's client
certificate: the identity a site signs its site API requests with (and its client certificate
for mutual TLS, where a deployment adds it in front).

What `manage.py site_certificates` makes, in one folder (SITE_API_CREDENTIALS_DIR, default
var/site-api/):

    ca.crt, ca.key              the site API CA (P-256), apart from the MPC CA   (ca.key: offline)
    control/tls.crt, tls.key    the site API's server certificate: the DNS names it is reached
                                at, server use
    sites/<site>/tls.crt, .key  a site's client certificate: CN and DNS name = the site name,
                                client use only; the site's identity at the site API

A site's host gets `ca.crt` and its own `sites/<site>/` folder; the control plane's site API
`ca.crt` and `control/`. The CA is separate from the MPC CA (`manage.py mpc_credentials`): a
party's MPC certificate does not open the site API, nor a site's client certificate an MPC
party's channel. The site API checks a site's certificate on every signed request
(jobs/sites/authentication.py; deploy/README.md, "Certificates" and "The site API").
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_NAME = "Cleanroom site API CA"
VALIDITY = datetime.timedelta(days=825)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically, private folders: a reader sees the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


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
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(root / "ca.key", _key_pem(key), 0o600)
    _write(root / "ca.crt", certificate.public_bytes(serialization.Encoding.PEM), 0o644)


def _issue(root: Path, folder: Path, common_name: str, names: list[str], usage) -> None:
    ca_key = serialization.load_pem_private_key((root / "ca.key").read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"The site API CA key in {root} is not the EC key this module makes.")
    ca = x509.load_pem_x509_certificate((root / "ca.crt").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(folder / "tls.key", _key_pem(key), 0o600)
    _write(folder / "tls.crt", certificate.public_bytes(serialization.Encoding.PEM), 0o644)


def _server_names(path: Path) -> list[str]:
    certificate = x509.load_pem_x509_certificate(path.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return sorted(names.get_values_for_type(x509.DNSName))


def ensure_site_certificates(root: Path, sites: list[str], server_names: list[str]) -> list[str]:
    """Make the CA, the site API's server certificate for `server_names` (again, when it names
    others) and each site's client certificate, where missing; return what was made."""
    made = []
    names = list(dict.fromkeys(server_names))  # in the order given, each once
    if not (root / "ca.crt").exists():
        _make_ca(root)
        made.append("ca")
    elif not (root / "ca.key").exists():
        raise ValueError(f"{root} has a ca.crt but not its ca.key: only the CA makes certificates.")
    server = root / "control" / "tls.crt"
    if not server.exists() or _server_names(server) != sorted(names):
        _issue(root, server.parent, names[0], names, ExtendedKeyUsageOID.SERVER_AUTH)
        made.append("control")
    for site in sites:
        folder = root / "sites" / site
        if not (folder / "tls.crt").exists():
            _issue(root, folder, site, [site], ExtendedKeyUsageOID.CLIENT_AUTH)
            made.append(site)
    return made

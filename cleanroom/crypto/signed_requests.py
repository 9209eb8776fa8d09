"""Signed requests with a certificate from the deployment's site API CA
(parties/site_certificates.py): the caller signs the method, the path, the body's SHA-256, a
timestamp and a nonce with its certificate's key, and sends the certificate with them. The
receiving side checks the certificate chains to that CA, is in date and has the usage it asks
for, and that the signature is the certificate key's; then the timestamp is fresh and (its
own store) the nonce unused.

Two uses: a site calling the site API (client use; the control plane then checks the common
name is an active site, jobs/sites/authentication.py), and the web tier storing a dataset file
at a jurisdiction's storage receiver (the dataset-storing usage, parties/storage_receiver.py).
A certificate has one of the two usages, so neither opens the other's door.

No Django here: a site process and the web tier sign with this module, the control plane and
the storage receivers verify with it."""

from __future__ import annotations

import base64
import hashlib
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERTIFICATE = "X-Site-Certificate"
TIMESTAMP = "X-Site-Timestamp"
NONCE = "X-Site-Nonce"
SIGNATURE = "X-Site-Signature"

# How far a request's timestamp may be from the control plane's clock, either way. A nonce is
# kept as long as its request could be accepted, so a replay inside the window is refused too.
MAX_SKEW_SECONDS = 60


class SignatureRefused(Exception):
    """The request is not a site's: the reason says what failed, for the refusal and the log."""


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def signed_message(method: str, path: str, body_sha256: str, timestamp: str, nonce: str) -> bytes:
    return "\n".join(
        ["cleanroom-site-api-v1", method.upper(), path, body_sha256, timestamp, nonce]
    ).encode()


@dataclass(frozen=True)
class SiteCredentials:
    """A site's certificate and its private key, as `manage.py site_certificates` writes them."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def load(cls, certificate: bytes, key: bytes) -> SiteCredentials:
        private = serialization.load_pem_private_key(key, password=None)
        if not isinstance(private, ec.EllipticCurvePrivateKey):
            raise ValueError("A site's key is the EC key `manage.py site_certificates` makes.")
        return cls(x509.load_pem_x509_certificate(certificate), private)

    def headers(self, method: str, path: str, body: bytes) -> dict[str, str]:
        return self.headers_for_digest(method, path, body_digest(body))

    def headers_for_digest(self, method: str, path: str, body_sha256: str) -> dict[str, str]:
        """Signed headers for a body known by its SHA-256 (a large file, streamed after them)."""
        timestamp, nonce = str(int(time.time())), os.urandom(16).hex()
        signature = self.key.sign(
            signed_message(method, path, body_sha256, timestamp, nonce), ec.ECDSA(hashes.SHA256())
        )
        return {
            CERTIFICATE: base64.b64encode(
                self.certificate.public_bytes(serialization.Encoding.DER)
            ).decode(),
            TIMESTAMP: timestamp,
            NONCE: nonce,
            SIGNATURE: base64.b64encode(signature).decode(),
        }


@dataclass(frozen=True)
class SignedRequest:
    """What a verified signature says: the signer (its certificate's common name: a site, or
    the storage writer), and the nonce and timestamp the caller still checks for reuse."""

    site: str
    nonce: str
    timestamp: int


def verify(
    ca: x509.Certificate,
    method: str,
    path: str,
    body_sha256: str,
    headers: dict[str, str],
    now: datetime | None = None,
    usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.CLIENT_AUTH,
) -> SignedRequest:
    """Check a request's signature and certificate against the site API CA, the certificate
    having `usage` (by default a site's: client use); SignatureRefused otherwise. The nonce's
    reuse is the caller's to check (it needs a store)."""
    now = now or datetime.now(UTC)
    try:
        certificate = x509.load_der_x509_certificate(base64.b64decode(headers[CERTIFICATE]))
        timestamp, nonce = headers[TIMESTAMP], headers[NONCE]
        signature = base64.b64decode(headers[SIGNATURE])
    except KeyError as exc:
        raise SignatureRefused(f"not a signed site request (no {exc.args[0]} header)") from None
    except ValueError:
        raise SignatureRefused("not a signed site request (a header is malformed)") from None
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise SignatureRefused(
            "the certificate is not from this deployment's site API CA"
        ) from None
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise SignatureRefused("the certificate is not valid now")
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = x509.ExtendedKeyUsage([])
    if usage not in usages:
        if usage == ExtendedKeyUsageOID.CLIENT_AUTH:
            raise SignatureRefused("the certificate is not a site's (not for client use)")
        raise SignatureRefused(f"the certificate does not have the usage {usage.dotted_string}")
    public = certificate.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise SignatureRefused("the certificate's key is not an EC key")
    try:
        public.verify(
            signature,
            signed_message(method, path, body_sha256, timestamp, nonce),
            ec.ECDSA(hashes.SHA256()),
        )
    except InvalidSignature:
        raise SignatureRefused("the signature does not match the request") from None
    if not timestamp.isdigit() or abs(now.timestamp() - int(timestamp)) > MAX_SKEW_SECONDS:
        raise SignatureRefused(f"the timestamp is more than {MAX_SKEW_SECONDS} s from now")
    if len(nonce) != 32 or not all(c in "0123456789abcdef" for c in nonce):
        raise SignatureRefused("the nonce is not 16 random bytes in hex")
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        raise SignatureRefused("the certificate does not name one signer")
    return SignedRequest(site=str(names[0].value), nonce=nonce, timestamp=int(timestamp))

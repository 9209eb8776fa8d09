"""Signed site API requests: a site signs the method, the path, the body's digest, a timestamp
and a nonce with the key of its certificate from the deployment's site API CA
(parties/site_certificates.py), and sends the certificate with them. The control plane checks
the certificate chains to that CA, is in date and for client use, names an active site (its
common name), and that the signature is the certificate key's; then the timestamp is fresh and
the nonce unused (jobs/sites/authentication.py).

No Django here: a site process signs with this module, the control plane verifies with it."""

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


def signed_message(method: str, path: str, body: bytes, timestamp: str, nonce: str) -> bytes:
    return "\n".join(
        [
            "cleanroom-site-api-v1",
            method.upper(),
            path,
            hashlib.sha256(body).hexdigest(),
            timestamp,
            nonce,
        ]
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
        timestamp, nonce = str(int(time.time())), os.urandom(16).hex()
        signature = self.key.sign(
            signed_message(method, path, body, timestamp, nonce), ec.ECDSA(hashes.SHA256())
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
    """What a verified signature says: the site (its certificate's common name), and the nonce
    and timestamp the caller still checks for reuse."""

    site: str
    nonce: str
    timestamp: int


def verify(
    ca: x509.Certificate,
    method: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    now: datetime | None = None,
) -> SignedRequest:
    """Check a request's signature and certificate against the site API CA; SignatureRefused
    otherwise. The nonce's reuse is the caller's to check (it needs a store)."""
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
        usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usage = x509.ExtendedKeyUsage([])
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
        raise SignatureRefused("the certificate is not a site's (not for client use)")
    public = certificate.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise SignatureRefused("the certificate's key is not an EC key")
    try:
        public.verify(
            signature,
            signed_message(method, path, body, timestamp, nonce),
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
        raise SignatureRefused("the certificate does not name one site")
    return SignedRequest(site=str(names[0].value), nonce=nonce, timestamp=int(timestamp))

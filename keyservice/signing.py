"""Signed requests: each caller of a key service (the platform's web tier, a TEE host) holds an
Ed25519 key whose public half the organisation pinned; a request carries the caller's name,
the time and a signature over the method, path, time and body digest. The service answers
only pinned callers, and only within a few minutes of the signed time."""

from __future__ import annotations

import base64
import hashlib
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

HEADER = "X-Cleanroom-Signature"
FRESHNESS = 120  # seconds either way


class Unauthenticated(Exception):
    pass


def _message(method: str, path: str, at: int, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return f"cleanroom-keyservice-request/v1\n{method}\n{path}\n{at}\n{digest}\n".encode()


def sign_request(
    caller: str, key: Ed25519PrivateKey, method: str, path: str, body: bytes, at: int | None = None
) -> str:
    at = int(time.time()) if at is None else at
    signature = base64.b64encode(key.sign(_message(method, path, at, body))).decode()
    return f"caller={caller},time={at},signature={signature}"


def check_request(
    header: str | None, callers: dict[str, bytes], method: str, path: str, body: bytes
) -> str:
    """The pinned caller that signed the request, or Unauthenticated."""
    if not header:
        raise Unauthenticated("the request is not signed")
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        caller, at = fields["caller"], int(fields["time"])
        signature = base64.b64decode(fields["signature"], validate=True)
    except (ValueError, KeyError):
        raise Unauthenticated("the signature header cannot be read") from None
    if caller not in callers:
        raise Unauthenticated(f"{caller!r} is not a caller this key service answers")
    if abs(time.time() - at) > FRESHNESS:
        raise Unauthenticated("the request's signed time is not now")
    try:
        Ed25519PublicKey.from_public_bytes(callers[caller]).verify(
            signature, _message(method, path, at, body)
        )
    except InvalidSignature:
        raise Unauthenticated("the request's signature does not verify") from None
    return caller

"""Sealing a secret to a public key (X25519 or P-256, HKDF-SHA256, AES-256-GCM).

The key service seals a dataset's data key to the enclave's ephemeral public key, which the
attestation document carries; only the attested enclave holds the matching private key.
Results and MPC output shares are sealed to a receiving key that lives in the receiver's key
service token: P-256, since PKCS#11 tokens, HSMs and cloud KMSs agree keys on NIST curves, and
opened there by key agreement (`open_received`), the private half never leaving the token.
Standard library + cryptography only: the enclave imports it without Django.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def _key(shared: bytes, context: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"cleanroom-seal/v1\n" + context
    ).derive(shared)


def seal(recipient: bytes, secret: bytes, *, context: bytes) -> bytes:
    """Encrypt `secret` so only the holder of `recipient`'s private key can read it."""
    ephemeral = X25519PrivateKey.generate()
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient))
    nonce = os.urandom(12)
    sealed = AESGCM(_key(shared, context)).encrypt(nonce, secret, context)
    return ephemeral.public_key().public_bytes_raw() + nonce + sealed


def open_sealed(private_key: X25519PrivateKey, blob: bytes, *, context: bytes) -> bytes:
    shared = private_key.exchange(X25519PublicKey.from_public_bytes(blob[:32]))
    return AESGCM(_key(shared, context)).decrypt(blob[32:44], blob[44:], context)


def public_bytes(private_key: X25519PrivateKey) -> bytes:
    return private_key.public_key().public_bytes_raw()


_POINT = 65  # an uncompressed P-256 point


def seal_for_receiver(recipient: bytes, secret: bytes, *, context: bytes) -> bytes:
    """Encrypt `secret` to a receiving key (an uncompressed P-256 point)."""
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), recipient)
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    shared = ephemeral.exchange(ec.ECDH(), public)
    nonce = os.urandom(12)
    sealed = AESGCM(_key(shared, context)).encrypt(nonce, secret, context)
    point = ephemeral.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return point + nonce + sealed


def open_received(agree: Callable[[bytes], bytes], blob: bytes, *, context: bytes) -> bytes:
    """Open what `seal_for_receiver` sealed, `agree` being the receiving key's ECDH with the
    sender's ephemeral point (done where the private key lives)."""
    shared = agree(blob[:_POINT])
    return AESGCM(_key(shared, context)).decrypt(
        blob[_POINT : _POINT + 12], blob[_POINT + 12 :], context
    )

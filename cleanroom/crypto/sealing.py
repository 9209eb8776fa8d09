"""Sealing a secret to a public key (X25519, HKDF-SHA256, AES-256-GCM).

The key service seals a dataset's data key to the enclave's ephemeral public key, which the
attestation document carries; only the attested enclave holds the matching private key.
Standard library + cryptography only: the enclave imports it without Django.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_RAW = {"encoding": serialization.Encoding.Raw, "format": serialization.PublicFormat.Raw}


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
    return ephemeral.public_key().public_bytes(**_RAW) + nonce + sealed


def open_sealed(private_key: X25519PrivateKey, blob: bytes, *, context: bytes) -> bytes:
    shared = private_key.exchange(X25519PublicKey.from_public_bytes(blob[:32]))
    return AESGCM(_key(shared, context)).decrypt(blob[32:44], blob[44:], context)


def public_bytes(private_key: X25519PrivateKey) -> bytes:
    return private_key.public_key().public_bytes(**_RAW)

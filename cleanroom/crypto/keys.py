"""Keys behind an interface a cloud KMS implements: key-encryption keys (KEKs) and Ed25519
signing keys (organisations sign approvals, the platform signs log checkpoints).

Private keys never leave the key service; callers get key ids, wrapped keys, signatures and
public keys. Data keys are wrapped with AES-256-GCM under the organisation's KEK, with a context
(dataset, version, content digest) as associated data: a wrapped key only unwraps for the version
it was made for. The local service keeps keys as files readable only by the service's user; the
web tier of a production deployment talks to a KMS instead and never holds a KEK.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from functools import cache
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string


class KeyServiceError(Exception):
    pass


class KeyService(Protocol):
    def create_key(self) -> str: ...

    def destroy_key(self, kek_id: str) -> None: ...

    def wrap(self, kek_id: str, data_key: bytes, *, context: dict[str, str]) -> bytes: ...

    def unwrap(self, kek_id: str, wrapped: bytes, *, context: dict[str, str]) -> bytes: ...

    def create_signing_key(self) -> str: ...

    def sign(self, key_id: str, message: bytes) -> bytes: ...

    def public_key(self, key_id: str) -> bytes: ...

    def receiving_key(self, label: str) -> bytes: ...

    def agree(self, label: str, peer: bytes) -> bytes: ...

    def destroy_receiving_key(self, label: str) -> None: ...


def _aad(context: dict[str, str]) -> bytes:
    return json.dumps(context, sort_keys=True, separators=(",", ":")).encode()


class LocalKeyService:
    """Keys as files under KEY_SERVICE_ROOT (mode 0600): `kek-*` for AES-256 KEKs, `sig-*` for
    Ed25519 seeds, `rcv-*` for P-256 receiving keys (results, MPC deliveries)."""

    def __init__(self, root: Path):
        self.root = root

    def _path(self, key_id: str, prefix: str = "kek-") -> Path:
        if not key_id.startswith(prefix) or not key_id[4:].isalnum():
            raise KeyServiceError(f"malformed key id {key_id!r}")
        return self.root / f"{key_id}.key"

    def _create(self, prefix: str, material: bytes, name: str | None = None) -> str:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        key_id = f"{prefix}{name or secrets.token_hex(16)}"
        fd = os.open(self._path(key_id, prefix), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(material)
        return key_id

    def _read(self, key_id: str, prefix: str) -> bytes:
        try:
            return self._path(key_id, prefix).read_bytes()
        except FileNotFoundError:
            raise KeyServiceError(f"unknown key {key_id}") from None

    def create_key(self) -> str:
        return self._create("kek-", AESGCM.generate_key(bit_length=256))

    def destroy_key(self, kek_id: str) -> None:
        """Delete a KEK: whatever it wrapped, wherever copies of the wrapped keys went, can
        never be unwrapped again. Deleting twice is harmless."""
        self._path(kek_id).unlink(missing_ok=True)

    def _kek(self, kek_id: str) -> AESGCM:
        return AESGCM(self._read(kek_id, "kek-"))

    def create_signing_key(self) -> str:
        return self._create("sig-", os.urandom(32))

    def _signer(self, key_id: str) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self._read(key_id, "sig-"))

    def sign(self, key_id: str, message: bytes) -> bytes:
        return self._signer(key_id).sign(message)

    def public_key(self, key_id: str) -> bytes:
        return self._signer(key_id).public_key().public_bytes_raw()

    def _receiving(self, label: str) -> ec.EllipticCurvePrivateKey:
        value = int.from_bytes(self._read(f"rcv-{label}", "rcv-"))
        return ec.derive_private_key(value, ec.SECP256R1())

    def receiving_key(self, label: str) -> bytes:
        """The public point of the receiving key `label`, made on first use."""
        try:
            private = self._receiving(label)
        except KeyServiceError:
            scalar = ec.generate_private_key(ec.SECP256R1()).private_numbers().private_value
            with contextlib.suppress(FileExistsError):  # made meanwhile by another process
                self._create("rcv-", scalar.to_bytes(32), name=label)
            private = self._receiving(label)
        return private.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)

    def agree(self, label: str, peer: bytes) -> bytes:
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), peer)
        try:
            private = self._receiving(label)
        except KeyServiceError:
            raise KeyError(f"unknown receiving key {label}") from None
        return private.exchange(ec.ECDH(), public)

    def destroy_receiving_key(self, label: str) -> None:
        self._path(f"rcv-{label}", "rcv-").unlink(missing_ok=True)

    def wrap(self, kek_id: str, data_key: bytes, *, context: dict[str, str]) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._kek(kek_id).encrypt(nonce, data_key, _aad(context))

    def unwrap(self, kek_id: str, wrapped: bytes, *, context: dict[str, str]) -> bytes:
        try:
            return self._kek(kek_id).decrypt(wrapped[:12], wrapped[12:], _aad(context))
        except InvalidTag:
            raise KeyServiceError("wrapped key does not match its key or context") from None


@cache
def key_service() -> KeyService:
    if settings.KEY_SERVICE_ROOT is None:
        raise ImproperlyConfigured(
            "This is a site process (CLEANROOM_ROLE=site): it has no key folder. Data keys "
            "come from their owners' key services, sealed to an enclave."
        )
    cls = import_string(settings.KEY_SERVICE)
    return cls(settings.KEY_SERVICE_ROOT)

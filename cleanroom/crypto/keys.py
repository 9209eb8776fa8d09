"""Key-encryption keys (KEKs), one per organisation, behind an interface a cloud KMS implements.

Data keys are wrapped with AES-256-GCM under the organisation's KEK, with a context (dataset,
version, content digest) as associated data: a wrapped key only unwraps for the version it was
made for. The local service keeps KEKs as files readable only by the service's user; the web tier
of a production deployment talks to a KMS instead and never holds a KEK.
"""

from __future__ import annotations

import json
import os
import secrets
from functools import cache
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.utils.module_loading import import_string


class KeyServiceError(Exception):
    pass


class KeyService(Protocol):
    def create_key(self) -> str: ...

    def wrap(self, kek_id: str, data_key: bytes, *, context: dict[str, str]) -> bytes: ...

    def unwrap(self, kek_id: str, wrapped: bytes, *, context: dict[str, str]) -> bytes: ...


def _aad(context: dict[str, str]) -> bytes:
    return json.dumps(context, sort_keys=True, separators=(",", ":")).encode()


class LocalKeyService:
    """KEKs as 32-byte files under KEY_SERVICE_ROOT (mode 0600)."""

    def __init__(self, root: Path):
        self.root = root

    def _path(self, kek_id: str) -> Path:
        if not kek_id.startswith("kek-") or not kek_id[4:].isalnum():
            raise KeyServiceError(f"malformed key id {kek_id!r}")
        return self.root / f"{kek_id}.key"

    def create_key(self) -> str:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        kek_id = f"kek-{secrets.token_hex(16)}"
        fd = os.open(self._path(kek_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(AESGCM.generate_key(bit_length=256))
        return kek_id

    def _kek(self, kek_id: str) -> AESGCM:
        try:
            return AESGCM(self._path(kek_id).read_bytes())
        except FileNotFoundError:
            raise KeyServiceError(f"unknown key {kek_id}") from None

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
    cls = import_string(settings.KEY_SERVICE)
    return cls(settings.KEY_SERVICE_ROOT)

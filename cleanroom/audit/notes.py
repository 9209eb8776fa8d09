"""Signing side of C2SP signed notes (Ed25519) and tlog checkpoints.

Key strings follow the format of golang.org/x/mod/sumdb/note, so keys interoperate with the
Go tooling used by transparency log witnesses:

- signer key:   ``PRIVATE+KEY+<name>+<hex key ID>+base64(0x01 || 32-byte seed)``
- verifier key: ``<name>+<hex key ID>+base64(0x01 || 32-byte public key)``

Verification lives in :mod:`cleanroom.audit.verifier.notes`, which bundles ship (`verify.pyz`).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cleanroom.audit.verifier.merkle import HASH_SIZE
from cleanroom.audit.verifier.notes import (
    ED25519_ALGORITHM,
    Verifier,
    is_valid_key_name,
    key_id,
    split_note,
    verify_note,
)

__all__ = [
    "Signer",
    "cosign",
    "format_checkpoint",
    "generate_key",
    "parse_signer_key",
    "sign_note",
]

_PRIVATE_PREFIX = "PRIVATE+KEY+"
_ALG = bytes([ED25519_ALGORITHM])


@dataclass(frozen=True)
class Signer:
    """An Ed25519 note signer. Build with :meth:`generate` or :func:`parse_signer_key`."""

    name: str
    key_id: bytes
    private_key: Ed25519PrivateKey = field(repr=False)

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> Signer:
        if not is_valid_key_name(name):
            raise ValueError(f"invalid key name {name!r}: no spaces or '+', not empty")
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        private_key = Ed25519PrivateKey.from_private_bytes(seed)
        return cls(name, key_id(name, _ALG + _public_bytes(private_key)), private_key)

    @classmethod
    def generate(cls, name: str) -> Signer:
        return cls.from_seed(name, _seed_bytes(Ed25519PrivateKey.generate()))

    @property
    def public_key_bytes(self) -> bytes:
        return _public_bytes(self.private_key)

    @property
    def signer_key(self) -> str:
        """The secret key string; keep it out of logs and databases."""
        seed = base64.b64encode(_ALG + _seed_bytes(self.private_key)).decode("ascii")
        return f"{_PRIVATE_PREFIX}{self.name}+{self.key_id.hex()}+{seed}"

    @property
    def verifier_key(self) -> str:
        pub = base64.b64encode(_ALG + self.public_key_bytes).decode("ascii")
        return f"{self.name}+{self.key_id.hex()}+{pub}"

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, self.key_id, self.private_key.public_key())

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)

    def signature_line(self, text: str) -> str:
        """The ``— name base64(keyid || sig)`` line (with newline) for a note text."""
        sig = base64.b64encode(self.key_id + self.sign(text.encode("utf-8"))).decode("ascii")
        return f"\u2014 {self.name} {sig}\n"


def _public_bytes(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def _seed_bytes(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def generate_key(name: str) -> tuple[str, str]:
    """A fresh key pair as strings: ``(signer_key, verifier_key)``."""
    signer = Signer.generate(name)
    return signer.signer_key, signer.verifier_key


def parse_signer_key(skey: str) -> Signer:
    """Parse ``PRIVATE+KEY+name+hexkeyid+base64(0x01 || seed)``, checking the key ID."""
    # Never echo the key string itself in errors: it is a secret. The base64 part may
    # itself contain "+", hence the split limit.
    if not skey.startswith(_PRIVATE_PREFIX):
        raise ValueError("signer key must start with PRIVATE+KEY+")
    parts = skey[len(_PRIVATE_PREFIX) :].strip().split("+", 2)
    if len(parts) != 3:
        raise ValueError("signer key must look like PRIVATE+KEY+name+keyid+base64seed")
    name, hex_id, b64 = parts
    try:
        raw = base64.b64decode(b64, validate=True)
    except ValueError as exc:
        raise ValueError("signer key seed is not valid base64") from exc
    if len(raw) != 33 or raw[0] != ED25519_ALGORITHM:
        raise ValueError("only Ed25519 signer keys (type 0x01, 32-byte seed) are supported")
    signer = Signer.from_seed(name, raw[1:])
    if signer.key_id.hex() != hex_id:
        raise ValueError(f"signer key ID {hex_id} does not match key {name}")
    return signer


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise ValueError("note text must end in a newline")
    if any(ch < " " and ch != "\n" for ch in text):
        raise ValueError("note text must not contain control characters other than newline")
    text.encode("utf-8")  # refuses lone surrogates


def sign_note(text: str, *signers: Signer) -> str:
    """Sign ``text`` (which must end in a newline) with one or more signers."""
    if not signers:
        raise ValueError("at least one signer is required")
    _check_text(text)
    return text + "\n" + "".join(s.signature_line(text) for s in signers)


def cosign(note: str, signer: Signer, *, require: Iterable[Verifier | str] | None = None) -> str:
    """Add ``signer``'s signature to an already signed note, keeping the others.

    With ``require``, the note must first verify against those keys: a witness should only
    cosign what it has checked. A previous signature by the same key is replaced.
    """
    if require is not None:
        verify_note(note, require)
    text, sigs = split_note(note)
    lines = [
        f"\u2014 {name} {base64.b64encode(kid + sig).decode('ascii')}\n"
        for name, kid, sig in sigs
        if (name, kid) != (signer.name, signer.key_id)
    ]
    lines.append(signer.signature_line(text))
    return text + "\n" + "".join(lines)


def format_checkpoint(
    origin: str, size: int, root_hash: bytes, extensions: Sequence[str] = ()
) -> str:
    """The note text of a C2SP tlog checkpoint (to be signed with :func:`sign_note`)."""
    if not origin or "\n" in origin:
        raise ValueError("origin must be a non-empty single line")
    if size < 0:
        raise ValueError("tree size must be non-negative")
    if len(root_hash) != HASH_SIZE:
        raise ValueError(f"root hash must be {HASH_SIZE} bytes")
    for line in extensions:
        if not line or "\n" in line:
            raise ValueError("extension lines must be non-empty single lines")
    root = base64.b64encode(root_hash).decode("ascii")
    return "".join(f"{line}\n" for line in (origin, str(size), root, *extensions))

"""C2SP signed notes (https://c2sp.org/signed-note) with Ed25519 signatures, transparency log
checkpoints (https://c2sp.org/tlog-checkpoint) and their witnesses' cosignatures
(https://c2sp.org/tlog-cosignature, timestamped cosignature/v1): parsing keys, and verifying.
The platform signs them (cleanroom/audit/notes.py)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import VerificationError
from .merkle import HASH_SIZE

ED25519_ALGORITHM = 0x01
_SIG_PREFIX = "\u2014 "  # em dash, space
_MAX_SIGNATURES = 100  # the spec requires accepting at least 16; this bounds the work
_B64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def strict_b64decode(text: str, what: str) -> bytes:
    """Decode standard base64 strictly: the standard alphabet, correct padding, and canonical
    (it re-encodes equal), so one value has exactly one textual form; errors name `what`."""
    if not _B64_RE.fullmatch(text):
        raise VerificationError(f"{what} is not standard base64")
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise VerificationError(f"{what} is not valid base64: {exc}") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise VerificationError(f"{what} is not canonical base64")
    return raw


def is_valid_key_name(name: str) -> bool:
    """Key names are non-empty, with no Unicode whitespace and no '+'."""
    return bool(name) and "+" not in name and not any(ch.isspace() for ch in name)


def key_id(name: str, typed_public_key: bytes) -> bytes:
    """The 4-byte key ID: SHA-256(name || 0x0A || type byte || public key)[:4]."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + typed_public_key).digest()[:4]


@dataclass(frozen=True)
class Verifier:
    """An Ed25519 note verifier: a key name, its 4-byte key ID and the public key."""

    name: str
    key_id: bytes
    public_key: Ed25519PublicKey

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            self.public_key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


def parse_verifier_key(vkey: str) -> Verifier:
    """Parse ``name+hexkeyid+base64(0x01 || 32-byte public key)``."""
    name, kid, typed_key = _split_vkey(vkey)
    if len(typed_key) != 33 or typed_key[0] != ED25519_ALGORITHM:
        raise VerificationError("only Ed25519 verifier keys (type 0x01, 32 bytes) are supported")
    if key_id(name, typed_key) != kid:
        raise VerificationError(f"key ID {kid.hex()} does not match key {name}")
    return Verifier(name, kid, Ed25519PublicKey.from_public_bytes(typed_key[1:]))


# ---------------------------------------------------------------------------------------------
# C2SP tlog-cosignature, cosignature/v1 (Ed25519, timestamped): https://c2sp.org/tlog-cosignature
# ---------------------------------------------------------------------------------------------

COSIGNATURE_ALGORITHM = 0x04
COSIGNATURE_HEADER = "cosignature/v1"


def cosigned_message(checkpoint_text: str, timestamp: int) -> bytes:
    """What a cosignature/v1 signs: the header line, ``time <timestamp>``, then the whole
    checkpoint body (with its final newline, without signature lines)."""
    return f"{COSIGNATURE_HEADER}\ntime {timestamp}\n{checkpoint_text}".encode()


@dataclass(frozen=True)
class Cosigner:
    """A witness's cosignature/v1 key: name, key ID (with type byte 0x04), Ed25519 key."""

    name: str
    key_id: bytes
    public_key: Ed25519PublicKey

    def verify(self, checkpoint_text: str, signature: bytes) -> int:
        """Check a ``timestamp (u64, big-endian) || Ed25519 signature`` over the checkpoint;
        return the timestamp."""
        if len(signature) != 8 + 64:
            raise VerificationError(f"cosignature of {self.name} is not 72 bytes")
        timestamp = int.from_bytes(signature[:8], "big")
        if timestamp >= 1 << 63:
            raise VerificationError(f"cosignature of {self.name} has an invalid timestamp")
        try:
            self.public_key.verify(signature[8:], cosigned_message(checkpoint_text, timestamp))
        except InvalidSignature:
            raise VerificationError(f"invalid cosignature by witness {self.name}") from None
        return timestamp


def parse_cosigner_key(vkey: str) -> Cosigner:
    """Parse a witness vkey, ``name+hexkeyid+base64(0x04 || 32-byte Ed25519 public key)``."""
    name, kid, typed_key = _split_vkey(vkey)
    if len(typed_key) != 33 or typed_key[0] != COSIGNATURE_ALGORITHM:
        raise VerificationError("a witness key must be a cosignature/v1 key (type 0x04, Ed25519)")
    if key_id(name, typed_key) != kid:
        raise VerificationError(f"key ID {kid.hex()} does not match key {name}")
    return Cosigner(name, kid, Ed25519PublicKey.from_public_bytes(typed_key[1:]))


def verify_cosignatures(note: str | bytes, cosigners: Iterable[Cosigner | str]) -> dict[str, int]:
    """The trusted witnesses whose cosignature/v1 line on this checkpoint verifies, with each
    one's timestamp. Lines by unknown keys are ignored; a bad line by a trusted key fails."""
    table: dict[tuple[str, bytes], Cosigner] = {}
    for c in cosigners:
        cosigner = parse_cosigner_key(c) if isinstance(c, str) else c
        table[(cosigner.name, cosigner.key_id)] = cosigner
    text, sigs = split_note(note)
    found: dict[str, int] = {}
    for name, kid, signature in sigs:
        trusted = table.get((name, kid))
        if trusted is not None:
            found[name] = trusted.verify(text, signature)
    return found


def _split_vkey(vkey: str) -> tuple[str, bytes, bytes]:
    parts = vkey.strip().split("+", 2)  # base64 may itself contain "+"
    if len(parts) != 3:
        raise VerificationError("verifier key must look like name+keyid+base64key")
    name, hex_id, b64 = parts
    if not is_valid_key_name(name):
        raise VerificationError(f"invalid key name {name!r}")
    if not re.fullmatch(r"[0-9a-f]{8}", hex_id):
        raise VerificationError("key ID must be 8 lowercase hex digits")
    return name, bytes.fromhex(hex_id), strict_b64decode(b64, "verifier key")


def split_note(note: str | bytes) -> tuple[str, list[tuple[str, bytes, bytes]]]:
    """Split a signed note into its text and its signatures, checking only the syntax.

    Returns ``(text, [(name, key_id, signature), ...])``; the text includes its final newline.
    """
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise VerificationError("note is not valid UTF-8") from exc
    for ch in note:
        if ch < " " and ch != "\n":
            raise VerificationError("note contains a control character")
    # The text is separated from the signatures by the *last* blank line; the text itself
    # may contain blank lines.
    split = note.rfind("\n\n")
    if split < 0:
        raise VerificationError("note has no blank line before its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block or not block.endswith("\n"):
        raise VerificationError("note signature block must be non-empty and end in a newline")
    sigs: list[tuple[str, bytes, bytes]] = []
    for line in block[:-1].split("\n"):
        if not line.startswith(_SIG_PREFIX):
            raise VerificationError("signature line does not start with an em dash and space")
        name, sep, b64 = line[len(_SIG_PREFIX) :].partition(" ")
        if not sep or not is_valid_key_name(name):
            raise VerificationError(f"malformed signature line {line!r}")
        raw = strict_b64decode(b64, f"signature of {name}")
        if len(raw) < 5:
            raise VerificationError(f"signature of {name} is too short")
        sigs.append((name, raw[:4], raw[4:]))
        if len(sigs) > _MAX_SIGNATURES:
            raise VerificationError("note has too many signatures")
    return text, sigs


def _verifier_table(verifiers: Iterable[Verifier | str]) -> dict[tuple[str, bytes], Verifier]:
    table: dict[tuple[str, bytes], Verifier] = {}
    for v in verifiers:
        verifier = parse_verifier_key(v) if isinstance(v, str) else v
        slot = (verifier.name, verifier.key_id)
        if slot in table and table[slot] != verifier:
            raise VerificationError(f"two trusted keys share name and key ID for {verifier.name}")
        table[slot] = verifier
    return table


def verify_note(note: str | bytes, verifiers: Iterable[Verifier | str]) -> tuple[str, list[str]]:
    """Verify a signed note against trusted keys.

    Signatures by unknown keys (name and key ID not both matching a trusted key) are ignored.
    A signature by a trusted key that does not verify rejects the whole note, and at least one
    trusted signature is required. Returns ``(text, names of the trusted keys that signed)``.
    """
    table = _verifier_table(verifiers)
    text, sigs = split_note(note)
    message = text.encode("utf-8")
    signed_by: list[str] = []
    seen: set[tuple[str, bytes]] = set()
    for name, kid, signature in sigs:
        verifier = table.get((name, kid))
        if verifier is None:
            continue
        if not verifier.verify(message, signature):
            raise VerificationError(f"invalid signature by trusted key {name}")
        if (name, kid) not in seen:
            seen.add((name, kid))
            signed_by.append(name)
    if not signed_by:
        raise VerificationError("note is not signed by any trusted key")
    return text, signed_by


# ---------------------------------------------------------------------------------------------
# C2SP tlog checkpoints
# ---------------------------------------------------------------------------------------------

_SIZE_RE = re.compile(r"0|[1-9][0-9]*")


@dataclass(frozen=True)
class Checkpoint:
    """The note text of a transparency log checkpoint."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse checkpoint note text (origin, tree size, base64 root hash, extension lines).

    Takes the *text* of a note (as returned by :func:`verify_note`), not the signed note.
    """
    if not text.endswith("\n"):
        raise VerificationError("checkpoint text must end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise VerificationError("checkpoint needs an origin, a size and a root hash line")
    if any(not line for line in lines):
        raise VerificationError("checkpoint lines must be non-empty")
    origin, size_text, root_text, *extensions = lines
    if not _SIZE_RE.fullmatch(size_text):
        raise VerificationError(f"tree size {size_text!r} is not a canonical decimal number")
    size = int(size_text)
    if size >= 1 << 64:
        raise VerificationError("tree size does not fit in 64 bits")
    root_hash = strict_b64decode(root_text, "root hash")
    if len(root_hash) != HASH_SIZE:
        raise VerificationError(f"root hash is {len(root_hash)} bytes, expected {HASH_SIZE}")
    return Checkpoint(origin, size, root_hash, tuple(extensions))


def verify_checkpoint(
    note: str | bytes, verifiers: Iterable[Verifier | str], *, origin: str | None = None
) -> tuple[Checkpoint, list[str]]:
    """Verify a signed checkpoint and parse it; optionally insist on its origin line."""
    text, signed_by = verify_note(note, verifiers)
    checkpoint = parse_checkpoint(text)
    if origin is not None and checkpoint.origin != origin:
        raise VerificationError(f"checkpoint origin {checkpoint.origin!r} is not {origin!r}")
    return checkpoint, signed_by

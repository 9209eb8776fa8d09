"""Offline verification primitives for clean-room audit logs.

This file is shipped verbatim inside audit bundles so that anyone (a regulator, a member
organisation) can check a log without the platform. It therefore depends only on the Python
standard library and the ``cryptography`` package, and must never import project code.

It covers:

- canonical JSON, the byte encoding of every log event;
- RFC 9162 section 2.1 Merkle tree hashing, inclusion and consistency proof verification;
- C2SP signed notes (https://c2sp.org/signed-note) with Ed25519 signatures;
- C2SP transparency log checkpoints (https://c2sp.org/tlog-checkpoint).

Verification functions raise :class:`VerificationError` with a reason rather than returning
``False``, so a failed check always says why.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "ED25519_ALGORITHM",
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Checkpoint",
    "VerificationError",
    "Verifier",
    "canonical_json",
    "is_valid_key_name",
    "key_id",
    "leaf_hash",
    "node_hash",
    "parse_checkpoint",
    "parse_verifier_key",
    "root_from_leaf_hashes",
    "split_note",
    "verify_checkpoint",
    "verify_consistency",
    "verify_inclusion",
    "verify_note",
]


class VerificationError(ValueError):
    """A proof, signature or encoding did not check out; the message says why."""


# ---------------------------------------------------------------------------------------------
# Canonical JSON
# ---------------------------------------------------------------------------------------------


def canonical_json(obj: Any) -> bytes:
    """Encode ``obj`` as canonical JSON: sorted keys, no whitespace, UTF-8.

    Floats are refused anywhere in the value (raising ``TypeError`` naming the path) because
    their text form is not stable across implementations; decimals must be given as strings.
    Keys must be strings, so that two different dicts can never encode to the same bytes.
    """
    _check_canonical(obj, "$")
    text = json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates cannot be encoded
        raise TypeError(f"string is not valid Unicode: {exc}") from exc


def _check_canonical(obj: Any, path: str) -> None:
    # Tuples rather than `X | Y` in isinstance: the file may be run on older Pythons offline.
    if obj is None or isinstance(obj, (str, int)):  # int includes bool
        return
    if isinstance(obj, float):  # includes NaN and infinities
        raise TypeError(f"float at {path} is not allowed in canonical JSON; use a decimal string")
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"non-string key {key!r} at {path}")
            _check_canonical(value, f"{path}.{key}")
        return
    if isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check_canonical(value, f"{path}[{i}]")
        return
    raise TypeError(f"{type(obj).__name__} at {path} is not a JSON type")


# ---------------------------------------------------------------------------------------------
# RFC 9162 Merkle trees (section 2.1)
# ---------------------------------------------------------------------------------------------

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """MTH of a single entry: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """Root hash of the tree whose leaves have the given hashes (RFC 9162 MTH).

    Iterative and O(n): keeps a stack of complete subtrees, merging equal-sized neighbours as
    each leaf arrives, then folds the remaining (decreasing) subtrees from the right.
    """
    if len(hashes) == 0:
        return EMPTY_ROOT
    stack: list[bytes] = []
    for count, h in enumerate(hashes, start=1):
        stack.append(h)
        # Each trailing 0-bit of `count` means two equal-size subtrees have just been
        # completed side by side and must be merged.
        c = count
        while c & 1 == 0:
            right = stack.pop()
            stack.append(node_hash(stack.pop(), right))
            c >>= 1
    root = stack.pop()
    while stack:
        root = node_hash(stack.pop(), root)
    return root


def _check_proof_elements(proof: Sequence[bytes]) -> None:
    for i, p in enumerate(proof):
        if len(p) != HASH_SIZE:
            raise VerificationError(f"proof element {i} is {len(p)} bytes, expected {HASH_SIZE}")


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` with ``root``.

    Follows RFC 9162 section 2.1.3.2 step by step. Raises VerificationError on failure.
    """
    if index < 0 or size < 0:
        raise VerificationError("index and size must be non-negative")
    if index >= size:
        raise VerificationError(f"leaf index {index} is not below tree size {size}")
    # Without these a malformed (e.g. empty) leaf could "match" an equally malformed root.
    if len(leaf_hash) != HASH_SIZE:
        raise VerificationError(f"leaf hash is {len(leaf_hash)} bytes, expected {HASH_SIZE}")
    if len(root) != HASH_SIZE:
        raise VerificationError(f"root is {len(root)} bytes, expected {HASH_SIZE}")
    _check_proof_elements(proof)
    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            raise VerificationError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                # We are on the right border: skip levels where this node has no sibling.
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("inclusion proof is too short")
    if r != root:
        raise VerificationError("inclusion proof does not lead to the given root")


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree (size1, root1) is a prefix of the tree (size2, root2).

    Follows RFC 9162 section 2.1.4.2. A size1 of 0 is refused: an empty tree is trivially a
    prefix of anything, so such a "proof" proves nothing and is more likely a caller bug.
    Raises VerificationError on failure.
    """
    if size1 < 0 or size2 < 0:
        raise VerificationError("sizes must be non-negative")
    if size1 == 0:
        raise VerificationError("consistency with an empty tree (size1 = 0) proves nothing")
    if size1 > size2:
        raise VerificationError(f"size1 {size1} is greater than size2 {size2}")
    if size1 == size2:
        if proof:
            raise VerificationError("sizes are equal, so the proof must be empty")
        if root1 != root2:
            raise VerificationError("sizes are equal but the roots differ")
        return
    if not proof:
        raise VerificationError("consistency proof is empty")
    _check_proof_elements(proof)

    path = list(proof)
    # If the old tree is a complete subtree, its root is the first node of the path and the
    # proof omits it; put it back so both roots are rebuilt from the same starting node.
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("consistency proof is too short")
    if fr != root1:
        raise VerificationError("consistency proof does not lead to root1")
    if sr != root2:
        raise VerificationError("consistency proof does not lead to root2")


# ---------------------------------------------------------------------------------------------
# C2SP signed notes with Ed25519
# ---------------------------------------------------------------------------------------------

ED25519_ALGORITHM = 0x01
_SIG_PREFIX = "\u2014 "  # em dash, space
_MAX_SIGNATURES = 100  # the spec requires accepting at least 16; this bounds the work
_B64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def _b64decode(text: str, what: str) -> bytes:
    # Strict: only the standard alphabet, correct padding, and canonical (re-encodes equal),
    # so one value has exactly one textual form.
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
    parts = vkey.strip().split("+", 2)  # base64 may itself contain "+"
    if len(parts) != 3:
        raise VerificationError("verifier key must look like name+keyid+base64key")
    name, hex_id, b64 = parts
    if not is_valid_key_name(name):
        raise VerificationError(f"invalid key name {name!r}")
    if not re.fullmatch(r"[0-9a-f]{8}", hex_id):
        raise VerificationError("key ID must be 8 lowercase hex digits")
    typed_key = _b64decode(b64, "verifier key")
    if len(typed_key) != 33 or typed_key[0] != ED25519_ALGORITHM:
        raise VerificationError("only Ed25519 verifier keys (type 0x01, 32 bytes) are supported")
    kid = bytes.fromhex(hex_id)
    if key_id(name, typed_key) != kid:
        raise VerificationError(f"key ID {hex_id} does not match key {name}")
    return Verifier(name, kid, Ed25519PublicKey.from_public_bytes(typed_key[1:]))


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
        raw = _b64decode(b64, f"signature of {name}")
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
    root_hash = _b64decode(root_text, "root hash")
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

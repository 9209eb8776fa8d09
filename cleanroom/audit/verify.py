"""Offline verification primitives for clean-room audit logs.

This file is shipped verbatim inside audit bundles so that anyone (a regulator, a member
organisation) can check a log without the platform. It therefore depends only on the Python
standard library and the ``cryptography`` package, and must never import project code.

It covers:

- canonical JSON, the byte encoding of every log event;
- RFC 9162 section 2.1 Merkle tree hashing, inclusion and consistency proof verification;
- C2SP signed notes (https://c2sp.org/signed-note) with Ed25519 signatures;
- C2SP transparency log checkpoints (https://c2sp.org/tlog-checkpoint) and their witnesses'
  cosignatures (https://c2sp.org/tlog-cosignature, timestamped cosignature/v1);
- the clean room's domain rules over a room log (approvals, residency, budgets, receivers,
  attestation);
- audit bundles (cleanroom-bundle/v1), and a command line:

      python verify.py BUNDLE.zip --trust TRUSTFILE [--previous CHECKPOINT]

  TRUSTFILE holds the keys you trust, one signed-note vkey a line (``witness <vkey>`` for a
  witness, ``allow-simulated-tee`` to accept simulated TEEs); they are never taken from the
  bundle. It exits 0 when everything checks out, 1 naming the first failure, 2 when a file
  cannot be read.

Verification functions raise :class:`VerificationError` with a reason rather than returning
``False``, so a failed check always says why.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import re
import sys
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "BUNDLE_FORMAT",
    "COSIGNATURE_ALGORITHM",
    "ED25519_ALGORITHM",
    "EMPTY_ROOT",
    "HASH_SIZE",
    "BundleReport",
    "Checkpoint",
    "CompactRange",
    "Cosigner",
    "DomainRules",
    "Trust",
    "VerificationError",
    "Verifier",
    "approval_message",
    "canonical_json",
    "check_domain_rules",
    "cosigned_message",
    "is_valid_key_name",
    "key_id",
    "leaf_hash",
    "manifest_note_text",
    "node_hash",
    "parse_canonical_event",
    "parse_checkpoint",
    "parse_cosigner_key",
    "parse_trust_file",
    "parse_verifier_key",
    "root_from_leaf_hashes",
    "split_note",
    "verify_bundle",
    "verify_checkpoint",
    "verify_consistency",
    "verify_cosignatures",
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
    table = {}
    for c in cosigners:
        cosigner = parse_cosigner_key(c) if isinstance(c, str) else c
        table[(cosigner.name, cosigner.key_id)] = cosigner
    text, sigs = split_note(note)
    found: dict[str, int] = {}
    for name, kid, signature in sigs:
        cosigner = table.get((name, kid))
        if cosigner is not None:
            found[name] = cosigner.verify(text, signature)
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
    return name, bytes.fromhex(hex_id), _b64decode(b64, "verifier key")


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


# ---------------------------------------------------------------------------------------------
# Domain rules of the clean room, read from the event vocabulary (cleanroom/audit/events.py)
# ---------------------------------------------------------------------------------------------


def _field(data: dict, name: str, where: str) -> Any:
    if not isinstance(data, dict) or name not in data:
        raise VerificationError(f"{where} lacks the field {name!r}")
    return data[name]


def _decimal(value: Any, where: str) -> Decimal:
    if not isinstance(value, str):
        raise VerificationError(f"{where}: {value!r} is not a decimal string")
    try:
        number = Decimal(value)
    except InvalidOperation as exc:
        raise VerificationError(f"{where}: {value!r} is not a decimal string") from exc
    if not number.is_finite() or number < 0:
        raise VerificationError(f"{where}: {value!r} is not a non-negative decimal")
    return number


def _time(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise VerificationError(f"{where}: {value!r} is not a time")
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise VerificationError(f"{where}: {value!r} is not an ISO 8601 time") from exc
    if moment.tzinfo is None:
        raise VerificationError(f"{where}: {value!r} has no time zone")
    return moment


class DomainRules:
    """The clean room's rules over a room log, fed one event at a time in log order.

    - every ``query.approved`` and ``query.rejected`` carries the organisation's Ed25519
      signature over the approval message (:func:`approval_message`), checked against the key
      the trust file pins for that organisation, or else the key the event names;
    - every ``job.dispatched`` follows a ``query.submitted`` of its query with the same digest,
      whose ``required_approvers`` include every owner of the datasets it reads, and a
      ``query.approved`` of that digest by each of them, not rejected or revoked since, with
      approvals and dispatch before the query's ``expires_at``, and the query neither expired
      nor superseded;
    - every ``residency.decided`` of a dispatched job that allowed a step did so with the
      site's jurisdiction among the allowed ones; a refused step got no ``key.released``;
    - per dataset, reserved minus refunded ε (and δ) never exceeds the total budget of its
      latest ``room.dataset_contributed``; no refund exceeds its reservation;
    - ``result.released`` goes only to receivers of its query, for a dispatched job;
    - ``attestation.verified`` is hardware-backed, unless simulated TEEs are allowed.

    :meth:`feed` and :meth:`finish` raise VerificationError naming the first event that breaks
    a rule. The state kept is per query, job and dataset, not per event.
    """

    def __init__(
        self,
        *,
        allow_simulated_tee: bool = False,
        approver_keys: dict[str, list[bytes]] | None = None,
    ) -> None:
        self.allow_simulated_tee = allow_simulated_tee
        # Organisation -> the Ed25519 keys pinned for it, or None to take each approval's key
        # from the event itself (the log, signed by the log key, then vouches for the key).
        self.approver_keys = approver_keys
        self.submissions: dict[str, dict] = {}
        self.decisions: dict[str, dict[str, tuple[str, str, datetime, int]]] = {}
        self.closed: dict[str, tuple[str, int]] = {}
        self.dispatched: dict[str, str] = {}  # job -> query
        self.residency: list[tuple[int, dict]] = []
        self.keys_released: list[tuple[int, str, str]] = []  # (index, job, site)
        self.totals: dict[str, tuple[Decimal, Decimal]] = {}
        self.charged: dict[str, list[Decimal]] = {}
        self.reserved: dict[tuple[str, str], list[Decimal]] = {}
        self.released: dict[str, dict] = {}  # job -> its result.released data

    def feed(self, i: int, event: dict) -> None:
        kind = event.get("type")
        data = event.get("data") or {}
        where = f"event {i} ({kind})"
        if kind == "query.submitted":
            query = _field(data, "query", where)
            self.submissions[query] = data
            self.decisions[query] = {}
            self.closed.pop(query, None)
            approvers = set(_field(data, "required_approvers", where))
            for dataset in _field(data, "datasets", where):
                owner = _field(dataset, "owner", where)
                if owner not in approvers:
                    raise VerificationError(
                        f"{where}: {query} does not require the approval of {owner}, "
                        f"owner of {dataset.get('dataset')}"
                    )
        elif kind in ("query.approved", "query.rejected", "query.approval_revoked"):
            query = _field(data, "query", where)
            organization = _field(data, "organization", where)
            if kind != "query.approval_revoked":
                _check_approval_signature(
                    where, kind, data, query, organization, self.approver_keys
                )
            self.decisions.setdefault(query, {})[organization] = (
                kind,
                data.get("digest", ""),
                _time(event.get("time"), where),
                i,
            )
        elif kind in ("query.expired", "query.superseded"):
            self.closed[_field(data, "query", where)] = (kind, i)
        elif kind == "job.dispatched":
            job = _field(data, "job", where)
            query = _field(data, "query", where)
            _check_dispatch(
                i, where, event, data, job, query, self.submissions, self.decisions, self.closed
            )
            self.dispatched[job] = query
        elif kind == "residency.decided":
            self.residency.append((i, data))
        elif kind == "key.released":
            self.keys_released.append((i, _field(data, "job", where), _field(data, "site", where)))
        elif kind == "room.dataset_contributed":
            dataset = _field(data, "dataset", where)
            self.totals[dataset] = (
                _decimal(_field(data, "total_epsilon", where), where),
                _decimal(data.get("total_delta", "0"), where),
            )
        elif kind in ("budget.reserved", "budget.refunded"):
            _check_budget(i, where, kind, data, self.totals, self.charged, self.reserved)
        elif kind == "result.released":
            job = _field(data, "job", where)
            query = _field(data, "query", where)
            if job not in self.dispatched:
                raise VerificationError(f"{where}: a result of {job}, which was never dispatched")
            self.released[job] = data
            allowed = set(_field(self.submissions[self.dispatched[job]], "receivers", where))
            for receiver in _field(data, "receivers", where):
                if receiver not in allowed:
                    raise VerificationError(
                        f"{where}: the result of {job} went to {receiver}, not a receiver "
                        f"approved for {query}"
                    )
        elif kind == "attestation.verified":
            tee = _field(data, "kind", where)
            if tee == "simulated" and not self.allow_simulated_tee:
                raise VerificationError(
                    f"{where}: {data.get('job')} ran on a simulated TEE, not hardware-backed "
                    "(add 'allow-simulated-tee' to the trust file to accept that)"
                )
            if tee not in ("hardware", "simulated"):
                raise VerificationError(f"{where}: unknown attestation kind {tee!r}")

    def finish(self) -> None:
        """The rules that need the whole log: residency of jobs dispatched after deciding."""
        for i, data in self.residency:
            where = f"event {i} (residency.decided)"
            job = _field(data, "job", where)
            if job not in self.dispatched:
                continue  # refused before dispatch: the job never ran
            site = _field(data, "site", where)
            if _field(data, "allowed", where) is True:
                jurisdiction = _field(data, "site_jurisdiction", where)
                allowed = _field(data, "allowed_jurisdictions", where)
                if jurisdiction not in allowed:
                    raise VerificationError(
                        f"{where}: step {data.get('step')} of {job} ran at {site} in "
                        f"{jurisdiction}, but its data allows only "
                        f"{', '.join(allowed) or 'nowhere'}"
                    )
            else:
                for k, key_job, key_site in self.keys_released:
                    if k > i and key_job == job and key_site == site:
                        raise VerificationError(
                            f"event {k} (key.released): a data key of {job} went to {site} "
                            f"after residency refused that site (event {i})"
                        )


def check_domain_rules(
    events: Iterable[dict],
    *,
    allow_simulated_tee: bool = False,
    approver_keys: dict[str, list[bytes]] | None = None,
) -> None:
    """Check :class:`DomainRules` over a whole room log, in log order."""
    rules = DomainRules(allow_simulated_tee=allow_simulated_tee, approver_keys=approver_keys)
    for i, event in enumerate(events):
        rules.feed(i, event)
    rules.finish()


APPROVAL_FORMAT = "cleanroom-approval/v1"
_DECISIONS = {"query.approved": "approve", "query.rejected": "reject"}


def approval_message(query: str, digest: str, organization: str, decision: str) -> bytes:
    """What an organisation's key signs when it decides on a query version: the format, the
    query id, its digest, the organisation id and ``approve`` or ``reject``, one a line."""
    return f"{APPROVAL_FORMAT}\n{query}\n{digest}\n{organization}\n{decision}\n".encode()


RESULT_COMMITMENT = "cleanroom-result-commitment/v1"
RESULT_OPENING = "cleanroom-result-opening/v1"


def result_commitment(salt: bytes, content: bytes, name: str = "") -> str:
    """The commitment the log holds to a released result (`name` empty) or to one of its files:
    SHA-256 over the format, a secret 256-bit salt, the name and the exact bytes released. The
    salt travels only inside the encrypted result, so only its receivers can open it; without
    the salt the commitment says nothing, even of a result small enough to enumerate."""
    if len(salt) != 32:
        raise VerificationError("a result commitment's salt is 32 bytes")
    header = f"{RESULT_COMMITMENT}\n{name}\n".encode()
    return hashlib.sha256(header + salt + content).hexdigest()


def check_opening(opening: dict, released: dict[str, dict]) -> str:
    """Check a receiver's opening of a result (the exact bytes released, the salt, and any
    files) against the `result.released` event of its job; returns the job, or raises."""
    if not isinstance(opening, dict) or opening.get("format") != RESULT_OPENING:
        raise VerificationError(f"the opening is not {RESULT_OPENING}")
    job = opening.get("job")
    event = released.get(job)
    if event is None:
        raise VerificationError(f"the bundle holds no released result of {job}")
    salt = _hex(opening.get("salt"), "the opening's salt")
    content = _b64decode(str(opening.get("result", "")), "the opened result")
    if result_commitment(salt, content) != event.get("result_commitment"):
        raise VerificationError(f"the result of {job} does not match its commitment in the log")
    committed = event.get("files") or {}
    files = opening.get("files") or {}
    for name, encoded in sorted(files.items()):
        content = _b64decode(str(encoded), f"the opened file {name}")
        if name not in committed or result_commitment(salt, content, name) != committed[name]:
            raise VerificationError(f"file {name} of {job} does not match its commitment")
    return job


def _hex(value: Any, what: str) -> bytes:
    try:
        return bytes.fromhex(str(value))
    except ValueError:
        raise VerificationError(f"{what} is not hexadecimal") from None


def _check_approval_signature(where, kind, data, query, organization, pinned) -> None:
    digest = _field(data, "digest", where)
    signature = _b64decode(str(_field(data, "signature", where)), f"{where}: the signature")
    public_key = _b64decode(str(_field(data, "public_key", where)), f"{where}: the public key")
    if pinned is not None:
        keys = pinned.get(organization)
        if not keys:
            raise VerificationError(f"{where}: the trust file pins no key for {organization}")
        if public_key not in keys:
            raise VerificationError(
                f"{where}: {organization} decided on {query} with a key the trust file does "
                "not pin for it"
            )
    if len(public_key) != 32:
        raise VerificationError(f"{where}: the public key of {organization} is not Ed25519")
    message = approval_message(query, digest, organization, _DECISIONS[kind])
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except InvalidSignature:
        raise VerificationError(
            f"{where}: the signature of {organization} on {query} does not verify"
        ) from None


def _check_dispatch(i, where, event, data, job, query, submissions, decisions, closed) -> None:
    submission = submissions.get(query)
    if submission is None:
        raise VerificationError(f"{where}: {job} ran {query}, which was never submitted")
    digest = _field(submission, "digest", where)
    if data.get("digest") != digest:
        raise VerificationError(
            f"{where}: {job} ran {query} with digest {data.get('digest')}, "
            f"but the submitted digest is {digest}"
        )
    if query in closed:
        what, k = closed[query]
        raise VerificationError(f"{where}: {job} ran {query} after {what} (event {k})")
    dispatched_at = _time(event.get("time"), where)
    expires = submission.get("expires_at")
    expires_at = _time(expires, where) if expires else None
    if expires_at is not None and dispatched_at >= expires_at:
        raise VerificationError(f"{where}: {job} ran {query} after it expired at {expires}")
    for organization in _field(submission, "required_approvers", where):
        decision = decisions.get(query, {}).get(organization)
        if decision is None:
            raise VerificationError(
                f"{where}: {job} ran {query} without the approval of {organization}"
            )
        what, approved_digest, approved_at, k = decision
        if what != "query.approved":
            raise VerificationError(
                f"{where}: {job} ran {query} although {organization}'s approval was "
                f"{'revoked' if what == 'query.approval_revoked' else 'a rejection'} (event {k})"
            )
        if approved_digest != digest:
            raise VerificationError(
                f"{where}: {organization} approved digest {approved_digest} of {query}, "
                f"not the digest {digest} that ran"
            )
        if expires_at is not None and approved_at >= expires_at:
            raise VerificationError(
                f"{where}: {organization} approved {query} (event {k}) after it expired"
            )


def _check_budget(i, where, kind, data, totals, charged, reserved) -> None:
    dataset = _field(data, "dataset", where)
    job = _field(data, "job", where)
    epsilon = _decimal(_field(data, "epsilon", where), where)
    delta = _decimal(data.get("delta", "0"), where)
    if dataset not in totals:
        raise VerificationError(f"{where}: budget of {dataset}, never contributed to this room")
    spent = charged.setdefault(dataset, [Decimal(0), Decimal(0)])
    held = reserved.setdefault((job, dataset), [Decimal(0), Decimal(0)])
    sign = 1 if kind == "budget.reserved" else -1
    for n, amount in enumerate((epsilon, delta)):
        spent[n] += sign * amount
        held[n] += sign * amount
    if held[0] < 0 or held[1] < 0:
        raise VerificationError(f"{where}: {job} refunded more of {dataset} than it reserved")
    total_epsilon, total_delta = totals[dataset]
    if spent[0] > total_epsilon:
        raise VerificationError(
            f"{where}: {dataset} is charged ε {spent[0]} out of a budget of {total_epsilon}"
        )
    if spent[1] > total_delta:
        raise VerificationError(
            f"{where}: {dataset} is charged δ {spent[1]} out of a budget of {total_delta}"
        )


# ---------------------------------------------------------------------------------------------
# Bundles (cleanroom-bundle/v1) and the command line
# ---------------------------------------------------------------------------------------------

BUNDLE_FORMAT = "cleanroom-bundle/v1"
MANIFEST = "MANIFEST.json"
MANIFEST_SIG = "MANIFEST.sig"
REQUIRED_FILES = ("checkpoint.txt", "events.jsonl", "verify.py", "README.txt")
ALLOW_SIMULATED_TEE = "allow-simulated-tee"
_HEX64 = re.compile(r"[0-9a-f]{64}")


def manifest_note_text(origin: str, manifest_sha256: str) -> str:
    """The text MANIFEST.sig signs: what it is, for which log, and the manifest's SHA-256."""
    return f"{BUNDLE_FORMAT} manifest\n{origin}\nsha256 {manifest_sha256}\n"


@dataclass
class Trust:
    """What a regulator trusts, from its trust file; never from the bundle."""

    log_keys: list[Verifier]
    witness_keys: list[Cosigner]
    allow_simulated_tee: bool = False
    # Organisation id -> its approval keys (raw Ed25519), from `organization` lines.
    organization_keys: dict[str, list[bytes]] = field(default_factory=dict)


def parse_trust_file(text: str) -> Trust:
    """One item a line: a log vkey (as ``manage.py audit_keys`` prints it), ``witness <vkey>``,
    ``organization org:<id> <base64 Ed25519 key>`` (an organisation's approval key, as
    ``audit_keys --organizations`` prints them), or ``allow-simulated-tee``; ``#`` starts a
    comment. Once one organisation is pinned, every approval must be by a pinned key."""
    log_keys: list[Verifier] = []
    witness_keys: list[Cosigner] = []
    organization_keys: dict[str, list[bytes]] = {}
    allow = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            if line == ALLOW_SIMULATED_TEE:
                allow = True
            elif line.startswith("witness "):
                witness_keys.append(parse_cosigner_key(line[len("witness ") :].strip()))
            elif line.startswith("organization "):
                organization, key = _organization_key(line)
                organization_keys.setdefault(organization, []).append(key)
            else:
                log_keys.append(parse_verifier_key(line))
        except VerificationError as exc:
            raise VerificationError(f"trust file line {number}: {exc}") from exc
    if not log_keys:
        raise VerificationError("the trust file holds no log key")
    return Trust(log_keys, witness_keys, allow, organization_keys)


def _organization_key(line: str) -> tuple[str, bytes]:
    parts = line.split()
    if len(parts) != 3 or not re.fullmatch(r"org:[A-Za-z0-9_.\-]{1,80}", parts[1]):
        raise VerificationError("an organization line is 'organization org:<id> <base64 key>'")
    key = _b64decode(parts[2], f"the key of {parts[1]}")
    if len(key) != 32:
        raise VerificationError(f"the key of {parts[1]} is not a 32-byte Ed25519 key")
    return parts[1], key


@dataclass
class BundleReport:
    origin: str
    log: str
    size: int
    root_hash: bytes
    signed_by: list[str]
    cosigned_by: list[str]
    attachments: int
    previous_size: int | None = None
    approvals_pinned: bool = False
    released: dict[str, dict] = field(default_factory=dict)  # job -> result.released data


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify_bundle(bundle: Any, trust: Trust, *, previous: str | None = None) -> BundleReport:
    """Verify a bundle (a path or a binary file object); raise VerificationError naming the
    first failure."""
    try:
        archive = zipfile.ZipFile(bundle)
    except zipfile.BadZipFile as exc:
        raise VerificationError(f"the bundle is not a zip file: {exc}") from exc
    with archive:
        names = [info.filename for info in archive.infolist()]
        if len(set(names)) != len(names):
            twice = sorted(name for name in set(names) if names.count(name) > 1)
            raise VerificationError(f"file {twice[0]} appears twice in the bundle")
        for name in (MANIFEST, MANIFEST_SIG):
            if name not in names:
                raise VerificationError(f"the bundle has no {name}")
        manifest_bytes = archive.read(MANIFEST)
        origin = _verify_manifest_signature(archive.read(MANIFEST_SIG), manifest_bytes, trust)
        manifest = _parse_manifest(manifest_bytes, origin)
        files: dict[str, str] = manifest["files"]
        expected = set(files) | {MANIFEST, MANIFEST_SIG}
        extra = sorted(set(names) - expected)
        if extra:
            raise VerificationError(f"unexpected file {extra[0]} in the bundle")
        missing = sorted(expected - set(names))
        if missing:
            raise VerificationError(f"file {missing[0]} listed in {MANIFEST} is missing")
        for name in REQUIRED_FILES:
            if name not in files:
                raise VerificationError(f"{MANIFEST} does not list {name}")
        for name in sorted(files):
            if name == "events.jsonl":
                continue  # hashed while it is read, below
            if _sha256(archive.read(name)) != files[name]:
                raise VerificationError(f"{name} does not match its SHA-256 in {MANIFEST}")
        attachments = {}
        for name in sorted(files):
            if name.startswith("attachments/"):
                digest = name[len("attachments/") :]
                if not _HEX64.fullmatch(digest) or _sha256(archive.read(name)) != digest:
                    raise VerificationError(f"{name} does not match its name (its SHA-256)")
                attachments[digest] = name
            elif name not in REQUIRED_FILES:
                raise VerificationError(f"{MANIFEST} lists {name}, which no bundle holds")

        checkpoint_note = archive.read("checkpoint.txt").decode("utf-8", "replace")
        checkpoint, signed_by = _verify_bundle_checkpoint(checkpoint_note, trust, origin)
        if checkpoint.size != manifest["tree_size"]:
            raise VerificationError(
                f"checkpoint.txt is at size {checkpoint.size}, {MANIFEST} says "
                f"{manifest['tree_size']}"
            )
        cosigned_by = _cosigners(checkpoint_note, trust)
        old = _previous_checkpoint(previous, trust, origin) if previous is not None else None

        rules = DomainRules(
            allow_simulated_tee=trust.allow_simulated_tee,
            approver_keys=trust.organization_keys or None,
        )
        with archive.open("events.jsonl") as stream:
            read = _read_events(stream, manifest["log"], checkpoint.size, rules, old)
        if read.sha256 != files["events.jsonl"]:
            raise VerificationError(f"events.jsonl does not match its SHA-256 in {MANIFEST}")
        if read.root != checkpoint.root_hash:
            raise VerificationError("the Merkle root of events.jsonl does not match checkpoint.txt")

    for sha in sorted(read.referenced):
        if sha not in attachments:
            raise VerificationError(f"attachment {sha} referenced by the log is not in the bundle")
    for sha in sorted(attachments):
        if sha not in read.referenced:
            raise VerificationError(f"attachments/{sha} is referenced by no event")
    if old is not None:
        if old.size > checkpoint.size:
            raise VerificationError(
                f"this log does not extend the previous checkpoint at size {old.size}: it holds "
                f"only {checkpoint.size} events"
            )
        if read.previous_root != old.root_hash:
            raise VerificationError(
                f"this log does not extend the previous checkpoint at size {old.size}: its "
                f"first {old.size} events hash to another root"
            )
    # Integrity first: a rule broken in a log that does not verify would mean little.
    if read.rule_failure is not None:
        raise read.rule_failure
    rules.finish()
    return BundleReport(
        origin,
        manifest["log"],
        checkpoint.size,
        checkpoint.root_hash,
        signed_by,
        cosigned_by,
        len(attachments),
        old.size if old is not None else None,
        bool(trust.organization_keys),
        rules.released,
    )


def _verify_manifest_signature(signature: bytes, manifest_bytes: bytes, trust: Trust) -> str:
    try:
        text, _ = verify_note(signature, trust.log_keys)
    except VerificationError as exc:
        raise VerificationError(f"{MANIFEST_SIG}: {exc}") from exc
    lines = text.split("\n")
    if len(lines) != 4 or lines[0] != f"{BUNDLE_FORMAT} manifest" or lines[3] != "":
        raise VerificationError(f"{MANIFEST_SIG} does not sign a {BUNDLE_FORMAT} manifest")
    origin, hash_line = lines[1], lines[2]
    if hash_line != f"sha256 {_sha256(manifest_bytes)}":
        raise VerificationError(f"{MANIFEST} does not match the SHA-256 {MANIFEST_SIG} signs")
    return origin


def _parse_manifest(manifest_bytes: bytes, origin: str) -> dict:
    try:
        manifest = json.loads(manifest_bytes)
    except ValueError as exc:
        raise VerificationError(f"{MANIFEST} is not JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise VerificationError(f"{MANIFEST} is not in the format {BUNDLE_FORMAT}")
    if manifest.get("origin") != origin:
        raise VerificationError(
            f"{MANIFEST} names origin {manifest.get('origin')!r}, not {origin!r}"
        )
    size, log, files = manifest.get("tree_size"), manifest.get("log"), manifest.get("files")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise VerificationError(f"{MANIFEST} has no valid tree_size")
    if not isinstance(log, str) or not origin.endswith("/" + log):
        raise VerificationError(f"{MANIFEST} names log {log!r}, which is not its origin's")
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and _HEX64.fullmatch(v) for k, v in files.items()
    ):
        raise VerificationError(f"{MANIFEST} has no valid list of files")
    if {MANIFEST, MANIFEST_SIG} & set(files):
        raise VerificationError(f"{MANIFEST} lists itself or its signature")
    return manifest


def _verify_bundle_checkpoint(note: str, trust: Trust, origin: str) -> tuple[Checkpoint, list[str]]:
    try:
        return verify_checkpoint(note, trust.log_keys, origin=origin)
    except VerificationError as exc:
        raise VerificationError(f"checkpoint.txt: {exc}") from exc


def _cosigners(note: str, trust: Trust) -> list[str]:
    if not trust.witness_keys:
        return []
    try:
        return list(verify_cosignatures(note, trust.witness_keys))
    except VerificationError as exc:
        raise VerificationError(f"checkpoint.txt: {exc}") from exc


def _refuse_number(text: str) -> Any:
    raise ValueError(f"{text} is not allowed in canonical JSON (floats are decimal strings)")


_STRICT_DECODER = json.JSONDecoder(parse_float=_refuse_number, parse_constant=_refuse_number)
_CANONICAL_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse_canonical_event(raw: bytes, where: str) -> dict:
    """Parse one event's bytes, insisting they are exactly its canonical JSON encoding.

    The same bytes :func:`canonical_json` makes, checked fast: parse refusing floats, NaN and
    infinities, then re-encode and compare.
    """
    try:
        body = _STRICT_DECODER.decode(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise VerificationError(f"{where} is not canonical JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise VerificationError(f"{where} is not a JSON object")
    try:
        encoded = _CANONICAL_ENCODER.encode(body).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise VerificationError(f"{where} is not valid Unicode: {exc}") from exc
    if encoded != raw:
        raise VerificationError(f"{where} is not canonical JSON")
    return body


class CompactRange:
    """The right edge of an RFC 9162 tree being built leaf by leaf: O(log n) hashes."""

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[bytes] = []

    def append(self, leaf: bytes) -> None:
        self.size += 1
        self._stack.append(leaf)
        count = self.size
        while count & 1 == 0:
            right = self._stack.pop()
            self._stack.append(node_hash(self._stack.pop(), right))
            count >>= 1

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        root = self._stack[-1]
        for left in reversed(self._stack[:-1]):
            root = node_hash(left, root)
        return root


@dataclass
class _ReadEvents:
    sha256: str
    root: bytes
    referenced: set[str]
    previous_root: bytes | None
    rule_failure: VerificationError | None


def _read_events(stream, log: str, size: int, rules: DomainRules, old) -> _ReadEvents:
    """One pass over events.jsonl: its hash, structure, Merkle root (and the root of the
    previous checkpoint's prefix), referenced attachments, and the domain rules."""
    digest = hashlib.sha256()
    tree = CompactRange()
    referenced: set[str] = set()
    previous_root = EMPTY_ROOT if old is not None and old.size == 0 else None
    rule_failure: VerificationError | None = None
    for line in stream:
        digest.update(line)
        position = tree.size
        where = f"events.jsonl line {position + 1} (event {position})"
        if not line.endswith(b"\n"):
            raise VerificationError(f"{where} does not end in a newline")
        raw = line[:-1]
        body = parse_canonical_event(raw, where)
        if body.get("log") != log:
            raise VerificationError(f"{where} belongs to log {body.get('log')!r}, not {log!r}")
        if body.get("seq") != position:
            raise VerificationError(
                f"{where} holds event {body.get('seq')!r}: events are missing or out of order"
            )
        tree.append(leaf_hash(raw))
        if old is not None and tree.size == old.size:
            previous_root = tree.root()
        found = body.get("attachments", [])
        if isinstance(found, list):
            referenced.update(sha for sha in found if isinstance(sha, str))
        if rule_failure is None:
            try:
                rules.feed(position, body)
            except VerificationError as exc:
                rule_failure = exc
    if tree.size != size:
        raise VerificationError(
            f"events.jsonl holds {tree.size} events, the checkpoint covers {size}"
        )
    return _ReadEvents(digest.hexdigest(), tree.root(), referenced, previous_root, rule_failure)


def _previous_checkpoint(previous: str, trust: Trust, origin: str) -> Checkpoint:
    try:
        return verify_checkpoint(previous, trust.log_keys, origin=origin)[0]
    except VerificationError as exc:
        raise VerificationError(f"the previous checkpoint: {exc}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="verify.py",
        description="Verify a clean-room audit bundle offline (Python + cryptography only).",
    )
    parser.add_argument("bundle", help="the bundle zip")
    parser.add_argument(
        "--trust", required=True, help="trusted keys, one vkey a line (manage.py audit_keys)"
    )
    parser.add_argument("--previous", help="a checkpoint of this log you saved earlier")
    parser.add_argument(
        "--result",
        action="append",
        default=[],
        help="a result's opening, as its receiver downloads it: checked against the log",
    )
    args = parser.parse_args(argv)
    try:
        with open(args.trust, encoding="utf-8") as handle:
            trust = parse_trust_file(handle.read())
        previous = None
        if args.previous:
            with open(args.previous, encoding="utf-8") as handle:
                previous = handle.read()
        report = verify_bundle(args.bundle, trust, previous=previous)
        opened = []
        for path in args.result:
            with open(path, encoding="utf-8") as handle:
                try:
                    opening = json.load(handle)
                except ValueError:
                    raise VerificationError(f"{path} is not JSON") from None
            opened.append(check_opening(opening, report.released))
    except VerificationError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"FAILED: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"OK: {report.origin}: {report.size} events, root {report.root_hash.hex()}")
    print(f"  signed by {', '.join(report.signed_by)}", end="")
    print(f"; cosigned by {', '.join(report.cosigned_by)}" if report.cosigned_by else "")
    if report.previous_size is not None:
        print(f"  extends the previous checkpoint at size {report.previous_size}")
    print(f"  {report.attachments} attachments; approvals, residency, budgets, receivers and")
    print("  attestations satisfy the clean room's rules")
    for job in opened:
        print(f"  the result of {job} you hold matches the commitment its release logged")
    if report.approvals_pinned:
        print("  approval signatures verify under the organisations' keys your trust file pins")
    else:
        print("  approval signatures verify under the keys the log names; pin the organisations'")
        print("  keys with 'organization' lines (manage.py audit_keys --organizations) to check")
        print("  them against keys you obtained yourself")
    return 0


if __name__ == "__main__":
    sys.exit(main())

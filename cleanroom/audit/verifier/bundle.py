"""Audit bundles (cleanroom-bundle/v1) and the trust file a regulator keeps: :func:`verify_bundle`
checks a bundle's manifest and its signature, its files, its checkpoint and cosignatures, that
its events are canonical, in order and hash to the checkpoint's root, and the domain rules."""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from dataclasses import dataclass, field
from typing import Any

from . import VerificationError
from .approvals import MACHINE_KEY, PASSKEY, PinnedCredential
from .canonical import parse_canonical_event
from .merkle import EMPTY_ROOT, CompactRange, leaf_hash
from .notes import (
    Checkpoint,
    Cosigner,
    Verifier,
    parse_cosigner_key,
    parse_verifier_key,
    strict_b64decode,
    verify_checkpoint,
    verify_cosignatures,
    verify_note,
)
from .rules import DomainRules

BUNDLE_FORMAT = "cleanroom-bundle/v1"
MANIFEST = "MANIFEST.json"
MANIFEST_SIG = "MANIFEST.sig"
# The verifier itself, as one runnable file (build.py makes it).
VERIFIER = "verify.pyz"
REQUIRED_FILES = ("checkpoint.txt", "events.jsonl", VERIFIER, "README.txt")
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
    # Organisation id -> the credentials its owners approve with, from `passkey` and
    # `machine-key` lines.
    approver_credentials: dict[str, list[PinnedCredential]] = field(default_factory=dict)


def parse_trust_file(text: str) -> Trust:
    """One item a line: a log vkey (as ``manage.py audit_keys`` prints it), ``witness <vkey>``,
    an owner's credential (as ``manage.py export_owner_credentials`` prints them, and as the
    owner should confirm): ``passkey org:<id> <rp id> <base64 credential id> <base64 COSE
    key>`` or ``machine-key org:<id> <base64 key id> <base64 Ed25519 key>``, or
    ``allow-simulated-tee``; ``#`` starts a comment. Once one organisation is pinned, every
    approval must be by a pinned credential."""
    log_keys: list[Verifier] = []
    witness_keys: list[Cosigner] = []
    credentials: dict[str, list[PinnedCredential]] = {}
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
            elif line.startswith((f"{PASSKEY} ", f"{MACHINE_KEY} ")):
                credential = _credential(line)
                credentials.setdefault(credential.organization, []).append(credential)
            else:
                log_keys.append(parse_verifier_key(line))
        except VerificationError as exc:
            raise VerificationError(f"trust file line {number}: {exc}") from exc
    if not log_keys:
        raise VerificationError("the trust file holds no log key")
    return Trust(log_keys, witness_keys, allow, credentials)


def _credential(line: str) -> PinnedCredential:
    parts = line.split()
    kind = parts[0]
    shape = (
        "passkey org:<id> <rp id> <base64 credential id> <base64 COSE key>"
        if kind == PASSKEY
        else "machine-key org:<id> <base64 key id> <base64 Ed25519 key>"
    )
    if len(parts) != (5 if kind == PASSKEY else 4) or not re.fullmatch(
        r"org:[A-Za-z0-9_.\-]{1,80}", parts[1]
    ):
        raise VerificationError(f"a {kind} line is '{shape}'")
    organization = parts[1]
    key = strict_b64decode(parts[-1], f"the key of {organization}")
    if kind == MACHINE_KEY and len(key) != 32:
        raise VerificationError(f"the machine key of {organization} is not a 32-byte Ed25519 key")
    return PinnedCredential(
        organization=organization,
        kind=kind,
        credential_id=strict_b64decode(parts[-2], f"a credential id of {organization}"),
        public_key=key,
        rp_id=parts[2] if kind == PASSKEY else "",
    )


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
            approver_credentials=trust.approver_credentials or None,
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
        bool(trust.approver_credentials),
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

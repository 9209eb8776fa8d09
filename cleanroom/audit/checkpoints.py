"""Signed checkpoints: C2SP tlog-checkpoint notes over (origin, size, root) of each log.

The log key is an Ed25519 key in the key service, made on first use; only its public half is in
the database (`LogKey`), for `manage.py audit_keys` and for verifying. A checkpoint is signed
after each batch of appends: `record_event` asks for one when its transaction commits, and
depending on `AUDIT_CHECKPOINT_SIGNING` it is

- ``task``: enqueued on the Celery queue ``audit`` (production: only the audit worker may use
  the log key; the web tier never signs);
- ``inline``: signed in-process right after the commit (the embedded default, one process);
- ``off``: left to `manage.py sign_checkpoints` or a direct call (some tests, bulk loads).

Signing first extends the log's stored Merkle tree over the events appended since
(`tree.extend`: appends never touch the tree), is idempotent (no new checkpoint when the size
has not moved) and checks what it signs: every event appended since the last checkpoint must
still hash to the leaf hash stored in its own transaction, and the stored nodes must give the
same root as the head's compact range.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction

from cleanroom.audit import merkle, tree
from cleanroom.audit.models import AuditEvent, AuditLog, Checkpoint, LogKey
from cleanroom.audit.notes import format_checkpoint
from cleanroom.audit.verifier import VerificationError
from cleanroom.audit.verifier.merkle import leaf_hash
from cleanroom.audit.verifier.notes import ED25519_ALGORITHM, is_valid_key_name, key_id
from cleanroom.crypto.keys import key_service

logger = logging.getLogger(__name__)

SIGNING_MODES = ("task", "inline", "off")


class CheckpointError(VerificationError):
    """The log is not in a state the signer will vouch for; the message says what is wrong."""


class LogKeyRefused(CheckpointError):
    """This process may not use the log key (settings.AUDIT_LOG_KEY_HOLDER is off)."""


def require_log_key_holder() -> None:
    """Refuse to sign anywhere but in a process that holds the log key: the audit worker in
    production, the single process of the embedded default."""
    if not settings.AUDIT_LOG_KEY_HOLDER:
        raise LogKeyRefused(
            "this process does not hold the log key: only the audit worker signs checkpoints "
            "and bundles (CLEANROOM_AUDIT_KEY_HOLDER)"
        )


# -- keys -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyServiceSigner:
    """A signed-note signer whose private key stays in the key service."""

    name: str
    key_id: bytes
    service_key_id: str

    def sign(self, message: bytes) -> bytes:
        return key_service().sign(self.service_key_id, message)

    def signature_line(self, text: str) -> str:
        signature = base64.b64encode(self.key_id + self.sign(text.encode("utf-8")))
        return f"\u2014 {self.name} {signature.decode('ascii')}\n"


def note_key_id(name: str, public_key: bytes) -> str:
    return key_id(name, bytes([ED25519_ALGORITHM]) + public_key).hex()


def origin_prefix() -> str:
    prefix = settings.CLEANROOM_LOG_ORIGIN_PREFIX
    if not is_valid_key_name(prefix):
        raise ImproperlyConfigured(
            f"CLEANROOM_LOG_ORIGIN_PREFIX {prefix!r} must be non-empty, without spaces or '+'"
        )
    return prefix


def origin_of(log_name: str) -> str:
    """The checkpoint origin line of a log, e.g. ``cleanroom.local/room/7``."""
    return f"{origin_prefix()}/{log_name}"


def current_log_key() -> LogKey:
    """The key that signs checkpoints now; made in the key service on first use."""
    name = origin_prefix()
    key = LogKey.objects.filter(name=name, retired_at__isnull=True).first()
    if key is not None:
        return key
    require_log_key_holder()
    service = key_service()
    service_key_id = service.create_signing_key()
    public_key = service.public_key(service_key_id)
    try:
        with transaction.atomic():
            return LogKey.objects.create(
                name=name,
                key_id=service_key_id,
                note_key_id=note_key_id(name, public_key),
                public_key=public_key,
            )
    except IntegrityError:
        # Another process made it first; its key wins and ours is never used.
        return LogKey.objects.get(name=name, retired_at__isnull=True)


def signer_for(key: LogKey) -> KeyServiceSigner:
    require_log_key_holder()
    return KeyServiceSigner(key.name, bytes.fromhex(key.note_key_id), key.key_id)


def log_vkeys() -> list[str]:
    """Every log key's verifier key, oldest first: what a regulator's trust file holds."""
    return [key.vkey for key in LogKey.objects.order_by("created_at", "pk")]


# -- signing --------------------------------------------------------------------------------


def latest_checkpoint(log_name: str) -> Checkpoint | None:
    return (
        Checkpoint.objects.filter(log__name=log_name)
        .select_related("log", "key")
        .order_by("-size")
        .first()
    )


def sign_checkpoint(log_name: str) -> Checkpoint | None:
    """Sign a checkpoint of `log_name` at its current size, unless one exists at that size.

    Returns the latest checkpoint (new or not), or None for a log with no events.
    Raises CheckpointError, naming the event, if the log changed under the tree, and
    LogKeyRefused in a process that does not hold the log key.
    """
    require_log_key_holder()
    try:
        head = tree.extend(log_name)
    except tree.TreeError as exc:
        raise CheckpointError(str(exc)) from exc
    if head is None or head.size == 0:
        return None
    latest = latest_checkpoint(log_name)
    if latest is not None and latest.size >= head.size:
        return latest
    size = head.size
    root = _checked_root(head, size, since=latest.size if latest else 0)
    key = current_log_key()
    note = sign_with_log_key(format_checkpoint(origin_of(log_name), size, root), key)
    try:
        with transaction.atomic():
            return Checkpoint.objects.create(
                log=head, size=size, root_hash=root, note=note, key=key
            )
    except IntegrityError:
        # A concurrent signer got there first; both signed the same (size, root).
        return Checkpoint.objects.get(log=head, size=size)


def sign_with_log_key(text: str, key: LogKey) -> str:
    return text + "\n" + signer_for(key).signature_line(text)


def _checked_root(head: AuditLog, size: int, *, since: int) -> bytes:
    frontier_root = merkle.frontier_root(merkle.split_frontier(bytes(head.frontier), size))
    root = tree.root(head, size)
    if root != frontier_root:
        raise CheckpointError(f"{head.name}: the stored Merkle nodes disagree with the log head")
    stored = tree.leaf_hashes(head, since, size)
    rows = (
        AuditEvent.objects.filter(log=head, seq__gte=since, seq__lt=size)
        .order_by("seq")
        .values_list("seq", "canonical")
    )
    expected = since
    for seq, canonical in rows.iterator(chunk_size=2000):
        if seq != expected:
            raise CheckpointError(f"{head.name}: event {expected} is missing")
        if stored.get(seq) != leaf_hash(bytes(canonical)):
            raise CheckpointError(f"{head.name}: event {seq} was changed after it was appended")
        expected += 1
    if expected != size:
        raise CheckpointError(f"{head.name}: event {expected} is missing")
    return root


def sign_all(log_names: Iterable[str] | None = None) -> list[Checkpoint]:
    """Sign every log (or the given ones) whose size moved; return the new checkpoints."""
    names = log_names if log_names is not None else AuditLog.objects.values_list("name", flat=True)
    signed = []
    for name in list(names):
        before = latest_checkpoint(name)
        after = sign_checkpoint(name)
        if after is not None and (before is None or after.pk != before.pk):
            signed.append(after)
    return signed


def note_with_cosignatures(checkpoint: Checkpoint) -> str:
    """The checkpoint note as published: the log's signature, then each witness's."""
    lines = checkpoint.cosignatures.order_by("created_at", "pk").values_list("signature", flat=True)
    return checkpoint.note + "".join(lines)


# -- after commit -----------------------------------------------------------------------------


class AuditQueue(Protocol):
    """Where work for the audit worker goes: implemented by the Celery tasks (cleanroom/audit/
    tasks.py) and plugged in when the audit app is ready, so this kernel never imports them."""

    def sign_checkpoint(self, log_name: str) -> None: ...

    def export_bundle(self, room_id: int, room_slug: str, requested_by: int | None) -> None: ...


_queue: AuditQueue | None = None


def use_queue(queue: AuditQueue) -> None:
    global _queue
    _queue = queue


def audit_queue() -> AuditQueue:
    if _queue is None:
        raise ImproperlyConfigured("no audit queue: the audit app plugs one in when ready")
    return _queue


class _SignAfterCommit:
    """The on-commit callback for one log; `audit_log` lets later appends see it is queued."""

    def __init__(self, log_name: str, mode: str) -> None:
        self.audit_log = log_name
        self.mode = mode

    def __call__(self) -> None:
        if self.mode == "task":
            audit_queue().sign_checkpoint(self.audit_log)
        else:
            sign_checkpoint(self.audit_log)


def schedule(log_name: str) -> None:
    """Ask for a checkpoint of `log_name` once the current transaction commits (once per log
    per transaction, however many events it appends)."""
    mode = settings.AUDIT_CHECKPOINT_SIGNING
    if mode not in SIGNING_MODES:
        raise ImproperlyConfigured(f"AUDIT_CHECKPOINT_SIGNING must be one of {SIGNING_MODES}")
    if mode == "off":
        return
    pending = transaction.get_connection().run_on_commit
    if any(getattr(callback, "audit_log", None) == log_name for _, callback, _ in pending):
        return
    # Robust: the change and its event are committed whatever happens to the signing; a
    # failure is logged and the next append (or `sign_checkpoints`) signs the log again.
    transaction.on_commit(_SignAfterCommit(log_name, mode), robust=True)

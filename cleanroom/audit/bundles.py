"""Audit bundles (DESIGN.md section 9, format cleanroom-bundle/v1): a room's whole log at a
signed checkpoint, with its attachments and the offline verifier, in one zip.

- ``MANIFEST.json``: format, origin, log, tree size, and every other file with its SHA-256;
- ``MANIFEST.sig``: a signed note over the manifest's SHA-256, by the log key;
- ``checkpoint.txt``: the signed checkpoint with its cosignatures;
- ``events.jsonl``: line i is leaf i (the event's canonical bytes and a newline);
- ``attachments/<sha256>``: the files events reference;
- ``verify.pyz``, the offline verifier (``cleanroom/audit/verifier``) as one runnable file,
  and ``README.txt``.

The bundle holds the log at the checkpoint it signs (one is signed first if the log has grown);
the export is then recorded in the log as ``bundle.exported``, so it shows in the next bundle.

Building a bundle signs with the log key, so only a process holding it builds one
(`checkpoints.require_log_key_holder`): in production the audit worker, on request
(`request_bundle` enqueues `tasks.export_bundle_task`), keeping the zip as an `AuditBundle` the
web tier then serves; in the embedded default the one process builds it at once.

A room is what the caller passes (the rooms app's model, or a `RoomRef`): the kernel reads only
its id, which names its log, and its slug.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from cleanroom.audit.checkpoints import (
    audit_queue,
    current_log_key,
    latest_checkpoint,
    note_with_cosignatures,
    origin_of,
    require_log_key_holder,
    sign_checkpoint,
    sign_with_log_key,
)
from cleanroom.audit.log import record_room_event, room_log_name
from cleanroom.audit.models import AuditAttachment, AuditBundle, AuditEvent, AuditLog
from cleanroom.audit.verifier.build import build_zipapp
from cleanroom.audit.verifier.bundle import (
    BUNDLE_FORMAT,
    MANIFEST,
    MANIFEST_SIG,
    VERIFIER,
    manifest_note_text,
)
from cleanroom.errors import DomainError


class BundleError(DomainError):
    code = "bundle_refused"


class AuditedRoom(Protocol):
    """What the kernel reads of a room: its id (its log is `room/<id>`) and its slug."""

    @property
    def pk(self) -> int: ...

    @property
    def slug(self) -> str: ...


@dataclass(frozen=True)
class RoomRef:
    """A room by its id and slug, for a process that has no room at hand (the audit worker)."""

    pk: int
    slug: str


@dataclass(frozen=True)
class ExportedBundle:
    log: str
    origin: str
    tree_size: int
    root_hash: bytes
    files: int


def bundle_filename(room: AuditedRoom) -> str:
    return f"{room.slug}-audit-bundle.zip"


def export_bundle(*, room: AuditedRoom, output: str | Path | IO[bytes], by=None) -> ExportedBundle:
    """Write the bundle of `room`'s log to `output` (a path or a writable binary file) and
    record the export in the log."""
    require_log_key_holder()
    log_name = room_log_name(room.pk)
    checkpoint = sign_checkpoint(log_name)
    if checkpoint is None:
        raise BundleError(f"The room {room.slug} has no audit events yet.")
    size = checkpoint.size
    origin = origin_of(log_name)
    files: dict[str, str] = {}
    with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_DEFLATED) as archive:

        def add(name: str, content: bytes) -> None:
            archive.writestr(name, content)
            files[name] = hashlib.sha256(content).hexdigest()

        files["events.jsonl"], referenced = _write_events(archive, checkpoint.log, size)
        add("checkpoint.txt", note_with_cosignatures(checkpoint).encode("utf-8"))
        for start in range(0, len(referenced), 200):
            batch = referenced[start : start + 200]
            for attachment in AuditAttachment.objects.filter(sha256__in=batch):
                # Written as stored: if a row was changed, the verifier says so.
                add(f"attachments/{attachment.sha256}", bytes(attachment.content))
        add(VERIFIER, build_zipapp())
        add("README.txt", _readme(origin, size).encode("utf-8"))
        manifest = {
            "format": BUNDLE_FORMAT,
            "origin": origin,
            "log": log_name,
            "tree_size": size,
            "exported_at": timezone.now().isoformat(timespec="seconds").replace("+00:00", "Z"),
            "files": dict(sorted(files.items())),
        }
        manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8") + b"\n"
        archive.writestr(MANIFEST, manifest_bytes)
        note = manifest_note_text(origin, hashlib.sha256(manifest_bytes).hexdigest())
        archive.writestr(MANIFEST_SIG, sign_with_log_key(note, current_log_key()))
    with transaction.atomic():
        record_room_event(
            room.pk,
            "bundle.exported",
            by=by,
            subject=f"room:{room.pk}",
            format=BUNDLE_FORMAT,
            tree_size=size,
        )
    return ExportedBundle(log_name, origin, size, bytes(checkpoint.root_hash), len(files) + 2)


def build_bundle(*, room: AuditedRoom, by=None) -> AuditBundle:
    """Export the bundle of `room` now and keep it for download (needs the log key)."""
    with tempfile.TemporaryFile() as handle:
        exported = export_bundle(room=room, output=handle, by=by)
        handle.seek(0)
        content = handle.read()
    return AuditBundle.objects.create(
        log=AuditLog.objects.get(name=exported.log),
        tree_size=exported.tree_size,
        sha256=hashlib.sha256(content).hexdigest(),
        size=len(content),
        content=content,
        requested_by=by,
    )


def request_bundle(*, room: AuditedRoom, by=None) -> AuditBundle | None:
    """A fresh bundle of `room`: built now where this process holds the log key (the embedded
    default), else asked of the audit worker once the caller's transaction commits (None)."""
    if settings.AUDIT_LOG_KEY_HOLDER:
        return build_bundle(room=room, by=by)
    user_id = by.pk if by is not None else None
    transaction.on_commit(lambda: audit_queue().export_bundle(room.pk, room.slug, user_id))
    return None


def latest_bundle(room: AuditedRoom) -> AuditBundle | None:
    """The newest kept bundle of `room`, or None."""
    return (
        AuditBundle.objects.filter(log__name=room_log_name(room.pk))
        .order_by("-created_at", "-pk")
        .first()
    )


def bundle_for_download(room: AuditedRoom, *, by=None) -> AuditBundle | None:
    """What a download serves: where this process holds the log key, a bundle of the log as it
    is now (built if the log grew since the last); elsewhere the newest the worker built."""
    latest = latest_bundle(room)
    if settings.AUDIT_LOG_KEY_HOLDER:
        size = AuditEvent.objects.filter(log__name=room_log_name(room.pk)).count()
        # The export itself adds one event after the bundle's checkpoint.
        if latest is None or latest.tree_size + 1 < size:
            return build_bundle(room=room, by=by)
    return latest


def _write_events(archive: zipfile.ZipFile, log: AuditLog, size: int) -> tuple[str, list[str]]:
    digest = hashlib.sha256()
    referenced: set[str] = set()
    rows = (
        AuditEvent.objects.filter(log=log, seq__lt=size)
        .order_by("seq")
        .values_list("canonical", flat=True)
    )
    with archive.open("events.jsonl", "w", force_zip64=True) as out:
        for canonical in rows.iterator(chunk_size=5000):
            line = bytes(canonical) + b"\n"
            out.write(line)
            digest.update(line)
            if b'"attachments":["' in line:  # only then is it worth parsing
                referenced.update(_attachments_of(line))
    return digest.hexdigest(), sorted(referenced)


def _attachments_of(line: bytes) -> list[str]:
    try:
        body: Any = json.loads(line)
    except ValueError:
        return []
    found = body.get("attachments", []) if isinstance(body, dict) else []
    return [sha for sha in found if isinstance(sha, str)]


def bundle_summaries(rooms: Iterable[AuditedRoom]) -> list[dict[str, Any]]:
    """What the bundle page shows per room: the log's size and its latest checkpoint."""
    rooms = list(rooms)
    heads = {
        log.name: log
        for log in AuditLog.objects.filter(name__in=[room_log_name(r.pk) for r in rooms])
    }
    summaries = []
    for room in rooms:
        name = room_log_name(room.pk)
        head = heads.get(name)
        checkpoint = latest_checkpoint(name) if head else None
        bundle = (
            AuditBundle.objects.filter(log=head).defer("content").order_by("-created_at").first()
            if head
            else None
        )
        summaries.append(
            {
                "room": room,
                "log": name,
                "origin": origin_of(name),
                "size": head.events.count() if head else 0,
                "checkpoint": checkpoint,
                "cosignatures": checkpoint.cosignatures.count() if checkpoint else 0,
                "bundle": bundle,
            }
        )
    return summaries


def _readme(origin: str, size: int) -> str:
    return f"""Clean room audit bundle ({BUNDLE_FORMAT})

Log      {origin}
Events   {size} (events.jsonl, line i is event i; checkpoint.txt signs their Merkle root)

Verify it offline, with Python 3 and the `cryptography` package alone:

    python3 -m zipfile -e THIS_BUNDLE.zip bundle/      # or any unzip tool, for verify.pyz
    python3 bundle/verify.pyz THIS_BUNDLE.zip --trust TRUSTFILE [--previous CHECKPOINT]

verify.pyz is the verifier's source in one zip file (a Python zipapp): read it with any unzip
tool, or rebuild it from the platform's code (python3 -m cleanroom.audit.verifier.build
verify.pyz) and compare the two.

TRUSTFILE holds the keys you trust, one a line: the log's verification key(s) as the
operator's `python manage.py audit_keys` prints them, obtained from the operator and kept by
you; `witness <key>` lines for member organisations' witnesses whose cosignatures you want
checked; and `allow-simulated-tee` only if you accept jobs run on a simulated TEE. Never take
keys from this bundle: whoever could alter the bundle could alter them too.

CHECKPOINT (optional) is a checkpoint.txt you saved from an earlier bundle of this log; the
verifier then also checks that this log extends it (nothing was rewritten since).

verify.pyz checks MANIFEST.sig against your keys, that the bundle holds exactly the files
MANIFEST.json lists with the SHA-256 it gives, the checkpoint's signature, that events.jsonl is
canonical, numbered 0..n-1 and hashes to the checkpoint's Merkle root (RFC 9162), that every
attachment is present, and the clean room's rules: every executed query had all data owners'
approvals of its exact digest before it ran and before it expired; every step ran at a site
its data's jurisdiction allows; no dataset's privacy budget was overspent; results went only
to approved receivers; TEE attestations were hardware-backed. It exits 0 when all of this holds
and 1 naming the first failure.
"""

"""Writing to the audit log: the one function every state change calls, in its own transaction.

An append, under the row lock of the log's head:

1. locks the head, then takes the next sequence number (one past the log's last event: the
   lock serialises writers, so numbers are gap-free and in commit order);
2. builds the event's canonical bytes and inserts them with their leaf hash, and the index of
   stable ids the event names, in one statement (plus its attachments, content-addressed);
3. asks for a checkpoint once the transaction commits (`checkpoints.schedule`).

That is all the caller's transaction pays for: the change and its event commit together or not
at all. The Merkle tree is extended later, off the append path, by the checkpoint signer
(`tree.extend`), which checks every event against the leaf hash stored in its own transaction.
"""

# ruff: noqa: S608 - the SQL below interpolates only table names from model metadata and
# placeholder lists; every value is a query parameter.
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, overload

from django.contrib.auth.models import User
from django.db import connection
from django.db.models import Max
from django.utils import timezone

from cleanroom.audit.checkpoints import schedule
from cleanroom.audit.events import registered
from cleanroom.audit.models import AuditAttachment, AuditEvent, AuditEventRef, AuditLog
from cleanroom.audit.verifier.canonical import canonical_json
from cleanroom.audit.verifier.merkle import leaf_hash

PLATFORM_LOG = "platform"

# Stable ids events may name (cleanroom/audit/README.md); the index records each one it finds.
_REF = re.compile(r"(?:org|user|dataset|query|job|room|site):[A-Za-z0-9_.\-]{1,80}")


def room_log_name(room_id: int) -> str:
    return f"room/{room_id}"


@overload
def actor_ref(user: User) -> str: ...


@overload
def actor_ref(user: User | None) -> str | None: ...


def actor_ref(user: User | None) -> str | None:
    """Events carry stable ids only, never names or e-mail addresses."""
    return f"user:{user.pk}" if user is not None else None


def store_attachment(content: bytes) -> str:
    """Keep `content` for bundles (once per distinct content); return its SHA-256 hex."""
    digest = hashlib.sha256(content).hexdigest()
    AuditAttachment.objects.bulk_create(
        [AuditAttachment(sha256=digest, content=content, size=len(content))],
        ignore_conflicts=True,
    )
    return digest


def record_event(
    *,
    log: str,
    type: str,
    actor: str | None,
    subject: str,
    data: dict[str, Any] | None = None,
    attachments: list[str] | None = None,
    attach: Mapping[str, bytes] | None = None,
) -> AuditEvent:
    """Append an event to `log` inside the caller's transaction, with the next sequence number.

    `attachments` lists SHA-256 hex digests of files already stored; `attach` maps names to
    file contents to store now (the names are for the caller; events reference contents by
    hash). Both end up, sorted and deduplicated, in the event's `attachments`.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("audit events are written in the same transaction as their change")
    digests = set(attachments or [])
    for content in (attach or {}).values():
        digests.add(store_attachment(content))
    now = timezone.now()
    event = {
        "log": log,
        "seq": _SEQ_PLACEHOLDER,
        "time": now.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "type": type,
        "actor": actor,
        "subject": subject,
        "data": data or {},
        "attachments": sorted(digests),
    }
    before, after = _split_at_seq(canonical_json(event))
    refs = sorted(set(_refs(subject, data or {})))
    if connection.vendor == "postgresql":
        event_id, log_id, seq = _append_postgresql(log, type, before, after, now, refs)
        canonical = before + str(seq).encode("ascii") + after
        leaf = leaf_hash(canonical)
    else:
        log_id, seq = _reserve_seq(log)
        canonical = before + str(seq).encode("ascii") + after
        leaf = leaf_hash(canonical)
        event_id = _insert(log_id, seq, type, canonical, leaf, now, refs)
    created = AuditEvent(
        id=event_id,
        log_id=log_id,
        seq=seq,
        type=type,
        canonical=canonical,
        leaf_hash=leaf,
        created_at=now,
    )
    created._state.adding = False
    created._state.db = connection.alias
    schedule(log)
    return created


# The sequence number is known only under the head's lock, so the event's canonical bytes are
# made around it: encoded with a placeholder, then cut where the number goes. On PostgreSQL the
# whole append is then one round trip, `audit_append` (see `appending.py`): lock the head, read
# the last number, insert the event with its leaf hash and id index. Nothing rewrites the head
# row (a locking read writes no new row version), and the Merkle tree is left to the checkpoint
# signer. Round trips dominate an append that is not waiting on its commit. SQLite, in-process,
# runs the same steps as three statements.

_SEQ_PLACEHOLDER = -1
_SEQ_FIELD = b'"seq":-1'
_EVENT = AuditEvent._meta.db_table
_REFS = AuditEventRef._meta.db_table
_HEAD = AuditLog._meta.db_table


def _split_at_seq(template: bytes) -> tuple[bytes, bytes]:
    """The bytes before and after the top-level sequence number of an encoded event.

    Keys are sorted, so only `subject`, `time` and `type` (strings, whose quotes are escaped)
    follow `seq`: its last occurrence is the top-level field, whatever `data` holds.
    """
    cut = template.rindex(_SEQ_FIELD) + len(_SEQ_FIELD) - 2
    return template[:cut], template[cut + 2 :]


def _append_postgresql(
    log: str, type: str, before: bytes, after: bytes, now, refs: list[tuple[str, str]]
) -> tuple[int, int, int]:
    params = [log, type, before, after, now, [k for k, _ in refs], [r for _, r in refs]]
    sql = (
        "SELECT event_id, log_id, seq FROM audit_append(%s, %s, %s, %s, %s, %s::text[], %s::text[])"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
        if row is None:
            # First event of a new log; get_or_create survives a concurrent first append.
            AuditLog.objects.get_or_create(name=log)
            cursor.execute(sql, params)
            row = cursor.fetchone()
    return row


def _reserve_seq(log: str) -> tuple[int, int]:
    """The id of the head of `log` (made on first use) and the next sequence number.

    Elsewhere than PostgreSQL, that is SQLite: its writers are serialised by the IMMEDIATE
    transactions the settings ask for, so there is no row to lock.
    """
    sql = f"SELECT id FROM {_HEAD} WHERE name = %s"
    with connection.cursor() as cursor:
        cursor.execute(sql, [log])
        row = cursor.fetchone()
        if row is None:
            AuditLog.objects.get_or_create(name=log)
            cursor.execute(sql, [log])
            row = cursor.fetchone()
        log_id = row[0]
        cursor.execute(f"SELECT MAX(seq) FROM {_EVENT} WHERE log_id = %s", [log_id])
        last = cursor.fetchone()[0]
    return log_id, 0 if last is None else last + 1


def _insert(
    log_id: int,
    seq: int,
    type: str,
    canonical: bytes,
    leaf: bytes,
    now,
    refs: list[tuple[str, str]],
) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {_EVENT} (log_id, seq, type, canonical, leaf_hash, created_at) "
            "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            [log_id, seq, type, canonical, leaf, connection.ops.adapt_datetimefield_value(now)],
        )
        event_id = cursor.fetchone()[0]
        if refs:
            cursor.execute(
                f"INSERT INTO {_REFS} (event_id, key, ref) VALUES "
                + ", ".join(["(%s, %s, %s)"] * len(refs)),
                [p for key, ref in refs for p in (event_id, key, ref)],
            )
    return event_id


def _refs(subject: str, data: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    if isinstance(subject, str) and _REF.fullmatch(subject):
        yield "subject", subject
    for key, value in data.items():
        for ref in _walk(value):
            yield key[:64], ref


def _walk(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        if _REF.fullmatch(value):
            yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _walk(item)


def record_events(*, log: str, events: Sequence[Mapping[str, Any]]) -> int:
    """Append many events to `log` in the caller's transaction, under one lock of its head, in
    multi-row inserts: for bulk loads. Each item has `type`, `actor`, `subject` and optionally
    `data` (no attachments). Returns the sequence number of the first."""
    if not connection.in_atomic_block:
        raise RuntimeError("audit events are written in the same transaction as their change")
    AuditLog.objects.get_or_create(name=log)
    head = AuditLog.objects.select_for_update().get(name=log)
    last = AuditEvent.objects.filter(log=head).aggregate(last=Max("seq"))["last"]
    first = 0 if last is None else last + 1
    now = timezone.now()
    time = now.isoformat(timespec="microseconds").replace("+00:00", "Z")
    rows: list[tuple[int, str, bytes, bytes]] = []
    refs: list[list[tuple[str, str]]] = []
    for seq, item in enumerate(events, start=first):
        data = dict(item.get("data") or {})
        canonical = canonical_json(
            {
                "log": log,
                "seq": seq,
                "time": time,
                "type": item["type"],
                "actor": item["actor"],
                "subject": item["subject"],
                "data": data,
                "attachments": [],
            }
        )
        rows.append((seq, item["type"], canonical, leaf_hash(canonical)))
        refs.append(sorted(set(_refs(item["subject"], data))))
    if connection.vendor == "postgresql":
        _copy_events(head.pk, now, rows, refs)
    else:
        created = AuditEvent.objects.bulk_create(
            [
                AuditEvent(
                    log=head, seq=seq, type=type, canonical=canonical, leaf_hash=leaf,
                    created_at=now,
                )
                for seq, type, canonical, leaf in rows
            ],
            batch_size=2000,
        )  # fmt: skip
        AuditEventRef.objects.bulk_create(
            [
                AuditEventRef(event=event, key=key, ref=ref)
                for event, found in zip(created, refs, strict=True)
                for key, ref in found
            ],
            batch_size=5000,
        )
    schedule(log)
    return first


def _copy_events(log_id: int, now, rows, refs) -> None:
    """PostgreSQL's COPY for a bulk append: the events, then their index by the ids they got."""
    with connection.cursor() as cursor:
        with cursor.cursor.copy(
            f"COPY {_EVENT} (log_id, seq, type, canonical, leaf_hash, created_at) FROM STDIN"
        ) as copy:
            for seq, type, canonical, leaf in rows:
                copy.write_row((log_id, seq, type, canonical, leaf, now))
        cursor.execute(
            f"SELECT seq, id FROM {_EVENT} WHERE log_id = %s AND seq >= %s",
            [log_id, rows[0][0] if rows else 0],
        )
        ids = dict(cursor.fetchall())
        with cursor.cursor.copy(f"COPY {_REFS} (event_id, key, ref) FROM STDIN") as copy:
            for (seq, *_), found in zip(rows, refs, strict=True):
                for key, ref in found:
                    copy.write_row((ids[seq], key, ref))


def events_of(log: str) -> list[dict[str, Any]]:
    return [
        json.loads(bytes(e.canonical))
        for e in AuditEvent.objects.filter(log__name=log).order_by("seq")
    ]


def record_room_event(
    room_id: int,
    type: str,
    *,
    by,
    subject: str,
    attach: Mapping[str, bytes] | None = None,
    **data: Any,
) -> AuditEvent:
    """Append to a room's log: the form every room, query and job event takes."""
    return record_event(
        log=room_log_name(room_id),
        type=registered(type),
        actor=actor_ref(by),
        subject=subject,
        data=data,
        attach=attach,
    )


def record_platform_event(
    type: str,
    *,
    by,
    subject: str,
    attach: Mapping[str, bytes] | None = None,
    **data: Any,
) -> AuditEvent:
    """Append to the platform's log: organisations, memberships, datasets and their policies."""
    return record_event(
        log=PLATFORM_LOG,
        type=registered(type),
        actor=actor_ref(by),
        subject=subject,
        data=data,
        attach=attach,
    )

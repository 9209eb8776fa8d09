"""Writing to the audit log: the one function every state change calls, in its own transaction.

An append, under the row lock of the log's head:

1. locks the head and takes the next sequence number, then builds the event's canonical bytes;
2. inserts the event, its attachments (content-addressed) and its index of stable ids;
3. extends the log's RFC 9162 tree: inserts the leaf hash and every node the append completes,
   computed from the compact range kept in the head row (so nothing else is read);
4. moves the head to the new size and compact range;
5. asks for a checkpoint once the transaction commits (`checkpoints.schedule`).

Everything but the last step happens in the caller's transaction: the change, its event and its
place in the tree commit together or not at all.
"""

# ruff: noqa: S608 - the SQL below interpolates only table names from model metadata and
# placeholder lists; every value is a query parameter.
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from django.db import connection
from django.utils import timezone

from cleanroom.audit import merkle
from cleanroom.audit.models import (
    AuditAttachment,
    AuditEvent,
    AuditEventRef,
    AuditLog,
    AuditNode,
)
from cleanroom.audit.verify import canonical_json, leaf_hash

PLATFORM_LOG = "platform"

# Stable ids events may name (README "Audit events"); the index records each one it finds.
_REF = re.compile(r"(?:org|user|dataset|query|job|room|site):[A-Za-z0-9_.\-]{1,80}")


def room_log_name(room_id: int) -> str:
    return f"room/{room_id}"


def actor_ref(user) -> str | None:
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
    log_id, seq, packed = _reserve_seq(log)
    now = timezone.now()
    event = {
        "log": log,
        "seq": seq,
        "time": now.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "type": type,
        "actor": actor,
        "subject": subject,
        "data": data or {},
        "attachments": sorted(digests),
    }
    canonical = canonical_json(event)
    frontier, nodes = merkle.frontier_append(
        merkle.split_frontier(packed, seq), seq, leaf_hash(canonical)
    )
    refs = sorted(set(_refs(subject, data or {})))
    event_id = _insert(
        log_id, seq, type, canonical, now, nodes, refs, merkle.join_frontier(frontier)
    )
    created = AuditEvent(
        id=event_id, log_id=log_id, seq=seq, type=type, canonical=canonical, created_at=now
    )
    created._state.adding = False
    created._state.db = connection.alias
    # Imported here: checkpoints imports this module's helpers.
    from cleanroom.audit.checkpoints import schedule

    schedule(log)
    return created


# The hot path is two statements: one that locks the head and reserves the sequence number,
# one that writes the event, its nodes, its index and the new compact range (a single
# statement with data-modifying CTEs on PostgreSQL; SQLite, in-process, runs them one by one).
# Round trips dominate an append that is not waiting on its commit; the ORM equivalent is five
# statements and about three times the Python overhead.

_EVENT = AuditEvent._meta.db_table
_NODE = AuditNode._meta.db_table
_REFS = AuditEventRef._meta.db_table
_HEAD = AuditLog._meta.db_table


def _reserve_seq(log: str) -> tuple[int, int, bytes]:
    """Lock the head of `log` (creating it on first use); return its id, size and range."""
    # A locking read, not an UPDATE: the head row then gets one new version an append (in the
    # write below), which keeps PostgreSQL's version chain short in long transactions.
    # SQLite has no row locks; its writers are serialised by the IMMEDIATE transactions the
    # settings ask for.
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    sql = f"SELECT id, size, frontier FROM {_HEAD} WHERE name = %s{lock}"
    with connection.cursor() as cursor:
        cursor.execute(sql, [log])
        row = cursor.fetchone()
        if row is None:
            # First event of a new log; get_or_create survives a concurrent first append.
            AuditLog.objects.get_or_create(name=log)
            cursor.execute(sql, [log])
            row = cursor.fetchone()
    log_id, size, frontier = row
    return log_id, size, bytes(frontier)


def _insert(
    log_id: int,
    seq: int,
    type: str,
    canonical: bytes,
    now,
    nodes: list[tuple[int, int, bytes]],
    refs: list[tuple[str, str]],
    frontier: bytes,
) -> int:
    created_at = connection.ops.adapt_datetimefield_value(now)
    node_rows = ", ".join(["(%s, %s, %s, %s)"] * len(nodes))
    node_params = [p for level, index, h in nodes for p in (log_id, level, index, h)]
    event_sql = (
        f"INSERT INTO {_EVENT} (log_id, seq, type, canonical, created_at) "
        "VALUES (%s, %s, %s, %s, %s) RETURNING id"
    )
    event_params = [log_id, seq, type, canonical, created_at]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            ref_part, ref_params = "", []
            if refs:
                ref_rows = ", ".join(["(%s, %s)"] * len(refs))
                ref_part = (
                    f", refs AS (INSERT INTO {_REFS} (event_id, key, ref) "
                    f"SELECT ev.id, v.k, v.r FROM ev, (VALUES {ref_rows}) AS v(k, r))"
                )
                ref_params = [p for ref in refs for p in ref]
            cursor.execute(
                f"WITH ev AS ({event_sql}), "
                f'nodes AS (INSERT INTO {_NODE} (log_id, level, "index", hash) '
                f"VALUES {node_rows}){ref_part}, "
                f"head AS (UPDATE {_HEAD} SET size = %s, frontier = %s WHERE id = %s) "
                "SELECT id FROM ev",
                [*event_params, *node_params, *ref_params, seq + 1, frontier, log_id],
            )
            return cursor.fetchone()[0]
        cursor.execute(event_sql, event_params)
        event_id = cursor.fetchone()[0]
        cursor.execute(
            f'INSERT INTO {_NODE} (log_id, level, "index", hash) VALUES {node_rows}', node_params
        )
        if refs:
            cursor.execute(
                f"INSERT INTO {_REFS} (event_id, key, ref) VALUES "
                + ", ".join(["(%s, %s, %s)"] * len(refs)),
                [p for key, ref in refs for p in (event_id, key, ref)],
            )
        cursor.execute(
            f"UPDATE {_HEAD} SET size = %s, frontier = %s WHERE id = %s",
            [seq + 1, frontier, log_id],
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
        type=type,
        actor=actor_ref(by),
        subject=subject,
        data=data,
        attach=attach,
    )

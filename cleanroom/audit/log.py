"""Writing to the audit log: the one function every state change calls, in its own transaction."""

from __future__ import annotations

import json
from typing import Any

from django.db import connection
from django.utils import timezone

from cleanroom.audit.models import AuditEvent, AuditLog
from cleanroom.audit.verify import canonical_json

PLATFORM_LOG = "platform"


def room_log_name(room_id: int) -> str:
    return f"room/{room_id}"


def actor_ref(user) -> str | None:
    """Events carry stable ids only, never names or e-mail addresses."""
    return f"user:{user.pk}" if user is not None else None


def record_event(
    *,
    log: str,
    type: str,
    actor: str | None,
    subject: str,
    data: dict[str, Any] | None = None,
    attachments: list[str] | None = None,
) -> AuditEvent:
    """Append an event to `log` inside the caller's transaction, with the next sequence number."""
    if not connection.in_atomic_block:
        raise RuntimeError("audit events are written in the same transaction as their change")
    head, _ = AuditLog.objects.get_or_create(name=log)
    head = AuditLog.objects.select_for_update().get(pk=head.pk)
    now = timezone.now()
    event = {
        "log": log,
        "seq": head.size,
        "time": now.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "type": type,
        "actor": actor,
        "subject": subject,
        "data": data or {},
        "attachments": sorted(attachments or []),
    }
    created = AuditEvent.objects.create(
        log=head, seq=head.size, type=type, canonical=canonical_json(event), created_at=now
    )
    AuditLog.objects.filter(pk=head.pk).update(size=head.size + 1)
    return created


def events_of(log: str) -> list[dict[str, Any]]:
    return [
        json.loads(bytes(e.canonical))
        for e in AuditEvent.objects.filter(log__name=log).order_by("seq")
    ]

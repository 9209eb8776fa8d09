"""Reads of the audit log, scoped to what the caller may see (see `permissions.py`)."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db.models import Q, QuerySet
from django.http import QueryDict

from cleanroom.audit.log import room_log_name
from cleanroom.audit.models import AuditEvent, AuditEventRef
from jobs.models import Room
from trails.permissions import (
    Permission,
    organizations_with,
    platform_event_filter,
    readable_rooms,
)


@dataclass(frozen=True)
class TrailFilter:
    """What a trail is narrowed to: a room (slug), an event type, a query or dataset id."""

    room: str = ""
    type: str = ""
    query: str = ""
    dataset: str = ""

    @classmethod
    def from_params(cls, params: QueryDict) -> TrailFilter:
        def clean(name: str) -> str:
            return (params.get(name) or "").strip()[:100]

        return cls(clean("room"), clean("type"), clean("query"), clean("dataset"))

    @property
    def active(self) -> bool:
        return any((self.room, self.type, self.query, self.dataset))


def trail_events(user: User, where: TrailFilter | None = None) -> QuerySet[AuditEvent]:
    """The caller's trail: the logs of its organisations' rooms, and the platform events about
    the organisations it reads the trail of; newest first. Empty for anyone else."""
    where = where or TrailFilter()
    rooms = readable_rooms(user)
    if where.room:
        rooms = rooms.filter(slug=where.room)
    scope = Q(log__name__in=[room_log_name(pk) for pk in rooms.values_list("pk", flat=True)])
    readers = organizations_with(user, Permission.READ_ORGANIZATION_TRAIL)
    if readers and not where.room:
        scope |= platform_event_filter(readers)
    events = AuditEvent.objects.filter(scope)
    if where.type:
        events = events.filter(type=where.type)
    for prefix, value in (("query", where.query), ("dataset", where.dataset)):
        if value:
            ref = value if value.startswith(f"{prefix}:") else f"{prefix}:{value}"
            events = events.filter(pk__in=AuditEventRef.objects.filter(ref=ref).values("event_id"))
    return events.select_related("log").order_by("-created_at", "-pk")


def trail_types(user: User) -> list[str]:
    """The event types in the caller's trail, for the type filter."""
    return sorted(set(trail_events(user).order_by().values_list("type", flat=True).distinct()))


def rooms_by_log(rooms: QuerySet[Room]) -> dict[str, Room]:
    return {room_log_name(room.pk): room for room in rooms}

"""Reads about rooms, scoped to the caller's organisations."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db.models import OuterRef, QuerySet, Subquery
from django.shortcuts import get_object_or_404

from jobs.models import Query, Room, RoomDataset, RoomMembership
from jobs.permissions import require_room_reader
from parties.selectors import organizations_of


def rooms_for(user: User) -> QuerySet[Room]:
    """Rooms where one of the caller's organisations is a member or has a pending invitation."""
    return (
        Room.objects.filter(
            memberships__organization__in=organizations_of(user),
            memberships__status__in=[RoomMembership.Status.ACTIVE, RoomMembership.Status.INVITED],
        )
        .distinct()
        .select_related("created_by_organization")
    )


def get_room_for_member(user: User, slug: str) -> Room:
    """A room the caller's organisation is in or invited to; outsiders get a 404."""
    return get_object_or_404(rooms_for(user), slug=slug)


def get_room_for_reader(user: User, slug: str) -> Room:
    """A room whose queries, jobs and budget the caller reads: outsiders get a 404, an
    invitee that has not joined yet a 403 (jobs/permissions.py)."""
    room = get_room_for_member(user, slug)
    require_room_reader(user, room)
    return room


def invitations_for(user: User) -> QuerySet[RoomMembership]:
    return RoomMembership.objects.filter(
        organization__in=organizations_of(user),
        organization__memberships__user=user,
        organization__memberships__role="owner",
        status=RoomMembership.Status.INVITED,
    ).select_related("room", "organization")


def contributions_of(room: Room) -> QuerySet[RoomDataset]:
    return room.contributions.select_related(
        "dataset__organization", "dataset__jurisdiction", "version", "policy"
    )


def queries_of(room: Room) -> QuerySet[Query]:
    """The latest version of each query in the room, newest first."""
    latest = (
        Query.objects.filter(room=room, lineage=OuterRef("lineage"))
        .order_by("-version")
        .values("pk")[:1]
    )
    return (
        Query.objects.filter(room=room, pk=Subquery(latest))
        .select_related("author", "author_organization")
        .order_by("-created_at")
    )

"""Reads about rooms, scoped to the caller's organisations."""

from __future__ import annotations

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from jobs.models import Room, RoomDataset, RoomMembership
from parties.selectors import organizations_of


def rooms_for(user) -> QuerySet[Room]:
    """Rooms where one of the caller's organisations is a member or has a pending invitation."""
    return (
        Room.objects.filter(
            memberships__organization__in=organizations_of(user),
            memberships__status__in=[RoomMembership.Status.ACTIVE, RoomMembership.Status.INVITED],
        )
        .distinct()
        .select_related("created_by_organization")
    )


def get_room_for_member(user, slug: str) -> Room:
    """Outsiders get a 404."""
    return get_object_or_404(rooms_for(user), slug=slug)


def invitations_for(user) -> QuerySet[RoomMembership]:
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

"""Who may see and change rooms and their queries. The pages, the API, the services and the
templates all ask here, so a page never allows what the API refuses.

- Members and invitees (an organisation invited and not yet answered) see a room: its name,
  purpose, who created it, who invited whom, its members and the datasets contributed with
  their jurisdictions, versions and policy versions; enough to decide whether to join.
- Only active members read what happens in it: queries and their plans, approvals, jobs,
  results (receivers only) and the budget. An invitee asking gets a 403 (it knows the room
  exists); an outsider gets a 404.
- A query is changed (a draft edited in place or submitted, a submitted version revised) by
  its author organisation alone: a member of it who may propose queries.
- A result is read by members of its receiving organisations alone.
- An organisation's participation in a room is suspended and lifted by its own owners alone.
"""

from __future__ import annotations

from enum import StrEnum

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied

from jobs.models import Query, Result, Room, RoomMembership
from parties.models import Organization
from parties.permissions import Permission as PartyPermission
from parties.permissions import has_permission as has_party_permission
from parties.selectors import organizations_of


class Permission(StrEnum):
    VIEW_ROOM = "view_room"
    READ_ROOM = "read_room"
    INVITE = "invite"
    RESPOND_TO_INVITATION = "respond_to_invitation"
    CONTRIBUTE = "contribute"
    PROPOSE_QUERY = "propose_query"
    DECIDE_QUERY = "decide_query"
    SUSPEND_PARTICIPATION = "suspend_participation"


def membership_of(room: Room, organization: Organization) -> RoomMembership | None:
    return room.memberships.filter(organization=organization).first()


def has_permission(
    user: User, permission: Permission, *, room: Room, organization: Organization
) -> bool:
    """May `user`, acting for `organization`, do `permission` in `room`?"""
    membership = membership_of(room, organization)
    if membership is None:
        return False
    active = membership.status == RoomMembership.Status.ACTIVE
    match permission:
        case Permission.VIEW_ROOM:
            return membership.status != RoomMembership.Status.DECLINED and has_party_permission(
                user, PartyPermission.VIEW_ORGANIZATION, organization=organization
            )
        case Permission.READ_ROOM:
            return active and has_party_permission(
                user, PartyPermission.VIEW_ORGANIZATION, organization=organization
            )
        case Permission.INVITE:
            return active and has_party_permission(
                user, PartyPermission.CREATE_ROOMS, organization=organization
            )
        case Permission.RESPOND_TO_INVITATION:
            return membership.status == RoomMembership.Status.INVITED and has_party_permission(
                user, PartyPermission.RESPOND_TO_INVITATIONS, organization=organization
            )
        case Permission.CONTRIBUTE:
            return active and has_party_permission(
                user, PartyPermission.CONTRIBUTE_DATASETS, organization=organization
            )
        case Permission.PROPOSE_QUERY:
            return active and has_party_permission(
                user, PartyPermission.PROPOSE_QUERIES, organization=organization
            )
        case Permission.DECIDE_QUERY:
            return active and has_party_permission(
                user, PartyPermission.APPROVE_QUERIES, organization=organization
            )
        case Permission.SUSPEND_PARTICIPATION:
            # Suspending and lifting are the organisation's own act: an owner of it, never the
            # room's creator or another member.
            return active and has_party_permission(
                user, PartyPermission.MANAGE_DATASETS, organization=organization
            )
    return False


def require(user: User, permission: Permission, *, room: Room, organization: Organization) -> None:
    if not has_permission(user, permission, room=room, organization=organization):
        raise PermissionDenied(
            f"{organization.name} may not {permission.value.replace('_', ' ')} in this room "
            "with your role."
        )


def acting_organization(user: User, room: Room, permission: Permission) -> Organization | None:
    """The caller's organisation that may do `permission` in `room`, if any."""
    return next(
        (
            org
            for org in organizations_of(user)
            if has_permission(user, permission, room=room, organization=org)
        ),
        None,
    )


def require_acting_organization(user: User, room: Room, permission: Permission) -> Organization:
    """As `acting_organization`, refusing with a 403 that names what is needed."""
    organization = acting_organization(user, room, permission)
    if organization is None:
        raise PermissionDenied(
            f"None of your organisations may {permission.value.replace('_', ' ')} in this room."
        )
    return organization


def may_read_room(user: User, room: Room) -> bool:
    """May the caller read the room's queries, jobs and budget (as an active member)?"""
    return acting_organization(user, room, Permission.READ_ROOM) is not None


def require_room_reader(user: User, room: Room) -> None:
    """Refuse an invitee (or anyone who sees the room without being an active member) with a
    403: it knows the room exists, it reads nothing that happens in it until it joins."""
    if not may_read_room(user, room):
        raise PermissionDenied(
            "Only active members read this room's queries, jobs and budget: accept the "
            "invitation first."
        )


def may_edit_query(user: User, query: Query) -> bool:
    """Editing a draft, submitting it and revising a submitted version: the author
    organisation's alone, by a member who may propose queries for it."""
    return has_permission(
        user, Permission.PROPOSE_QUERY, room=query.room, organization=query.author_organization
    )


def require_query_editor(user: User, query: Query) -> Organization:
    """The organisation a change to `query` is made for (its author's), or a 403."""
    if not may_edit_query(user, query):
        raise PermissionDenied(
            f"Only analysts of {query.author_organization.name}, which proposed this query, "
            "change it."
        )
    return query.author_organization


def receiving_organization(user: User, result: Result) -> Organization | None:
    """The caller's organisation that receives `result` (its key is wrapped for it), if any."""
    receivers = set(result.keys.values_list("organization_id", flat=True))
    return next((org for org in organizations_of(user) if org.pk in receivers), None)


def result_reader(user: User, result: Result) -> Organization:
    """As `receiving_organization`, or a 403: only members of the receiving organisations read
    a result."""
    organization = receiving_organization(user, result)
    if organization is None:
        raise PermissionDenied("Only members of the receiving organisations read this result.")
    return organization

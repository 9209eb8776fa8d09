"""Who may see and change rooms. Views, the API and templates all ask here."""

from __future__ import annotations

from enum import StrEnum

from django.core.exceptions import PermissionDenied

from jobs.models import Room, RoomMembership
from parties.models import Organization
from parties.permissions import Permission as PartyPermission
from parties.permissions import has_permission as has_party_permission
from parties.selectors import organizations_of


class Permission(StrEnum):
    VIEW_ROOM = "view_room"
    INVITE = "invite"
    RESPOND_TO_INVITATION = "respond_to_invitation"
    CONTRIBUTE = "contribute"
    PROPOSE_QUERY = "propose_query"
    DECIDE_QUERY = "decide_query"


def membership_of(room: Room, organization: Organization) -> RoomMembership | None:
    return room.memberships.filter(organization=organization).first()


def has_permission(user, permission: Permission, *, room: Room, organization: Organization) -> bool:
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
    return False


def require(user, permission: Permission, *, room: Room, organization: Organization) -> None:
    if not has_permission(user, permission, room=room, organization=organization):
        raise PermissionDenied(
            f"{organization.name} may not {permission.value.replace('_', ' ')} in this room "
            "with your role."
        )


def acting_organization(user, room: Room, permission: Permission) -> Organization | None:
    """The caller's organisation that may do `permission` in `room`, if any."""
    return next(
        (
            org
            for org in organizations_of(user)
            if has_permission(user, permission, room=room, organization=org)
        ),
        None,
    )


def require_acting_organization(user, room: Room, permission: Permission) -> Organization:
    """As `acting_organization`, refusing with a 403 that names what is needed."""
    organization = acting_organization(user, room, permission)
    if organization is None:
        raise PermissionDenied(
            f"None of your organisations may {permission.value.replace('_', ' ')} in this room."
        )
    return organization

"""Who may do what to organisations and datasets. Views, the API and templates all ask here."""

from __future__ import annotations

from enum import StrEnum

from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import PermissionDenied
from django.http import Http404

from parties.models import Membership, Organization


class Permission(StrEnum):
    VIEW_ORGANIZATION = "view_organization"
    MANAGE_DATASETS = "manage_datasets"
    MANAGE_POLICIES = "manage_policies"
    CREATE_ROOMS = "create_rooms"
    RESPOND_TO_INVITATIONS = "respond_to_invitations"
    CONTRIBUTE_DATASETS = "contribute_datasets"
    READ_AUDIT_TRAIL = "read_audit_trail"
    PROPOSE_QUERIES = "propose_queries"
    APPROVE_QUERIES = "approve_queries"


ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    Membership.Role.OWNER: frozenset(
        {
            Permission.VIEW_ORGANIZATION,
            Permission.MANAGE_DATASETS,
            Permission.MANAGE_POLICIES,
            Permission.CREATE_ROOMS,
            Permission.RESPOND_TO_INVITATIONS,
            Permission.CONTRIBUTE_DATASETS,
            Permission.READ_AUDIT_TRAIL,
            Permission.APPROVE_QUERIES,
        }
    ),
    Membership.Role.ANALYST: frozenset(
        {Permission.VIEW_ORGANIZATION, Permission.CREATE_ROOMS, Permission.PROPOSE_QUERIES}
    ),
    Membership.Role.AUDITOR: frozenset({Permission.VIEW_ORGANIZATION, Permission.READ_AUDIT_TRAIL}),
}


def roles_in(user: User | AnonymousUser, organization: Organization) -> set[str]:
    if not user.is_authenticated:
        return set()
    return set(
        Membership.objects.filter(user=user, organization=organization).values_list(
            "role", flat=True
        )
    )


def has_permission(
    user: User | AnonymousUser, permission: Permission, *, organization: Organization
) -> bool:
    return any(permission in ROLE_PERMISSIONS[role] for role in roles_in(user, organization))


def require(
    user: User | AnonymousUser, permission: Permission, *, organization: Organization
) -> None:
    if not has_permission(user, permission, organization=organization):
        raise PermissionDenied(
            f"You need a role in {organization.name} that may {permission.value.replace('_', ' ')}."
        )


def credential_keeper(user, slug: str) -> Organization:
    """The organisation `slug`, for a member who may manage its approval credentials (list them,
    register a machine key, remove one): the API and the pages ask here alike. Outsiders get a
    404, as if it did not exist; members without an owner's role a 403."""
    organization = (
        Organization.objects.filter(slug=slug, memberships__user=user).first()
        if user.is_authenticated
        else None
    )
    if organization is None:
        raise Http404("No such organisation.")
    require(user, Permission.APPROVE_QUERIES, organization=organization)
    return organization

"""Who may read which audit trail, witness which log, and download which bundle.

Views, the API and the management commands all ask here.

- Owners and auditors of an organisation read its trail: the logs of the rooms it is an active
  member of, and the platform events about it (its own record, memberships, datasets and
  their policies). They may run its witness and download its rooms' bundles.
- Analysts read the logs of their organisation's rooms (they propose and run the queries those
  logs record), not the organisation's platform events; they neither witness nor export.
- Regulators read no trail. They download the bundles of rooms that touch data pinned to their
  authority's jurisdictions, and verify them offline.
- Outsiders get a 404 for a room's log or bundle, never a hint that it exists.
"""

from __future__ import annotations

from enum import StrEnum

from django.db.models import Q, QuerySet
from django.http import Http404

from cleanroom.audit.log import PLATFORM_LOG, room_log_name
from cleanroom.audit.models import AuditEventRef
from jobs.models import Room, RoomDataset, RoomMembership
from parties.models import Dataset, Jurisdiction, Membership, Organization
from parties.permissions import roles_in
from parties.selectors import organizations_of


class Permission(StrEnum):
    READ_ORGANIZATION_TRAIL = "read_organization_trail"
    READ_ROOM_TRAILS = "read_room_trails"
    WITNESS = "witness"
    EXPORT_BUNDLES = "export_bundles"


ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    Membership.Role.OWNER: frozenset(Permission),
    Membership.Role.AUDITOR: frozenset(Permission),
    Membership.Role.ANALYST: frozenset({Permission.READ_ROOM_TRAILS}),
}


def has_permission(user, permission: Permission, *, organization: Organization) -> bool:
    return any(
        permission in ROLE_PERMISSIONS.get(role, frozenset())
        for role in roles_in(user, organization)
    )


def organizations_with(user, permission: Permission) -> list[Organization]:
    return [
        org for org in organizations_of(user) if has_permission(user, permission, organization=org)
    ]


def rooms_of(organizations) -> QuerySet[Room]:
    return Room.objects.filter(
        memberships__organization__in=organizations,
        memberships__status=RoomMembership.Status.ACTIVE,
    ).distinct()


def readable_rooms(user) -> QuerySet[Room]:
    """Rooms whose log the caller may read."""
    return rooms_of(organizations_with(user, Permission.READ_ROOM_TRAILS))


def organization_refs(organizations) -> list[str]:
    """The stable ids platform events use for these organisations and their datasets."""
    refs = [f"org:{org.pk}" for org in organizations]
    refs += [
        f"dataset:{pk}"
        for pk in Dataset.objects.filter(organization__in=organizations).values_list(
            "pk", flat=True
        )
    ]
    return refs


def platform_event_filter(organizations) -> Q:
    """Platform events about these organisations: they (or their datasets) are the subject,
    or the event names them as its `organization` (as `dataset.registered` does)."""
    refs = AuditEventRef.objects.filter(
        key__in=["subject", "organization"], ref__in=organization_refs(organizations)
    ).values("event_id")
    return Q(log__name=PLATFORM_LOG, pk__in=refs)


def room_id_of(log_name: str) -> int | None:
    prefix, _, rest = log_name.partition("/")
    if prefix == "room" and rest.isdigit() and room_log_name(int(rest)) == log_name:
        return int(rest)
    return None


def can_read_log(user, log_name: str) -> bool:
    if log_name == PLATFORM_LOG:
        return bool(organizations_with(user, Permission.READ_ORGANIZATION_TRAIL))
    room_id = room_id_of(log_name)
    return room_id is not None and readable_rooms(user).filter(pk=room_id).exists()


def require_log(user, log_name: str) -> None:
    """Outsiders get a 404 for a log they may not read."""
    if not can_read_log(user, log_name):
        raise Http404("No such log.")


def may_witness(user, organization: Organization, log_name: str) -> bool:
    if not has_permission(user, Permission.WITNESS, organization=organization):
        return False
    if log_name == PLATFORM_LOG:
        return True
    room_id = room_id_of(log_name)
    return room_id is not None and rooms_of([organization]).filter(pk=room_id).exists()


def jurisdictions_regulated_by(user) -> QuerySet[Jurisdiction]:
    if not user.is_authenticated:
        return Jurisdiction.objects.none()
    return Jurisdiction.objects.filter(authorities__members=user).distinct()


def bundle_rooms(user) -> QuerySet[Room]:
    """Rooms whose bundle the caller may download: as a regulator, those touching data pinned to
    its jurisdictions (contributed now, or ever by the room's log); as an owner or auditor,
    its organisations' rooms."""
    codes = list(jurisdictions_regulated_by(user).values_list("code", flat=True))
    room_ids: set[int] = set()
    if codes:
        room_ids |= set(
            RoomDataset.objects.filter(dataset__jurisdiction__code__in=codes).values_list(
                "room_id", flat=True
            )
        )
        dataset_refs = [
            f"dataset:{pk}"
            for pk in Dataset.objects.filter(jurisdiction__code__in=codes).values_list(
                "pk", flat=True
            )
        ]
        contributed = AuditEventRef.objects.filter(
            key="dataset", ref__in=dataset_refs, event__type="room.dataset_contributed"
        ).values_list("event__log__name", flat=True)
        room_ids |= {room for name in contributed if (room := room_id_of(name)) is not None}
    exporters = organizations_with(user, Permission.EXPORT_BUNDLES)
    if exporters:
        room_ids |= set(rooms_of(exporters).values_list("pk", flat=True))
    return Room.objects.filter(pk__in=room_ids)


def get_bundle_room(user, slug: str) -> Room:
    room = bundle_rooms(user).filter(slug=slug).first()
    if room is None:
        raise Http404("No such room.")
    return room

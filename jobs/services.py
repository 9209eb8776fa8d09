"""Changes to rooms. Each writes its event to the room's audit log in the same transaction."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from cleanroom.audit.log import record_room_event
from cleanroom.errors import DomainError
from jobs.models import Room, RoomDataset, RoomMembership
from jobs.permissions import Permission, require
from parties.models import Dataset, DatasetVersion, Organization
from parties.permissions import Permission as PartyPermission
from parties.permissions import require as require_party


class RoomError(DomainError):
    code = "room_refused"


def _record(room: Room, type: str, by: User, **data) -> None:
    record_room_event(room.pk, type, by=by, subject=f"room:{room.pk}", **data)


def create_room(
    *, organization: Organization, slug: str, name: str, purpose: str, by: User
) -> Room:
    require_party(by, PartyPermission.CREATE_ROOMS, organization=organization)
    try:
        with transaction.atomic():
            room = Room.objects.create(
                slug=slug,
                name=name,
                purpose=purpose,
                created_by_organization=organization,
                created_by=by,
            )
            RoomMembership.objects.create(
                room=room,
                organization=organization,
                status=RoomMembership.Status.ACTIVE,
                invited_by=by,
                responded_by=by,
                responded_at=timezone.now(),
            )
            _record(room, "room.created", by, organization=f"org:{organization.pk}")
    except IntegrityError:
        raise RoomError(f"A room called {slug!r} already exists; choose another name.") from None
    return room


@transaction.atomic
def invite_organization(
    *, room: Room, organization: Organization, acting_for: Organization, by: User
) -> RoomMembership:
    require(by, Permission.INVITE, room=room, organization=acting_for)
    membership, created = RoomMembership.objects.get_or_create(
        room=room,
        organization=organization,
        defaults={"status": RoomMembership.Status.INVITED, "invited_by": by},
    )
    if not created:
        if membership.status != RoomMembership.Status.DECLINED:
            raise RoomError(f"{organization.name} is already {membership.get_status_display()}.")
        membership.status = RoomMembership.Status.INVITED
        membership.invited_by = by
        membership.save(update_fields=["status", "invited_by"])
    _record(room, "room.invited", by, organization=f"org:{organization.pk}")
    return membership


@transaction.atomic
def respond_to_invitation(*, membership: RoomMembership, accept: bool, by: User) -> RoomMembership:
    # Claim the invitation under a row lock so a double click cannot answer it twice.
    membership = RoomMembership.objects.select_for_update().get(pk=membership.pk)
    if membership.status != RoomMembership.Status.INVITED:
        raise RoomError(
            f"{membership.organization.name} has already answered this invitation "
            f"({membership.get_status_display().lower()}).",
            code="already_answered",
            conflict=True,
        )
    require(
        by,
        Permission.RESPOND_TO_INVITATION,
        room=membership.room,
        organization=membership.organization,
    )
    membership.status = RoomMembership.Status.ACTIVE if accept else RoomMembership.Status.DECLINED
    membership.responded_by = by
    membership.responded_at = timezone.now()
    membership.save(update_fields=["status", "responded_by", "responded_at"])
    _record(
        membership.room,
        "room.joined" if accept else "room.declined",
        by,
        organization=f"org:{membership.organization_id}",
    )
    return membership


@transaction.atomic
def contribute_dataset(
    *, room: Room, dataset: Dataset, by: User, version: DatasetVersion | None = None
) -> RoomDataset:
    """Bring a dataset version into a room under its current policy (replacing an earlier one)."""
    require(by, Permission.CONTRIBUTE, room=room, organization=dataset.organization)
    version = version or dataset.versions.order_by("-number").first()
    if version is None or version.dataset_id != dataset.pk:
        raise RoomError(f"{dataset.name} has no such version to contribute.")
    policy = dataset.policies.order_by("-version").first()
    contribution, _ = RoomDataset.objects.update_or_create(
        room=room,
        dataset=dataset,
        defaults={"version": version, "policy": policy, "contributed_by": by},
    )
    _record(
        room,
        "room.dataset_contributed",
        by,
        dataset=f"dataset:{dataset.pk}",
        version=version.number,
        policy_version=policy.version,
        jurisdiction=dataset.jurisdiction.code,
        owner=f"org:{dataset.organization_id}",
        total_epsilon=str(policy.total_epsilon),
        total_delta=str(policy.total_delta),
    )
    return contribution

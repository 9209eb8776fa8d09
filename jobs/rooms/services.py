"""Changes to rooms. Each writes its event to the room's audit log in the same transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from cleanroom.audit.log import record_platform_event, record_room_event
from cleanroom.errors import DomainError
from jobs.models import Room, RoomDataset, RoomMembership
from jobs.permissions import Permission, require
from keyservice.client import KeyServiceUnavailable
from keyservice.release import Refused
from parties.keys import KeyServiceAccess, OwnerKeyService, owner_key_service
from parties.models import Dataset, DatasetVersion, Organization
from parties.permissions import Permission as PartyPermission
from parties.permissions import require as require_party

log = logging.getLogger(__name__)


class RoomError(DomainError):
    code = "room_refused"


def _record(room: Room, type: str, by: User, **data: Any) -> None:
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
            raise RoomError(
                f"{organization.name} is already {membership.get_status_display()}.",
                code="already_member",
                conflict=True,
            )
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
    if policy is None:
        raise RoomError(f"{dataset.name} has no analysis policy to contribute it under.")
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


class SuspensionError(DomainError):
    code = "suspension_refused"


def _switch(dataset: Dataset, by: User, *, suspend: bool) -> Dataset:
    """The owner's kill switch for one of its datasets. Recorded in the platform log and in every
    room the dataset is in; an owner's own key service learns it after the commit (lifting it
    there needs the owner's grant: see keyservice/README.md)."""
    require_party(by, PartyPermission.MANAGE_DATASETS, organization=dataset.organization)
    with transaction.atomic():
        dataset = (
            Dataset.objects.select_for_update().select_related("organization").get(pk=dataset.pk)
        )
        if bool(dataset.suspended_at) == suspend:
            raise SuspensionError(
                f"{dataset.name} is {'already' if suspend else 'not'} suspended.", conflict=True
            )
        dataset.suspended_at = timezone.now() if suspend else None
        dataset.suspended_by = by if suspend else None
        dataset.save(update_fields=["suspended_at", "suspended_by"])
        event = "dataset.suspended" if suspend else "dataset.resumed"
        subject, owner = f"dataset:{dataset.pk}", f"org:{dataset.organization_id}"
        record_platform_event(event, by=by, subject=subject, dataset=subject, owner=owner)
        for room_id in RoomDataset.objects.filter(dataset=dataset).values_list(
            "room_id", flat=True
        ):
            record_room_event(room_id, event, by=by, subject=subject, dataset=subject, owner=owner)
        transaction.on_commit(
            lambda: _tell_key_service(
                dataset.organization,
                str(dataset),
                lambda service: (service.suspend if suspend else service.resume)(dataset.pk),
            )
        )
    return dataset


def _tell_key_service(
    organization: Organization, what: str, change: Callable[[OwnerKeyService], None]
) -> None:
    access = KeyServiceAccess.from_settings(settings)
    if organization.slug not in access.urls:
        return  # the embedded key service reads suspensions from the platform's records
    try:
        change(owner_key_service(organization, access))
    except (Refused, KeyServiceUnavailable):
        # The platform refuses every run it covers either way; the owner's own service keeps
        # its own switch (python -m keyservice suspend|resume on its host).
        log.warning("%s's key service did not take the change to %s", organization.slug, what)


def suspend_dataset(*, dataset: Dataset, by: User) -> Dataset:
    """From now no query plans or runs on the dataset and no key service releases its key;
    running jobs that need it fail closed at their next step (charged ones stay charged)."""
    return _switch(dataset, by, suspend=True)


def lift_suspension(*, dataset: Dataset, by: User) -> Dataset:
    return _switch(dataset, by, suspend=False)


def _switch_participation(
    room: Room, organization: Organization, by: User, *, suspend: bool
) -> RoomMembership:
    """The owner's kill switch for its participation in one room: every one of its datasets
    contributed there stops planning, running and getting keys in this room only. Recorded in
    the room's log; the organisation's own key service learns it after the commit."""
    require(by, Permission.SUSPEND_PARTICIPATION, room=room, organization=organization)
    with transaction.atomic():
        membership = (
            RoomMembership.objects.select_for_update()
            .select_related("organization")
            .get(room=room, organization=organization)
        )
        if bool(membership.suspended_at) == suspend:
            raise SuspensionError(
                f"{organization.name}'s participation in {room.name} is "
                f"{'already' if suspend else 'not'} suspended.",
                conflict=True,
            )
        membership.suspended_at = timezone.now() if suspend else None
        membership.suspended_by = by if suspend else None
        membership.save(update_fields=["suspended_at", "suspended_by"])
        datasets = RoomDataset.objects.filter(room=room, dataset__organization=organization)
        _record(
            room,
            "room.participation_suspended" if suspend else "room.participation_resumed",
            by,
            organization=f"org:{organization.pk}",
            datasets=sorted(
                f"dataset:{pk}" for pk in datasets.values_list("dataset_id", flat=True)
            ),
        )
        transaction.on_commit(
            lambda: _tell_key_service(
                organization,
                f"its participation in {room}",
                lambda service: (service.suspend_room if suspend else service.resume_room)(room.pk),
            )
        )
    return membership


def suspend_participation(*, room: Room, organization: Organization, by: User) -> RoomMembership:
    """From now none of the organisation's datasets plans, runs or gets a key in this room;
    running jobs of the room that read them fail closed at their next step (charged ones stay
    charged). The same datasets keep working in other rooms."""
    return _switch_participation(room, organization, by, suspend=True)


def lift_participation_suspension(
    *, room: Room, organization: Organization, by: User
) -> RoomMembership:
    return _switch_participation(room, organization, by, suspend=False)

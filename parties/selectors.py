"""Reads about parties and datasets, scoped to what the caller may see."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Q, QuerySet
from django.shortcuts import get_object_or_404

from cleanroom.audit.verifier.approvals import PinnedCredential
from parties.models import (
    AnalysisPolicy,
    ApprovalCredential,
    Dataset,
    DatasetVersion,
    Jurisdiction,
    Organization,
)
from parties.permissions import Permission, has_permission


def organizations_of(user: User | AnonymousUser) -> QuerySet[Organization]:
    if not user.is_authenticated:
        return Organization.objects.none()
    return Organization.objects.filter(memberships__user=user).distinct()


def organizations_where(user: User | AnonymousUser, permission: Permission) -> list[Organization]:
    return [
        org for org in organizations_of(user) if has_permission(user, permission, organization=org)
    ]


def live_credentials(organization: Organization) -> QuerySet[ApprovalCredential]:
    """The credentials the organisation's owners approve with now."""
    return ApprovalCredential.objects.filter(organization=organization, removed_at__isnull=True)


def pinned_approvers(organization: Organization) -> tuple[PinnedCredential, ...]:
    """What the organisation's key service and a regulator pin of its live credentials."""
    return tuple(c.pinned() for c in live_credentials(organization).order_by("pk"))


def passkeys_of(user: User) -> QuerySet[ApprovalCredential]:
    return ApprovalCredential.objects.filter(
        user=user, kind=ApprovalCredential.Kind.PASSKEY, removed_at__isnull=True
    ).select_related("organization")


def datasets_for(user: User) -> QuerySet[Dataset]:
    """Datasets of the caller's organisations, and those contributed to rooms they belong to."""
    orgs = organizations_of(user)
    return (
        Dataset.objects.filter(
            Q(organization__in=orgs)
            | Q(
                contributions__room__memberships__organization__in=orgs,
                contributions__room__memberships__status="active",
            )
        )
        .select_related("organization", "jurisdiction")
        .distinct()
    )


def get_dataset_for_user(user: User, org_slug: str, slug: str) -> Dataset:
    """Outsiders get a 404, never a hint that the dataset exists."""
    return get_object_or_404(datasets_for(user), organization__slug=org_slug, slug=slug)


def latest_version(dataset: Dataset) -> DatasetVersion | None:
    return dataset.versions.order_by("-number").first()


def current_policy(dataset: Dataset) -> AnalysisPolicy:
    """The policy in force: every dataset is registered with its first one."""
    return dataset.policies.latest("version")


def jurisdictions() -> QuerySet[Jurisdiction]:
    return Jurisdiction.objects.order_by("code")

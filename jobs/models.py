"""Collaborations: rooms, their member organisations and the datasets contributed to them."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from parties.models import AnalysisPolicy, Dataset, DatasetVersion, Organization


class Room(models.Model):
    slug = models.SlugField(max_length=60, unique=True)
    name = models.CharField(max_length=200)
    purpose = models.TextField(blank=True)
    created_by_organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class RoomMembership(models.Model):
    class Status(models.TextChoices):
        INVITED = "invited", "Invited"
        ACTIVE = "active", "Member"
        DECLINED = "declined", "Declined"

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="memberships")
    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="room_memberships"
    )
    status = models.CharField(max_length=16, choices=Status.choices)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", null=True
    )
    responded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", null=True
    )
    created_at = models.DateTimeField(auto_now_add=True)
    responded_at = models.DateTimeField(null=True)

    class Meta:
        ordering = ["room", "organization__name"]
        constraints = [
            models.UniqueConstraint(fields=["room", "organization"], name="one_membership_per_org")
        ]

    def __str__(self) -> str:
        return f"{self.organization} in {self.room} ({self.status})"


class RoomDataset(models.Model):
    """A dataset version contributed to a room, under a pinned version of its analysis policy."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="contributions")
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="contributions")
    version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="+")
    policy = models.ForeignKey(AnalysisPolicy, on_delete=models.PROTECT, related_name="+")
    contributed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    contributed_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["room", "dataset__organization__slug", "dataset__slug"]
        constraints = [
            models.UniqueConstraint(fields=["room", "dataset"], name="one_contribution_per_dataset")
        ]

    def __str__(self) -> str:
        return f"{self.dataset} in {self.room}"

"""The API's shapes for rooms, memberships, invitations and contributions."""

from django.contrib.auth.models import User
from rest_framework import serializers

from jobs.models import (
    Room,
    RoomDataset,
    RoomMembership,
)
from parties.models import Organization


class RoomMembershipSerializer(serializers.ModelSerializer):
    organization = serializers.SlugRelatedField[Organization](read_only=True, slug_field="slug")
    invited_by = serializers.SlugRelatedField[User](
        read_only=True, slug_field="username", allow_null=True
    )

    class Meta:
        model = RoomMembership
        fields = [
            "organization",
            "status",
            "invited_by",
            "created_at",
            "responded_at",
            "suspended_at",
        ]


class RoomDatasetSerializer(serializers.ModelSerializer):
    dataset = serializers.CharField(source="dataset.qualified_name", read_only=True)
    jurisdiction = serializers.CharField(source="dataset.jurisdiction.code", read_only=True)
    version = serializers.IntegerField(source="version.number", read_only=True)
    policy_version = serializers.IntegerField(source="policy.version", read_only=True)

    class Meta:
        model = RoomDataset
        fields = ["dataset", "jurisdiction", "version", "policy_version", "contributed_at"]


class RoomSerializer(serializers.ModelSerializer):
    created_by_organization = serializers.SlugRelatedField[Organization](
        read_only=True, slug_field="slug"
    )
    memberships = RoomMembershipSerializer(many=True, read_only=True)
    contributions = RoomDatasetSerializer(many=True, read_only=True)

    class Meta:
        model = Room
        fields = [
            "slug",
            "name",
            "purpose",
            "created_by_organization",
            "created_at",
            "memberships",
            "contributions",
        ]


class RoomInputSerializer(serializers.Serializer):
    organization = serializers.SlugField(help_text="The organisation creating the room.")
    slug = serializers.SlugField(max_length=60)
    name = serializers.CharField(max_length=200)
    purpose = serializers.CharField(required=False, allow_blank=True, default="")


class InvitationInputSerializer(serializers.Serializer):
    organization = serializers.SlugField(help_text="The organisation to invite.")


class InvitationResponseSerializer(serializers.Serializer):
    organization = serializers.SlugField(
        required=False, help_text="Which of your organisations answers (if you are in several)."
    )


class ContributionInputSerializer(serializers.Serializer):
    dataset = serializers.CharField(help_text="`org_slug.dataset_slug`")
    version = serializers.IntegerField(required=False, help_text="Defaults to the latest.")

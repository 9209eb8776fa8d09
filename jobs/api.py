"""REST endpoints for rooms: create, invite, answer an invitation, contribute a dataset."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cleanroom.errors import DomainError
from jobs import selectors, services
from jobs.models import Room, RoomMembership
from jobs.permissions import Permission, has_permission
from jobs.serializers import (
    ContributionInputSerializer,
    InvitationInputSerializer,
    InvitationResponseSerializer,
    RoomDatasetSerializer,
    RoomInputSerializer,
    RoomMembershipSerializer,
    RoomSerializer,
)
from parties.models import Organization
from parties.selectors import datasets_for, organizations_of


def acting_organization(user, room: Room, permission: Permission) -> Organization:
    """The caller's organisation that may do `permission` in `room`; 403 names the need."""
    for organization in organizations_of(user):
        if has_permission(user, permission, room=room, organization=organization):
            return organization
    raise PermissionDenied(
        f"None of your organisations may {permission.value.replace('_', ' ')} in this room."
    )


class RoomList(generics.ListAPIView):
    """Rooms your organisations are in or invited to."""

    serializer_class = RoomSerializer

    def get_queryset(self):
        return selectors.rooms_for(self.request.user).prefetch_related(
            "memberships__organization",
            "contributions__dataset__organization",
            "contributions__dataset__jurisdiction",
            "contributions__version",
            "contributions__policy",
        )

    @extend_schema(request=RoomInputSerializer, responses={201: RoomSerializer})
    def post(self, request: Request) -> Response:
        serializer = RoomInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        organization = get_object_or_404(organizations_of(request.user), slug=data["organization"])
        room = services.create_room(
            organization=organization,
            slug=data["slug"],
            name=data["name"],
            purpose=data["purpose"],
            by=request.user,
        )
        return Response(RoomSerializer(room).data, status=status.HTTP_201_CREATED)


class RoomDetail(generics.RetrieveAPIView):
    serializer_class = RoomSerializer

    def get_object(self):
        return selectors.get_room_for_member(self.request.user, self.kwargs["slug"])


class RoomInvitations(APIView):
    @extend_schema(request=InvitationInputSerializer, responses={201: RoomMembershipSerializer})
    def post(self, request: Request, slug: str) -> Response:
        room = selectors.get_room_for_member(request.user, slug)
        serializer = InvitationInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        invitee = Organization.objects.filter(
            slug=serializer.validated_data["organization"]
        ).first()
        if invitee is None:
            raise DomainError("No organisation with that name exists.")
        membership = services.invite_organization(
            room=room,
            organization=invitee,
            acting_for=acting_organization(request.user, room, Permission.INVITE),
            by=request.user,
        )
        return Response(RoomMembershipSerializer(membership).data, status=status.HTTP_201_CREATED)


class RespondToInvitation(APIView):
    accept = True

    @extend_schema(request=InvitationResponseSerializer, responses={200: RoomMembershipSerializer})
    def post(self, request: Request, slug: str) -> Response:
        room = selectors.get_room_for_member(request.user, slug)
        serializer = InvitationResponseSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if "organization" in serializer.validated_data:
            membership = get_object_or_404(
                RoomMembership,
                room=room,
                organization__in=organizations_of(request.user),
                organization__slug=serializer.validated_data["organization"],
            )
        else:
            organization = acting_organization(request.user, room, Permission.RESPOND_TO_INVITATION)
            membership = RoomMembership.objects.get(room=room, organization=organization)
        membership = services.respond_to_invitation(
            membership=membership, accept=self.accept, by=request.user
        )
        return Response(RoomMembershipSerializer(membership).data)


class RoomContributions(APIView):
    @extend_schema(request=ContributionInputSerializer, responses={201: RoomDatasetSerializer})
    def post(self, request: Request, slug: str) -> Response:
        room = selectors.get_room_for_member(request.user, slug)
        serializer = ContributionInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        org_slug, _, dataset_slug = serializer.validated_data["dataset"].partition(".")
        dataset = get_object_or_404(
            datasets_for(request.user), organization__slug=org_slug, slug=dataset_slug
        )
        version = None
        if "version" in serializer.validated_data:
            version = get_object_or_404(
                dataset.versions, number=serializer.validated_data["version"]
            )
        contribution = services.contribute_dataset(
            room=room, dataset=dataset, version=version, by=request.user
        )
        return Response(RoomDatasetSerializer(contribution).data, status=status.HTTP_201_CREATED)

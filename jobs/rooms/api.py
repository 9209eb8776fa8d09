"""REST endpoints for rooms: create, invite, answer an invitation, contribute a dataset, and the
owners' kill switches (a dataset's suspension, an organisation's participation)."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from cleanroom.api import named_in_body
from cleanroom.errors import DomainError
from cleanroom.http import AuthenticatedRequest
from jobs.models import RoomMembership
from jobs.permissions import (
    Permission,
    require_acting_organization,
)
from jobs.rooms.selectors import get_room_for_member, rooms_for
from jobs.rooms.serializers import (
    ContributionInputSerializer,
    InvitationInputSerializer,
    InvitationResponseSerializer,
    RoomDatasetSerializer,
    RoomInputSerializer,
    RoomMembershipSerializer,
    RoomSerializer,
)
from jobs.rooms.services import (
    contribute_dataset,
    create_room,
    invite_organization,
    lift_participation_suspension,
    lift_suspension,
    respond_to_invitation,
    suspend_dataset,
    suspend_participation,
)
from parties.models import Organization
from parties.permissions import Permission as PartyPermission
from parties.permissions import require as require_party
from parties.selectors import datasets_for, get_dataset_for_user, organizations_of
from parties.serializers import DatasetSerializer


class RoomList(generics.ListAPIView):
    """Rooms your organisations are in or invited to."""

    serializer_class = RoomSerializer
    refusals = {"POST": (400, 403, 404)}

    def get_queryset(self):
        return rooms_for(self.request.user).prefetch_related(
            "memberships__organization",
            "contributions__dataset__organization",
            "contributions__dataset__jurisdiction",
            "contributions__version",
            "contributions__policy",
        )

    @extend_schema(request=RoomInputSerializer, responses={201: RoomSerializer})
    def post(self, request: AuthenticatedRequest) -> Response:
        # Who may first, for the organisation named: before the input is validated.
        organization = get_object_or_404(
            organizations_of(request.user), slug=named_in_body(request, "organization")
        )
        require_party(request.user, PartyPermission.CREATE_ROOMS, organization=organization)
        serializer = RoomInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        room = create_room(
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
        return get_room_for_member(self.request.user, self.kwargs["slug"])


class RoomInvitations(APIView):
    refusals = {"POST": (400, 403, 404, 409)}

    @extend_schema(request=InvitationInputSerializer, responses={201: RoomMembershipSerializer})
    def post(self, request: AuthenticatedRequest, slug: str) -> Response:
        room = get_room_for_member(request.user, slug)
        # Who may invite first: a member who may not must not learn which organisations exist.
        acting_for = require_acting_organization(request.user, room, Permission.INVITE)
        serializer = InvitationInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        invitee = Organization.objects.filter(
            slug=serializer.validated_data["organization"]
        ).first()
        if invitee is None:
            raise DomainError("No organisation with that name exists.")
        membership = invite_organization(
            room=room, organization=invitee, acting_for=acting_for, by=request.user
        )
        return Response(RoomMembershipSerializer(membership).data, status=status.HTTP_201_CREATED)


class RespondToInvitation(APIView):
    accept = True
    refusals = {"POST": (400, 403, 404, 409)}

    @extend_schema(request=InvitationResponseSerializer, responses={200: RoomMembershipSerializer})
    def post(self, request: AuthenticatedRequest, slug: str) -> Response:
        room = get_room_for_member(request.user, slug)
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
            organization = require_acting_organization(
                request.user, room, Permission.RESPOND_TO_INVITATION
            )
            membership = RoomMembership.objects.get(room=room, organization=organization)
        membership = respond_to_invitation(
            membership=membership, accept=self.accept, by=request.user
        )
        return Response(RoomMembershipSerializer(membership).data)


class RoomContributions(APIView):
    @extend_schema(request=ContributionInputSerializer, responses={201: RoomDatasetSerializer})
    def post(self, request: AuthenticatedRequest, slug: str) -> Response:
        room = get_room_for_member(request.user, slug)
        require_acting_organization(request.user, room, Permission.CONTRIBUTE)
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
        contribution = contribute_dataset(
            room=room, dataset=dataset, version=version, by=request.user
        )
        return Response(RoomDatasetSerializer(contribution).data, status=status.HTTP_201_CREATED)


class DatasetSuspension(APIView):
    """The owner's kill switch: POST suspends the dataset, DELETE lifts the suspension."""

    refusals = {"POST": (403, 404, 409), "DELETE": (403, 404, 409)}

    @extend_schema(request=None, responses={200: DatasetSerializer})
    def post(self, request: AuthenticatedRequest, org: str, slug: str) -> Response:
        dataset = suspend_dataset(
            dataset=get_dataset_for_user(request.user, org, slug), by=request.user
        )
        return Response(DatasetSerializer(dataset).data)

    @extend_schema(request=None, responses={200: DatasetSerializer})
    def delete(self, request: AuthenticatedRequest, org: str, slug: str) -> Response:
        dataset = lift_suspension(
            dataset=get_dataset_for_user(request.user, org, slug), by=request.user
        )
        return Response(DatasetSerializer(dataset).data)


class RoomParticipationSuspension(APIView):
    """The owner's kill switch for its organisation's participation in the room: POST suspends
    it (none of its datasets plans, runs or gets a key here), DELETE lifts it. An owner of the
    member organisation alone."""

    refusals = {"POST": (403, 404, 409), "DELETE": (403, 404, 409)}

    def _change(self, request: AuthenticatedRequest, slug: str, change) -> Response:
        room = get_room_for_member(request.user, slug)
        organization = require_acting_organization(
            request.user, room, Permission.SUSPEND_PARTICIPATION
        )
        membership = change(room=room, organization=organization, by=request.user)
        return Response(RoomMembershipSerializer(membership).data)

    @extend_schema(request=None, responses={200: RoomMembershipSerializer})
    def post(self, request: AuthenticatedRequest, slug: str) -> Response:
        return self._change(request, slug, suspend_participation)

    @extend_schema(request=None, responses={200: RoomMembershipSerializer})
    def delete(self, request: AuthenticatedRequest, slug: str) -> Response:
        return self._change(request, slug, lift_participation_suspension)

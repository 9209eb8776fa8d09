"""REST endpoints for rooms: create, invite, answer an invitation, contribute a dataset."""

from __future__ import annotations

from django.db import transaction
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cleanroom.api import named_in_body
from cleanroom.errors import DomainError
from jobs import queries, results, runner, selectors, services
from jobs.models import Approval, Job, Query, Result, ResultFile, RoomMembership
from jobs.permissions import (
    Permission,
    require_acting_organization,
    require_query_editor,
    result_reader,
)
from jobs.planner import plan_query
from jobs.serializers import (
    ApprovalSerializer,
    BudgetSerializer,
    ContributionInputSerializer,
    DecisionInputSerializer,
    InboxItemSerializer,
    InvitationInputSerializer,
    InvitationResponseSerializer,
    JobResultSerializer,
    JobSerializer,
    PlanInputSerializer,
    PlanReportSerializer,
    QueryInputSerializer,
    QueryPatchSerializer,
    QuerySerializer,
    RoomDatasetSerializer,
    RoomInputSerializer,
    RoomMembershipSerializer,
    RoomSerializer,
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
        return selectors.rooms_for(self.request.user).prefetch_related(
            "memberships__organization",
            "contributions__dataset__organization",
            "contributions__dataset__jurisdiction",
            "contributions__version",
            "contributions__policy",
        )

    @extend_schema(request=RoomInputSerializer, responses={201: RoomSerializer})
    def post(self, request: Request) -> Response:
        # Who may first, for the organisation named: before the input is validated.
        organization = get_object_or_404(
            organizations_of(request.user), slug=named_in_body(request, "organization")
        )
        require_party(request.user, PartyPermission.CREATE_ROOMS, organization=organization)
        serializer = RoomInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
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
    refusals = {"POST": (400, 403, 404, 409)}

    @extend_schema(request=InvitationInputSerializer, responses={201: RoomMembershipSerializer})
    def post(self, request: Request, slug: str) -> Response:
        room = selectors.get_room_for_member(request.user, slug)
        # Who may invite first: a member who may not must not learn which organisations exist.
        acting_for = require_acting_organization(request.user, room, Permission.INVITE)
        serializer = InvitationInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        invitee = Organization.objects.filter(
            slug=serializer.validated_data["organization"]
        ).first()
        if invitee is None:
            raise DomainError("No organisation with that name exists.")
        membership = services.invite_organization(
            room=room, organization=invitee, acting_for=acting_for, by=request.user
        )
        return Response(RoomMembershipSerializer(membership).data, status=status.HTTP_201_CREATED)


class RespondToInvitation(APIView):
    accept = True
    refusals = {"POST": (400, 403, 404, 409)}

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
            organization = require_acting_organization(
                request.user, room, Permission.RESPOND_TO_INVITATION
            )
            membership = RoomMembership.objects.get(room=room, organization=organization)
        membership = services.respond_to_invitation(
            membership=membership, accept=self.accept, by=request.user
        )
        return Response(RoomMembershipSerializer(membership).data)


class RoomContributions(APIView):
    @extend_schema(request=ContributionInputSerializer, responses={201: RoomDatasetSerializer})
    def post(self, request: Request, slug: str) -> Response:
        room = selectors.get_room_for_member(request.user, slug)
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
        contribution = services.contribute_dataset(
            room=room, dataset=dataset, version=version, by=request.user
        )
        return Response(RoomDatasetSerializer(contribution).data, status=status.HTTP_201_CREATED)


def _query(request: Request, slug: str, pk: int) -> Query:
    room = selectors.get_room_for_reader(request.user, slug)
    return selectors.get_query_for_member(request.user, room, pk)


class QueryList(generics.ListAPIView):
    """The latest version of each query in the room. POST creates a draft (or submits it)."""

    serializer_class = QuerySerializer
    # An invitee sees the room, not its work.
    refusals = {"GET": (403, 404)}

    def get_queryset(self):
        room = selectors.get_room_for_reader(self.request.user, self.kwargs["slug"])
        return selectors.queries_of(room).prefetch_related("receivers", "approvals__organization")

    @extend_schema(request=QueryInputSerializer, responses={201: QuerySerializer})
    def post(self, request: Request, slug: str) -> Response:
        room = selectors.get_room_for_reader(request.user, slug)
        acting_for = require_acting_organization(request.user, room, Permission.PROPOSE_QUERY)
        serializer = QueryInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        submit, receivers = data.pop("submit"), data.pop("receivers")
        with transaction.atomic():
            query = queries.save_draft(
                room=room, by=request.user, receivers=receivers, acting_for=acting_for, **data
            )
            if submit:
                query = queries.submit_query(query=query, by=request.user)
        return Response(QuerySerializer(query).data, status=status.HTTP_201_CREATED)


class QueryPlan(APIView):
    """The plan report for a query text and its parameters; stores nothing."""

    @extend_schema(request=PlanInputSerializer, responses={200: PlanReportSerializer})
    def post(self, request: Request, slug: str) -> Response:
        room = selectors.get_room_for_reader(request.user, slug)
        serializer = PlanInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        plan = plan_query(
            room=room,
            sql=data["sql"],
            mechanism=data["requested_mechanism"],
            epsilon=data["epsilon"],
            delta=data["delta"],
            receivers=list(data["receivers"]),
            output_kind=data["output_kind"],
            # An extract's method has a default; its rows may be missing (the plan says so).
            synthetic_method=data["synthetic_method"],
            synthetic_rows=data.get("synthetic_rows"),
        )
        return Response(plan.as_dict())


class QueryDetail(APIView):
    refusals = {"GET": (403, 404), "PATCH": (400, 403, 404, 409)}

    @extend_schema(responses={200: QuerySerializer})
    def get(self, request: Request, slug: str, pk: int) -> Response:
        return Response(QuerySerializer(_query(request, slug, pk)).data)

    @extend_schema(request=QueryPatchSerializer, responses={200: QuerySerializer})
    def patch(self, request: Request, slug: str, pk: int) -> Response:
        """Change a draft in place; changing a submitted version makes a new draft version."""
        query = _query(request, slug, pk)
        author = require_query_editor(request.user, query)
        serializer = QueryPatchSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        submit = data.pop("submit", False)
        receivers = data.pop("receivers", None)
        with transaction.atomic():
            if query.status == Query.Status.DRAFT:
                query = queries.save_draft(
                    room=query.room,
                    acting_for=author,
                    by=request.user,
                    query=query,
                    receivers=list(query.receivers.all()) if receivers is None else receivers,
                    **data,
                )
            else:
                query = queries.revise_query(
                    query=query, by=request.user, receivers=receivers, **data
                )
            if submit:
                query = queries.submit_query(query=query, by=request.user)
        return Response(QuerySerializer(query).data)


class QuerySubmit(APIView):
    refusals = {"POST": (400, 403, 404, 409)}

    @extend_schema(request=None, responses={200: QuerySerializer})
    def post(self, request: Request, slug: str, pk: int) -> Response:
        query = queries.submit_query(query=_query(request, slug, pk), by=request.user)
        return Response(QuerySerializer(query).data)


class QueryDecision(APIView):
    approve = True
    refusals = {"POST": (400, 403, 404, 409)}

    @extend_schema(request=DecisionInputSerializer, responses={201: ApprovalSerializer})
    def post(self, request: Request, slug: str, pk: int) -> Response:
        query = _query(request, slug, pk)
        organization = require_acting_organization(
            request.user, query.room, Permission.DECIDE_QUERY
        )
        serializer = DecisionInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if "organization" in serializer.validated_data:
            organization = get_object_or_404(
                organizations_of(request.user), slug=serializer.validated_data["organization"]
            )
        approval = queries.decide_query(
            query=query,
            organization=organization,
            by=request.user,
            approve=self.approve,
            comment=serializer.validated_data["comment"],
            response=serializer.validated_data["assertion"],
        )
        return Response(ApprovalSerializer(approval).data, status=status.HTTP_201_CREATED)


class ApprovalRevoke(APIView):
    refusals = {"POST": (403, 404, 409)}

    @extend_schema(request=None, responses={200: ApprovalSerializer})
    def post(self, request: Request, slug: str, pk: int, approval_id: int) -> Response:
        query = _query(request, slug, pk)
        approval = get_object_or_404(Approval, pk=approval_id, query=query)
        approval = queries.revoke_approval(approval=approval, by=request.user)
        return Response(ApprovalSerializer(approval).data)


class Inbox(APIView):
    """Query versions waiting for a decision by one of your organisations."""

    @extend_schema(responses={200: InboxItemSerializer(many=True)})
    def get(self, request: Request) -> Response:
        items = [
            {"organization": org.slug, "query": query}
            for query, org in selectors.inbox_for(request.user)
        ]
        return Response(InboxItemSerializer(items, many=True).data)


def _job(request: Request, slug: str, pk: int) -> Job:
    room = selectors.get_room_for_reader(request.user, slug)
    return get_object_or_404(Job.objects.select_related("query", "site"), pk=pk, query__room=room)


class QueryRun(APIView):
    """Run an approved query version (once); its job is handed to its site's queue."""

    refusals = {"POST": (400, 403, 404, 409)}

    @extend_schema(request=None, responses={201: JobSerializer})
    def post(self, request: Request, slug: str, pk: int) -> Response:
        job = runner.run_query(query=_query(request, slug, pk), by=request.user)
        return Response(JobSerializer(job).data, status=status.HTTP_201_CREATED)


class JobDetail(APIView):
    refusals = {"GET": (403, 404)}

    @extend_schema(responses={200: JobSerializer})
    def get(self, request: Request, slug: str, pk: int) -> Response:
        return Response(JobSerializer(_job(request, slug, pk)).data)


class JobCancel(APIView):
    refusals = {"POST": (403, 404, 409)}

    @extend_schema(request=None, responses={200: JobSerializer})
    def post(self, request: Request, slug: str, pk: int) -> Response:
        job = runner.cancel_job(job=_job(request, slug, pk), by=request.user)
        return Response(JobSerializer(job).data)


class JobResult(APIView):
    """The released, differentially private table: for members of its receivers only."""

    refusals = {"GET": (403, 404)}

    @extend_schema(responses={200: JobResultSerializer})
    def get(self, request: Request, slug: str, pk: int) -> Response:
        job = _job(request, slug, pk)
        result, organization = _received(request, job)
        if result.output_kind == Query.OutputKind.SYNTHETIC:
            return Response(
                {
                    "job": job.pk,
                    "output_kind": result.output_kind,
                    "commitment": result.commitment,
                    "opening": results.result_opening(result, organization, request.user),
                    "mechanism": result.mechanism,
                    "differentially_private": result.differentially_private,
                    "label": None
                    if result.differentially_private
                    else "not differentially private",
                    "epsilon": str(result.epsilon),
                    "delta": str(result.delta),
                    "simulated_tee": result.simulated_tee,
                    "extract": results.read_result(result, organization, request.user),
                    "files": [
                        {
                            "name": f.name,
                            "commitment": f.commitment,
                            "size": f.size,
                            "url": reverse("api-result-file", args=[slug, job.pk, f.name]),
                        }
                        for f in result.files.all()
                    ],
                }
            )
        return Response(
            {
                "job": job.pk,
                "commitment": result.commitment,
                "opening": results.result_opening(result, organization, request.user),
                "mechanism": result.mechanism,
                "epsilon": str(result.epsilon),
                "simulated_tee": result.simulated_tee,
                "table": results.read_result(result, organization, request.user),
            }
        )


def _received(request: Request, job: Job) -> tuple[Result, Organization]:
    result = get_object_or_404(Result, job=job)
    return result, result_reader(request.user, result)


class JobResultFile(APIView):
    """One file of a released synthetic extract (the extract or a report): receivers only."""

    refusals = {"GET": (403, 404)}

    @extend_schema(responses={(200, "application/octet-stream"): bytes})
    def get(self, request: Request, slug: str, pk: int, name: str) -> HttpResponse:
        result, organization = _received(request, _job(request, slug, pk))
        released = get_object_or_404(ResultFile, result=result, name=name)
        response = HttpResponse(
            results.read_file_for(released, organization, request.user),
            content_type="application/json"
            if name.endswith(".json")
            else "application/octet-stream",
        )
        response["Content-Disposition"] = f'attachment; filename="job-{pk}-{name}"'
        return response


class RoomBudget(APIView):
    refusals = {"GET": (403, 404)}

    @extend_schema(responses={200: BudgetSerializer(many=True)})
    def get(self, request: Request, slug: str) -> Response:
        room = selectors.get_room_for_reader(request.user, slug)
        return Response(BudgetSerializer(selectors.budget_of(room), many=True).data)


class DatasetSuspension(APIView):
    """The owner's kill switch: POST suspends the dataset, DELETE lifts the suspension."""

    refusals = {"POST": (403, 404, 409), "DELETE": (403, 404, 409)}

    @extend_schema(request=None, responses={200: DatasetSerializer})
    def post(self, request: Request, org: str, slug: str) -> Response:
        dataset = services.suspend_dataset(
            dataset=get_dataset_for_user(request.user, org, slug), by=request.user
        )
        return Response(DatasetSerializer(dataset).data)

    @extend_schema(request=None, responses={200: DatasetSerializer})
    def delete(self, request: Request, org: str, slug: str) -> Response:
        dataset = services.lift_suspension(
            dataset=get_dataset_for_user(request.user, org, slug), by=request.user
        )
        return Response(DatasetSerializer(dataset).data)


class RoomParticipationSuspension(APIView):
    """The owner's kill switch for its organisation's participation in the room: POST suspends
    it (none of its datasets plans, runs or gets a key here), DELETE lifts it. An owner of the
    member organisation alone."""

    refusals = {"POST": (403, 404, 409), "DELETE": (403, 404, 409)}

    def _change(self, request: Request, slug: str, change) -> Response:
        room = selectors.get_room_for_member(request.user, slug)
        organization = require_acting_organization(
            request.user, room, Permission.SUSPEND_PARTICIPATION
        )
        membership = change(room=room, organization=organization, by=request.user)
        return Response(RoomMembershipSerializer(membership).data)

    @extend_schema(request=None, responses={200: RoomMembershipSerializer})
    def post(self, request: Request, slug: str) -> Response:
        return self._change(request, slug, services.suspend_participation)

    @extend_schema(request=None, responses={200: RoomMembershipSerializer})
    def delete(self, request: Request, slug: str) -> Response:
        return self._change(request, slug, services.lift_participation_suspension)

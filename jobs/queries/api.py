"""REST endpoints for joint queries: drafts, plans, submission, decisions, revocation, the inbox."""

from __future__ import annotations

from django.db import transaction
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from cleanroom.http import AuthenticatedRequest
from jobs.models import Approval, Query
from jobs.permissions import (
    Permission,
    require_acting_organization,
    require_query_editor,
)
from jobs.planning.planner import plan_query
from jobs.queries.selectors import get_query_for_reader, inbox_for
from jobs.queries.serializers import (
    ApprovalSerializer,
    DecisionInputSerializer,
    InboxItemSerializer,
    PlanInputSerializer,
    PlanReportSerializer,
    QueryInputSerializer,
    QueryPatchSerializer,
    QuerySerializer,
)
from jobs.queries.services import (
    decide_query,
    revise_query,
    revoke_approval,
    save_draft,
    submit_query,
)
from jobs.rooms.selectors import get_room_for_reader, queries_of
from parties.selectors import organizations_of


class QueryList(generics.ListAPIView):
    """The latest version of each query in the room. POST creates a draft (or submits it)."""

    serializer_class = QuerySerializer
    # An invitee sees the room, not its work.
    refusals = {"GET": (403, 404)}

    def get_queryset(self):
        room = get_room_for_reader(self.request.user, self.kwargs["slug"])
        return queries_of(room).prefetch_related("receivers", "approvals__organization")

    @extend_schema(request=QueryInputSerializer, responses={201: QuerySerializer})
    def post(self, request: AuthenticatedRequest, slug: str) -> Response:
        room = get_room_for_reader(request.user, slug)
        acting_for = require_acting_organization(request.user, room, Permission.PROPOSE_QUERY)
        serializer = QueryInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        submit, receivers = data.pop("submit"), data.pop("receivers")
        with transaction.atomic():
            query = save_draft(
                room=room, by=request.user, receivers=receivers, acting_for=acting_for, **data
            )
            if submit:
                query = submit_query(query=query, by=request.user)
        return Response(QuerySerializer(query).data, status=status.HTTP_201_CREATED)


class QueryPlan(APIView):
    """The plan report for a query text and its parameters; stores nothing."""

    @extend_schema(request=PlanInputSerializer, responses={200: PlanReportSerializer})
    def post(self, request: AuthenticatedRequest, slug: str) -> Response:
        room = get_room_for_reader(request.user, slug)
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
    def get(self, request: AuthenticatedRequest, slug: str, pk: int) -> Response:
        return Response(QuerySerializer(get_query_for_reader(request.user, slug, pk)).data)

    @extend_schema(request=QueryPatchSerializer, responses={200: QuerySerializer})
    def patch(self, request: AuthenticatedRequest, slug: str, pk: int) -> Response:
        """Change a draft in place; changing a submitted version makes a new draft version."""
        query = get_query_for_reader(request.user, slug, pk)
        author = require_query_editor(request.user, query)
        serializer = QueryPatchSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        submit = data.pop("submit", False)
        receivers = data.pop("receivers", None)
        with transaction.atomic():
            if query.status == Query.Status.DRAFT:
                query = save_draft(
                    room=query.room,
                    acting_for=author,
                    by=request.user,
                    query=query,
                    receivers=list(query.receivers.all()) if receivers is None else receivers,
                    **data,
                )
            else:
                query = revise_query(query=query, by=request.user, receivers=receivers, **data)
            if submit:
                query = submit_query(query=query, by=request.user)
        return Response(QuerySerializer(query).data)


class QuerySubmit(APIView):
    refusals = {"POST": (400, 403, 404, 409)}

    @extend_schema(request=None, responses={200: QuerySerializer})
    def post(self, request: AuthenticatedRequest, slug: str, pk: int) -> Response:
        query = submit_query(query=get_query_for_reader(request.user, slug, pk), by=request.user)
        return Response(QuerySerializer(query).data)


class QueryDecision(APIView):
    approve = True
    refusals = {"POST": (400, 403, 404, 409)}

    @extend_schema(request=DecisionInputSerializer, responses={201: ApprovalSerializer})
    def post(self, request: AuthenticatedRequest, slug: str, pk: int) -> Response:
        query = get_query_for_reader(request.user, slug, pk)
        organization = require_acting_organization(
            request.user, query.room, Permission.DECIDE_QUERY
        )
        serializer = DecisionInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if "organization" in serializer.validated_data:
            organization = get_object_or_404(
                organizations_of(request.user), slug=serializer.validated_data["organization"]
            )
        approval = decide_query(
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
    def post(self, request: AuthenticatedRequest, slug: str, pk: int, approval_id: int) -> Response:
        query = get_query_for_reader(request.user, slug, pk)
        approval = get_object_or_404(Approval, pk=approval_id, query=query)
        approval = revoke_approval(approval=approval, by=request.user)
        return Response(ApprovalSerializer(approval).data)


class Inbox(APIView):
    """Query versions waiting for a decision by one of your organisations."""

    @extend_schema(responses={200: InboxItemSerializer(many=True)})
    def get(self, request: AuthenticatedRequest) -> Response:
        items = [
            {"organization": org.slug, "query": query} for query, org in inbox_for(request.user)
        ]
        return Response(InboxItemSerializer(items, many=True).data)

"""REST endpoints for running a query, following and cancelling its job, and the room's budget."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from cleanroom.http import AuthenticatedRequest
from jobs.budget.selectors import budget_of
from jobs.execution.lifecycle import cancel_job, run_query
from jobs.execution.selectors import get_job_for_reader
from jobs.execution.serializers import BudgetSerializer, JobSerializer
from jobs.queries.selectors import get_query_for_reader
from jobs.rooms.selectors import get_room_for_reader


class QueryRun(APIView):
    """Run an approved query version (once); its job is handed to its site's queue."""

    refusals = {"POST": (400, 403, 404, 409)}

    @extend_schema(request=None, responses={201: JobSerializer})
    def post(self, request: AuthenticatedRequest, slug: str, pk: int) -> Response:
        job = run_query(query=get_query_for_reader(request.user, slug, pk), by=request.user)
        return Response(JobSerializer(job).data, status=status.HTTP_201_CREATED)


class JobDetail(APIView):
    refusals = {"GET": (403, 404)}

    @extend_schema(responses={200: JobSerializer})
    def get(self, request: AuthenticatedRequest, slug: str, pk: int) -> Response:
        return Response(JobSerializer(get_job_for_reader(request.user, slug, pk)).data)


class JobCancel(APIView):
    refusals = {"POST": (403, 404, 409)}

    @extend_schema(request=None, responses={200: JobSerializer})
    def post(self, request: AuthenticatedRequest, slug: str, pk: int) -> Response:
        job = cancel_job(job=get_job_for_reader(request.user, slug, pk), by=request.user)
        return Response(JobSerializer(job).data)


class RoomBudget(APIView):
    refusals = {"GET": (403, 404)}

    @extend_schema(responses={200: BudgetSerializer(many=True)})
    def get(self, request: AuthenticatedRequest, slug: str) -> Response:
        room = get_room_for_reader(request.user, slug)
        return Response(BudgetSerializer(budget_of(room), many=True).data)

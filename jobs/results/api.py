"""REST endpoints for a released result and the files of a synthetic extract: receivers only."""

from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from cleanroom.http import AuthenticatedRequest
from jobs.execution.selectors import get_job_for_reader
from jobs.models import Job, Query, Result, ResultFile
from jobs.permissions import (
    result_reader,
)
from jobs.results.serializers import JobResultSerializer
from jobs.results.storage import read_file_for, read_result_with_opening
from parties.models import Organization


class JobResult(APIView):
    """The released, differentially private table: for members of its receivers only."""

    refusals = {"GET": (403, 404)}

    @extend_schema(responses={200: JobResultSerializer})
    def get(self, request: AuthenticatedRequest, slug: str, pk: int) -> Response:
        job = get_job_for_reader(request.user, slug, pk)
        result, organization = _received(request, job)
        content, opening = read_result_with_opening(result, organization, request.user)
        if result.output_kind == Query.OutputKind.SYNTHETIC:
            return Response(
                {
                    "job": job.pk,
                    "output_kind": result.output_kind,
                    "commitment": result.commitment,
                    "opening": opening,
                    "mechanism": result.mechanism,
                    "differentially_private": result.differentially_private,
                    "label": None
                    if result.differentially_private
                    else "not differentially private",
                    "epsilon": str(result.epsilon),
                    "delta": str(result.delta),
                    "simulated_tee": result.simulated_tee,
                    "extract": content,
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
                "opening": opening,
                "mechanism": result.mechanism,
                "epsilon": str(result.epsilon),
                "simulated_tee": result.simulated_tee,
                "table": content,
            }
        )


def _received(request: AuthenticatedRequest, job: Job) -> tuple[Result, Organization]:
    result = get_object_or_404(Result, job=job)
    return result, result_reader(request.user, result)


class JobResultFile(APIView):
    """One file of a released synthetic extract (the extract or a report): receivers only."""

    refusals = {"GET": (403, 404)}

    @extend_schema(responses={(200, "application/octet-stream"): bytes})
    def get(self, request: AuthenticatedRequest, slug: str, pk: int, name: str) -> HttpResponse:
        result, organization = _received(request, get_job_for_reader(request.user, slug, pk))
        released = get_object_or_404(ResultFile, result=result, name=name)
        response = HttpResponse(
            read_file_for(released, organization, request.user),
            content_type="application/json"
            if name.endswith(".json")
            else "application/octet-stream",
        )
        response["Content-Disposition"] = f'attachment; filename="job-{pk}-{name}"'
        return response

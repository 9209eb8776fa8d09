"""Result pages: the released table with its charts, downloads, the opening of its commitment, and a
synthetic extract's files and archives. Receivers only."""

from __future__ import annotations

import csv
import io
import json

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from cleanroom.http import AuthenticatedHttpRequest
from jobs.execution.selectors import get_job_for_reader
from jobs.models import Job, Query, Result
from jobs.permissions import result_reader
from jobs.planning.planner import number
from jobs.results import storage
from jobs.results.archive import FORMATS, archive, marginal_charts
from jobs.results.storage import read_file_for, read_result
from parties.models import Organization


def _receiving(
    request: AuthenticatedHttpRequest, slug: str, pk: int
) -> tuple[Job, Result, Organization]:
    job = get_job_for_reader(request.user, slug, pk)
    result = get_object_or_404(Result, job=job)
    return job, result, result_reader(request.user, result)


def _readable_result(
    request: AuthenticatedHttpRequest, slug: str, pk: int
) -> tuple[Job, Result, dict]:
    job, result, organization = _receiving(request, slug, pk)
    return job, result, read_result(result, organization, request.user)


def _result_charts(table: dict) -> list[dict]:
    """Per aggregate, each released group's value and 95 % interval, for a chart with error
    bars (cleanroom/static/js/charts.js) and the table beside it. Suppressed groups are left out:
    they have no value."""
    aliases = table["columns"][len(table["dimensions"]) :]
    charts = []
    for index, alias in enumerate(aliases):
        points = [
            {
                "group": " · ".join(str(row[d]) for d in table["dimensions"]) or "all rows",
                "value": row[alias]["value"],
                "low": row[alias]["ci95_low"],
                "high": row[alias]["ci95_high"],
            }
            for row in table["rows"]
            if not row["suppressed"] and row[alias]["value"] is not None
        ]
        if points:
            charts.append(
                {
                    "id": f"result-chart-{index}",
                    "kind": "result",
                    "title": alias,
                    "x": " · ".join(table["dimensions"]) or "group",
                    "points": points,
                }
            )
    return charts


def _extract_page(
    request: AuthenticatedHttpRequest,
    job: Job,
    result: Result,
    manifest: dict,
    organization: Organization,
) -> HttpResponse:
    quality = manifest.get("quality") or {}
    charts = []
    extract_file = result.files.filter(name="extract.csv").first()
    if result.differentially_private and extract_file is not None:
        plan = job.query.plan
        assert plan is not None  # a query with a result was submitted, with its plan
        charts = marginal_charts(
            read_file_for(extract_file, organization, request.user),
            plan["synthetic"]["columns"],
            quality,
        )
    return render(
        request,
        "jobs/extract_detail.html",
        {
            "job": job,
            "room": job.query.room,
            "query": job.query,
            "result": result,
            "manifest": manifest,
            "quality": quality,
            "privacy": manifest.get("privacy") or {},
            # Per-column quality scores as bars, 0 to 100 % of a 300-wide box.
            "column_scores": [
                {"column": column, "score": score, "width": round(300 * max(score, 0), 1)}
                for column, score in (quality.get("per_column") or {}).items()
            ],
            "charged": {"epsilon": number(result.epsilon), "delta": number(result.delta)},
            "files": result.files.all(),
            "formats": FORMATS,
            "charts": charts,
        },
    )


@login_required
@require_GET
def result_detail(request: AuthenticatedHttpRequest, slug: str, pk: int) -> HttpResponse:
    job, result, organization = _receiving(request, slug, pk)
    table = read_result(result, organization, request.user)
    if result.output_kind == Query.OutputKind.SYNTHETIC:
        return _extract_page(request, job, result, table, organization)
    return render(
        request,
        "jobs/result_detail.html",
        {
            "job": job,
            "room": job.query.room,
            "query": job.query,
            "result": result,
            "table": table,
            "aliases": table["columns"][len(table["dimensions"]) :],
            "charts": _result_charts(table),
        },
    )


@login_required
@require_GET
def result_download(
    request: AuthenticatedHttpRequest, slug: str, pk: int, fmt: str
) -> HttpResponse:
    job, result, table = _readable_result(request, slug, pk)
    if result.output_kind == Query.OutputKind.SYNTHETIC:
        raise Http404("A synthetic extract is downloaded as its files or archive.")
    name = f"result-job-{job.pk}"
    if fmt == "json":
        response = HttpResponse(json.dumps(table, indent=2), content_type="application/json")
    else:
        out = io.StringIO()
        writer = csv.writer(out)
        aliases = table["columns"][len(table["dimensions"]) :]
        writer.writerow(
            [
                *table["dimensions"],
                "suppressed",
                *[
                    f"{a}{part}"
                    for a in aliases
                    for part in ("", "_ci95_low", "_ci95_high", "_mechanism", "_scale")
                ],
            ]
        )
        for row in table["rows"]:
            writer.writerow(
                [
                    *(row[d] for d in table["dimensions"]),
                    row["suppressed"],
                    *[
                        row[a][key]
                        for a in aliases
                        for key in ("value", "ci95_low", "ci95_high", "mechanism", "scale")
                    ],
                ]
            )
        response = HttpResponse(out.getvalue(), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{name}.{fmt}"'
    return response


@login_required
@require_GET
def result_opening(request: AuthenticatedHttpRequest, slug: str, pk: int) -> HttpResponse:
    """The result's exact bytes and salt, which open the commitment its release logged: what a
    receiver hands a regulator for `verify.pyz --result`."""
    job, result, organization = _receiving(request, slug, pk)
    response = HttpResponse(
        json.dumps(storage.result_opening(result, organization, request.user), indent=2),
        content_type="application/json",
    )
    response["Content-Disposition"] = f'attachment; filename="result-job-{job.pk}-opening.json"'
    return response


@login_required
@require_GET
def result_file(request: AuthenticatedHttpRequest, slug: str, pk: int, name: str) -> HttpResponse:
    """One released file of a synthetic extract (the extract or a report), for receivers."""
    _, result, organization = _receiving(request, slug, pk)
    released = result.files.filter(name=name).first()
    if released is None:
        raise Http404("No such file in this result.")
    content_type = "application/json" if name.endswith(".json") else "text/csv"
    if name.endswith(".parquet"):
        content_type = "application/vnd.apache.parquet"
    response = HttpResponse(
        read_file_for(released, organization, request.user), content_type=content_type
    )
    response["Content-Disposition"] = f'attachment; filename="job-{pk}-{name}"'
    return response


@login_required
@require_GET
def result_archive(request: AuthenticatedHttpRequest, slug: str, pk: int, fmt: str) -> HttpResponse:
    """The extract as CSV or Parquet with its reports, manifest and README.txt, zipped."""
    job, result, organization = _receiving(request, slug, pk)
    if result.output_kind != Query.OutputKind.SYNTHETIC:
        raise Http404("Only a synthetic extract is downloaded as an archive.")
    manifest = read_result(result, organization, request.user)
    files = {f.name: read_file_for(f, organization, request.user) for f in result.files.all()}
    response = HttpResponse(
        archive(files, manifest, job.query.digest, fmt), content_type="application/zip"
    )
    response["Content-Disposition"] = f'attachment; filename="synthetic-job-{pk}-{fmt}.zip"'
    return response

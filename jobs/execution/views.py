"""Job pages: run, live progress, cancel, and the room's budget."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.utils.timezone import localtime
from django.views.decorators.http import require_GET, require_POST

from cleanroom.errors import DomainError
from cleanroom.http import AuthenticatedHttpRequest
from jobs.budget.selectors import budget_of
from jobs.execution.lifecycle import cancel_job, run_query
from jobs.execution.selectors import get_job_for_reader
from jobs.models import Result
from jobs.permissions import receiving_organization
from jobs.planning.planner import number
from jobs.queries.selectors import get_query_for_member
from jobs.rooms.selectors import get_room_for_reader


@login_required
@require_POST
def job_run(request: AuthenticatedHttpRequest, slug: str, pk: int) -> HttpResponse:
    room = get_room_for_reader(request.user, slug)
    query = get_query_for_member(request.user, room, pk)
    try:
        job = run_query(query=query, by=request.user)
    except DomainError as exc:
        messages.error(request, str(exc))
        return redirect("query-detail", slug=slug, pk=pk)
    return redirect("job-detail", slug=slug, pk=job.pk)


@login_required
@require_GET
def job_detail(request: AuthenticatedHttpRequest, slug: str, pk: int) -> HttpResponse:
    job = get_job_for_reader(request.user, slug, pk)
    result = Result.objects.filter(job=job).first()
    context = {
        "job": job,
        "room": job.query.room,
        "query": job.query,
        "result": result,
        "can_read": bool(result and receiving_organization(request.user, result)),
    }
    template = "jobs/_job_progress.html" if request.htmx else "jobs/job_detail.html"
    return render(request, template, context)


@login_required
@require_POST
def job_cancel(request: AuthenticatedHttpRequest, slug: str, pk: int) -> HttpResponse:
    job = get_job_for_reader(request.user, slug, pk)
    try:
        cancel_job(job=job, by=request.user)
        messages.success(request, "Cancellation requested.")
    except DomainError as exc:
        messages.error(request, str(exc))
    return redirect("job-detail", slug=slug, pk=pk)


@login_required
@require_GET
def room_budget(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    room = get_room_for_reader(request.user, slug)
    rows = budget_of(room)
    for index, row in enumerate(rows):
        row["chart"] = _budget_chart(index, row)
    return render(request, "jobs/budget.html", {"room": room, "rows": rows})


def _budget_chart(index: int, row: dict) -> dict | None:
    """ε used in this room after each ledger entry, against the dataset's total as a rule, for
    cleanroom/static/js/charts.js; the history table beside it holds the same numbers."""
    if not row["history"]:
        return None
    return {
        "id": f"budget-chart-{index}",
        "kind": "budget",
        "title": f"ε used in this room, of the total {number(row['total'])}",
        "total": float(row["total"]),
        "points": [
            {
                "at": entry["at"].isoformat(),
                "when": localtime(entry["at"]).strftime("%Y-%m-%d %H:%M:%S"),
                "used": float(entry["used"]),
            }
            for entry in row["history"]
        ],
    }

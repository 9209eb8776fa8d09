from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.crypto import constant_time_compare
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from cleanroom.http import AuthenticatedHttpRequest
from cleanroom.metrics import exposition
from cleanroom.monitoring import control_plane_collectors
from jobs.rooms.selectors import invitations_for, rooms_for
from parties.selectors import datasets_for


@login_required
@require_GET
def dashboard(request: AuthenticatedHttpRequest) -> HttpResponse:
    """One page per role: what needs the caller's attention first."""
    user = request.user
    return render(
        request,
        "dashboard.html",
        {
            "invitations": invitations_for(user),
            "rooms": rooms_for(user)[:10],
            "datasets": datasets_for(user).filter(organization__memberships__user=user)[:10],
        },
    )


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus's scrape: the web tier's processes' counters, the queues' depth and the jobs.
    Queue names, job counts and refusals are the operator's to see, not the internet's: only a
    request bearing the configured token gets them."""
    if not settings.METRICS_TOKEN:
        raise Http404
    given = request.headers.get("Authorization", "")
    if not constant_time_compare(given, f"Bearer {settings.METRICS_TOKEN}"):
        return HttpResponse("A bearer token is required.", status=403, content_type="text/plain")
    body = exposition(*control_plane_collectors())
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)

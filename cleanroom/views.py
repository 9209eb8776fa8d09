from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from cleanroom.http import AuthenticatedHttpRequest
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

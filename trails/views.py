"""Audit pages: each party's trail with verified marks, and the bundles regulators download."""

from __future__ import annotations

import base64
import json

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import transaction
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from cleanroom.audit import bundles as bundle_service
from cleanroom.audit.checkpoints import origin_of
from cleanroom.audit.log import PLATFORM_LOG
from cleanroom.audit.verification import FAILED, PENDING, VERIFIED, prove_events
from cleanroom.http import AuthenticatedHttpRequest
from trails import selectors
from trails.permissions import (
    Permission,
    bundle_rooms,
    get_bundle_room,
    jurisdictions_regulated_by,
    organizations_with,
    readable_rooms,
)

PAGE_SIZE = 50


@login_required
@require_GET
def trail(request: AuthenticatedHttpRequest) -> HttpResponse:
    user = request.user
    if not organizations_with(user, Permission.READ_ROOM_TRAILS):
        if jurisdictions_regulated_by(user).exists():
            return redirect("audit-bundles")  # regulators read bundles, not trails
        raise PermissionDenied("Audit trails are read by the members of an organisation.")
    where = selectors.TrailFilter.from_params(request.GET)
    rooms = readable_rooms(user).order_by("name")
    by_log = selectors.rooms_by_log(rooms)
    page = Paginator(selectors.trail_events(user, where), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    proven = prove_events(page.object_list)
    rows = [
        {
            "proven": p,
            "room": by_log.get(p.event.log.name),
            "data": json.dumps(p.body.get("data", {}), indent=1, sort_keys=True),
        }
        for p in proven
    ]
    logs = {}
    for p in proven:
        if p.checkpoint is not None and p.event.log.name not in logs:
            logs[p.event.log.name] = {
                "name": p.event.log.name,
                "room": by_log.get(p.event.log.name),
                "origin": origin_of(p.event.log.name),
                "checkpoint": p.checkpoint,
                "cosigned_by": p.cosigned_by,
            }
    counts = {
        status: sum(1 for p in proven if p.status == status)
        for status in (VERIFIED, PENDING, FAILED)
    }
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "audit/trail.html",
        {
            "page": page,
            "rows": rows,
            "rooms": rooms,
            "types": selectors.trail_types(user),
            "where": where,
            "counts": counts,
            "checkpoints": sorted(logs.values(), key=lambda log: log["name"]),
            "platform_log": PLATFORM_LOG,
            "filter_query": query.urlencode(),
            "may_export": bool(organizations_with(user, Permission.EXPORT_BUNDLES)),
        },
    )


@login_required
@require_GET
def bundle_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    user = request.user
    jurisdictions = list(jurisdictions_regulated_by(user))
    exporter = bool(organizations_with(user, Permission.EXPORT_BUNDLES))
    if not jurisdictions and not exporter:
        raise PermissionDenied(
            "Bundles are downloaded by regulators, and by owners and auditors of member "
            "organisations."
        )
    rooms = bundle_service.bundle_summaries(bundle_rooms(user).order_by("name"))
    return render(
        request,
        "audit/bundles.html",
        {
            "rooms": rooms,
            "jurisdictions": jurisdictions,
            "exporter": exporter,
            "built_on_download": settings.AUDIT_LOG_KEY_HOLDER,
        },
    )


@login_required
@require_POST
def bundle_prepare(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    room = get_bundle_room(request.user, slug)
    with transaction.atomic():
        bundle = bundle_service.request_bundle(room=room, by=request.user)
    if bundle is None:
        messages.info(
            request,
            f"A bundle of {room.name} was requested; it is listed here once the audit worker "
            "has built and signed it.",
        )
    else:
        messages.success(request, f"A bundle of {room.name} at size {bundle.tree_size} is ready.")
    return redirect("audit-bundles")


@login_required
@require_GET
def bundle_download(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    room = get_bundle_room(request.user, slug)
    bundle = bundle_service.bundle_for_download(room, by=request.user)
    if bundle is None:
        raise Http404("No bundle of this room has been built yet; request one first.")
    return bundle_response(bundle, room)


def bundle_response(bundle, room) -> HttpResponse:
    response = HttpResponse(bytes(bundle.content), content_type="application/zip")
    response["Content-Disposition"] = (
        f'attachment; filename="{bundle_service.bundle_filename(room)}"'
    )
    response["Digest"] = "sha-256=" + base64.b64encode(bytes.fromhex(bundle.sha256)).decode()
    return response

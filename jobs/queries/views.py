"""Query pages: the composer with its live plan, the query page, and the approvals inbox."""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from cleanroom.errors import DomainError
from cleanroom.http import AuthenticatedHttpRequest
from jobs.models import Approval, Query, Room
from jobs.permissions import (
    Permission,
    has_permission,
    may_edit_query,
    require_acting_organization,
    require_query_editor,
)
from jobs.planning.planner import completion_schema, plan_query
from jobs.queries.canonical import verify_approval
from jobs.queries.forms import DecisionForm, QueryForm
from jobs.queries.selectors import (
    changes_since,
    get_query_for_member,
    inbox_for,
    plan_with_live_budget,
    previous_version,
)
from jobs.queries.services import (
    EDITABLE,
    REPLACEABLE,
    decide_query,
    revise_query,
    revoke_approval,
    save_draft,
    submit_query,
)
from jobs.rooms.selectors import contributions_of, get_room_for_reader
from parties.selectors import organizations_of


def _composer(request: AuthenticatedHttpRequest, room: Room, query: Query | None) -> HttpResponse:
    # A new draft is proposed for one of the caller's organisations; an existing one is
    # changed for its author organisation only (the same rule the API and the service use).
    if query is None:
        acting = require_acting_organization(request.user, room, Permission.PROPOSE_QUERY)
    else:
        acting = require_query_editor(request.user, query)
    initial = None
    if query is not None:
        initial = {name: getattr(query, name) for name in EDITABLE}
        initial["receivers"] = list(query.receivers.all())
    form = QueryForm(request.POST or None, room=room, initial=initial)
    plan = None
    if request.method == "POST" and form.is_valid():
        try:
            query = save_draft(
                room=room,
                acting_for=acting,
                by=request.user,
                query=query,
                receivers=list(form.cleaned_data["receivers"]),
                **form.query_values(),
            )
            if "submit" in request.POST:
                submit_query(query=query, by=request.user)
                messages.success(
                    request, "Submitted: every data owner now sees it in their approvals inbox."
                )
            else:
                messages.success(request, "Draft saved.")
            return redirect("query-detail", slug=room.slug, pk=query.pk)
        except DomainError as exc:
            form.add_error(None, str(exc))
    if form.is_bound or query is not None:
        plan = _live_plan(room, form)
    return render(
        request,
        "jobs/query_form.html",
        {
            "room": room,
            "form": form,
            "query": query,
            "plan": plan,
            "catalog": contributions_of(room),
            "completion_schema": completion_schema(room),
        },
    )


def _live_plan(room: Room, form: QueryForm) -> dict | None:
    """Plan whatever the composer holds; fields that do not validate yet take their defaults."""
    data: Mapping[str, Any]
    if form.is_bound:
        form.is_valid()
        data = form.cleaned_data
    else:
        data = form.initial
    if not data.get("sql"):
        return None
    return plan_query(
        room=room,
        sql=data["sql"],
        mechanism=data.get("requested_mechanism") or Query.Mechanism.AUTO,
        epsilon=data.get("epsilon") or form.fields["epsilon"].initial,
        delta=data.get("delta") or Decimal(0),
        receivers=list(data.get("receivers") or []),
        output_kind=data.get("output_kind") or Query.OutputKind.AGGREGATE,
        synthetic_method=data.get("synthetic_method") or "",
        synthetic_rows=data.get("synthetic_rows"),
    ).as_dict()


@login_required
@require_http_methods(["GET", "POST"])
def query_create(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    room = get_room_for_reader(request.user, slug)
    return _composer(request, room, None)


@login_required
@require_http_methods(["GET", "POST"])
def query_edit(request: AuthenticatedHttpRequest, slug: str, pk: int) -> HttpResponse:
    room = get_room_for_reader(request.user, slug)
    query = get_query_for_member(request.user, room, pk)
    if query.status != Query.Status.DRAFT:
        raise PermissionDenied("Only drafts are edited; revise a submitted query.")
    return _composer(request, room, query)


@login_required
@require_POST
def query_plan(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    """htmx: the plan report for the composer's current contents."""
    room = get_room_for_reader(request.user, slug)
    form = QueryForm(request.POST, room=room)
    return render(request, "jobs/_plan.html", {"plan": _live_plan(room, form)})


@login_required
@require_GET
def query_detail(request: AuthenticatedHttpRequest, slug: str, pk: int) -> HttpResponse:
    room = get_room_for_reader(request.user, slug)
    query = get_query_for_member(request.user, room, pk)
    previous = previous_version(query)
    approvals = list(
        query.approvals.select_related(
            "organization", "decided_by", "query", "credential", "credential__user"
        )
    )
    deciding = [org for q, org in inbox_for(request.user) if q.pk == query.pk]
    own_orgs = set(organizations_of(request.user).values_list("pk", flat=True))
    return render(
        request,
        "jobs/query_detail.html",
        {
            "room": room,
            "query": query,
            "plan": plan_with_live_budget(query),
            "approvals": [(a, verify_approval(a)) for a in approvals],
            "revocable": [
                a
                for a in approvals
                if a.organization_id in own_orgs
                and a.decision == "approve"
                and not a.revoked_at
                and query.status in REPLACEABLE
                and has_permission(
                    request.user, Permission.DECIDE_QUERY, room=room, organization=a.organization
                )
            ],
            "deciding": deciding,
            "decision_form": DecisionForm(),
            "previous": previous,
            "changes": changes_since(query, previous),
            "versions": Query.objects.filter(lineage=query.lineage).order_by("-version"),
            "can_propose": any(
                has_permission(request.user, Permission.PROPOSE_QUERY, room=room, organization=org)
                for org in organizations_of(request.user)
            ),
            "can_edit": may_edit_query(request.user, query),
        },
    )


@login_required
@require_POST
def query_submit(request: AuthenticatedHttpRequest, slug: str, pk: int) -> HttpResponse:
    room = get_room_for_reader(request.user, slug)
    query = get_query_for_member(request.user, room, pk)
    try:
        submit_query(query=query, by=request.user)
        messages.success(request, "Submitted for approval.")
    except DomainError as exc:
        messages.error(request, str(exc))
    return redirect("query-detail", slug=slug, pk=pk)


@login_required
@require_POST
def query_revise(request: AuthenticatedHttpRequest, slug: str, pk: int) -> HttpResponse:
    room = get_room_for_reader(request.user, slug)
    query = get_query_for_member(request.user, room, pk)
    try:
        draft = revise_query(query=query, by=request.user)
    except DomainError as exc:
        messages.error(request, str(exc))
        return redirect("query-detail", slug=slug, pk=pk)
    return redirect("query-edit", slug=slug, pk=draft.pk)


@login_required
@require_POST
def query_decide(request: AuthenticatedHttpRequest, slug: str, pk: int) -> HttpResponse:
    room = get_room_for_reader(request.user, slug)
    query = get_query_for_member(request.user, room, pk)
    require_acting_organization(request.user, room, Permission.DECIDE_QUERY)
    organization = get_object_or_404(
        organizations_of(request.user), slug=request.POST.get("organization")
    )
    form = DecisionForm(request.POST)
    form.is_valid()
    approve = request.POST.get("decision") == "approve"
    try:
        decide_query(
            query=query,
            organization=organization,
            by=request.user,
            approve=approve,
            comment=form.cleaned_data.get("comment", ""),
            response=_assertion(request.POST.get("assertion", "")),
        )
        messages.success(
            request,
            f"{organization.name} {'approved' if approve else 'rejected'} version {query.version}.",
        )
    except DomainError as exc:
        messages.error(request, str(exc))
    # Back to where the owner decided: the inbox or the query page (never a free URL).
    if request.POST.get("from") == "inbox":
        return redirect("inbox")
    return redirect("query-detail", slug=slug, pk=pk)


def _assertion(posted: str) -> object:
    """The passkey's assertion the page's script posts as JSON; None when there is none."""
    try:
        return json.loads(posted) if posted else None
    except ValueError:
        return None


@login_required
@require_POST
def approval_revoke(
    request: AuthenticatedHttpRequest, slug: str, pk: int, approval_id: int
) -> HttpResponse:
    room = get_room_for_reader(request.user, slug)
    query = get_query_for_member(request.user, room, pk)
    approval = get_object_or_404(Approval, pk=approval_id, query=query)
    try:
        revoke_approval(approval=approval, by=request.user)
        messages.success(request, "Approval revoked.")
    except DomainError as exc:
        messages.error(request, str(exc))
    return redirect("query-detail", slug=slug, pk=pk)


@login_required
@require_GET
def inbox(request: AuthenticatedHttpRequest) -> HttpResponse:
    items = []
    for query, organization in inbox_for(request.user):
        previous = previous_version(query)
        items.append(
            {
                "query": query,
                "organization": organization,
                "plan": plan_with_live_budget(query),
                "changes": changes_since(query, previous),
                "previous": previous,
            }
        )
    return render(request, "jobs/inbox.html", {"items": items, "decision_form": DecisionForm()})

"""Room pages. Thin: selectors read, services change; htmx swaps the members panel in place."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from cleanroom.errors import DomainError
from cleanroom.http import AuthenticatedHttpRequest
from jobs.models import Query, Room, RoomMembership
from jobs.permissions import (
    Permission,
    acting_organization,
    has_permission,
    may_read_room,
    require_acting_organization,
)
from jobs.rooms.forms import ContributeForm, InviteForm, RoomForm
from jobs.rooms.selectors import contributions_of, get_room_for_member, queries_of, rooms_for
from jobs.rooms.services import (
    contribute_dataset,
    create_room,
    invite_organization,
    lift_participation_suspension,
    lift_suspension,
    respond_to_invitation,
    suspend_dataset,
    suspend_participation,
)
from parties.models import Dataset
from parties.permissions import Permission as PartyPermission
from parties.permissions import require as require_party
from parties.selectors import get_dataset_for_user, organizations_of, organizations_where


def _room_context(request: AuthenticatedHttpRequest, room: Room, **extra) -> dict:
    user = request.user
    inviter = acting_organization(user, room, Permission.INVITE)
    contributors = [
        org
        for org in organizations_of(user)
        if has_permission(user, Permission.CONTRIBUTE, room=room, organization=org)
    ]
    datasets = Dataset.objects.filter(organization__in=contributors)
    # An invitee sees the room, its members and datasets (enough to decide), not its work.
    reader = may_read_room(user, room)
    return {
        "room": room,
        "memberships": room.memberships.select_related("organization", "invited_by"),
        "contributions": contributions_of(room),
        "invite_form": InviteForm(room=room) if inviter else None,
        "contribute_form": ContributeForm(datasets=datasets) if contributors else None,
        "can_read": reader,
        "queries": queries_of(room) if reader else Query.objects.none(),
        "can_propose": acting_organization(user, room, Permission.PROPOSE_QUERY) is not None,
        "answerable": [
            m
            for m in room.memberships.filter(status=RoomMembership.Status.INVITED)
            if has_permission(
                user, Permission.RESPOND_TO_INVITATION, room=room, organization=m.organization
            )
        ],
        # The caller's own organisations' participation, which it may suspend or lift.
        "switchable": [
            m
            for m in room.memberships.filter(status=RoomMembership.Status.ACTIVE)
            if has_permission(
                user, Permission.SUSPEND_PARTICIPATION, room=room, organization=m.organization
            )
        ],
        **extra,
    }


@login_required
@require_GET
def room_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    rooms = rooms_for(request.user).prefetch_related("memberships__organization")
    return render(request, "jobs/room_list.html", {"rooms": rooms})


@login_required
@require_http_methods(["GET", "POST"])
def room_create(request: AuthenticatedHttpRequest) -> HttpResponse:
    organizations = organizations_where(request.user, PartyPermission.CREATE_ROOMS)
    if not organizations:
        raise PermissionDenied("Only data owners and analysts can create rooms.")
    form = RoomForm(request.POST or None, organizations=organizations)
    if request.method == "POST" and form.is_valid():
        try:
            room = create_room(by=request.user, **form.cleaned_data)
        except DomainError as exc:
            form.add_error("slug", str(exc))
        else:
            messages.success(request, f"Room “{room.name}” created. Invite the other parties.")
            return redirect("room-detail", slug=room.slug)
    return render(request, "jobs/room_form.html", {"form": form})


@login_required
@require_GET
def room_detail(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    room = get_room_for_member(request.user, slug)
    return render(request, "jobs/room_detail.html", _room_context(request, room))


def _panel(request: AuthenticatedHttpRequest, room: Room, **extra) -> HttpResponse:
    """Answer htmx with the refreshed panel, everyone else with a redirect."""
    if request.htmx:
        return render(request, "jobs/_room_panel.html", _room_context(request, room, **extra))
    for level, text in extra.items():
        getattr(messages, level)(request, text)
    return redirect("room-detail", slug=room.slug)


@login_required
@require_POST
def room_invite(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    room = get_room_for_member(request.user, slug)
    acting = require_acting_organization(request.user, room, Permission.INVITE)
    form = InviteForm(request.POST, room=room)
    if not form.is_valid():
        return _panel(request, room, error="Choose an organisation to invite.")
    invitee = form.cleaned_data["organization"]
    try:
        invite_organization(room=room, organization=invitee, acting_for=acting, by=request.user)
    except DomainError as exc:
        return _panel(request, room, error=str(exc))
    return _panel(request, room, success=f"{invitee.name} is invited.")


@login_required
@require_POST
def room_respond(request: AuthenticatedHttpRequest, slug: str, membership_id: int) -> HttpResponse:
    room = get_room_for_member(request.user, slug)
    membership = get_object_or_404(
        room.memberships, pk=membership_id, organization__in=organizations_of(request.user)
    )
    accept = request.POST.get("decision") == "accept"
    respond_to_invitation(membership=membership, accept=accept, by=request.user)
    if not accept:
        messages.info(request, f"{membership.organization.name} declined “{room.name}”.")
        return redirect("room-list")
    return _panel(request, room, success=f"{membership.organization.name} joined the room.")


@login_required
@require_POST
def room_contribute(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    room = get_room_for_member(request.user, slug)
    require_acting_organization(request.user, room, Permission.CONTRIBUTE)
    contributors = [
        org
        for org in organizations_of(request.user)
        if has_permission(request.user, Permission.CONTRIBUTE, room=room, organization=org)
    ]
    form = ContributeForm(
        request.POST, datasets=Dataset.objects.filter(organization__in=contributors)
    )
    if not form.is_valid():
        return _panel(request, room, error="Choose one of your datasets.")
    dataset = form.cleaned_data["dataset"]
    try:
        contribute_dataset(room=room, dataset=dataset, by=request.user)
    except DomainError as exc:
        return _panel(request, room, error=str(exc))
    return _panel(request, room, success=f"{dataset.name} is now in the room.")


@login_required
@require_POST
def participation_suspension(request: AuthenticatedHttpRequest, slug: str) -> HttpResponse:
    """The owner's kill switch for its organisation's participation, on the room's page:
    `suspend` or `lift`."""
    room = get_room_for_member(request.user, slug)
    organization = require_acting_organization(request.user, room, Permission.SUSPEND_PARTICIPATION)
    change = {
        "suspend": suspend_participation,
        "lift": lift_participation_suspension,
    }.get(request.POST.get("action", ""))
    if change is None:
        messages.error(request, "Choose to suspend the participation or to lift its suspension.")
        return redirect("room-detail", slug=room.slug)
    try:
        membership = change(room=room, organization=organization, by=request.user)
    except DomainError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request,
            f"{organization.name}'s participation is suspended: none of its datasets runs or "
            "gets a key in this room until you lift it."
            if membership.suspended_at
            else f"{organization.name} takes part in this room again.",
        )
    return redirect("room-detail", slug=room.slug)


@login_required
@require_POST
def dataset_suspension(request: AuthenticatedHttpRequest, org: str, slug: str) -> HttpResponse:
    """The owner's kill switch on the dataset's page: `suspend` or `lift`."""
    dataset = get_dataset_for_user(request.user, org, slug)
    require_party(request.user, PartyPermission.MANAGE_DATASETS, organization=dataset.organization)
    change = {"suspend": suspend_dataset, "lift": lift_suspension}.get(
        request.POST.get("action", "")
    )
    if change is None:
        messages.error(request, "Choose to suspend the dataset or to lift its suspension.")
    else:
        try:
            dataset = change(dataset=dataset, by=request.user)
            messages.success(
                request,
                f"{dataset.name} is suspended: no query runs on it and no key for it is "
                "released until you lift the suspension."
                if dataset.suspended_at
                else f"{dataset.name} is no longer suspended.",
            )
        except DomainError as exc:
            messages.error(request, str(exc))
    return redirect("dataset-detail", org=org, slug=slug)

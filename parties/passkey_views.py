"""The member's passkeys page (/account/passkeys/): list, register (the browser's
navigator.credentials.create, cleanroom/static/js/passkeys.js) and remove; and the
organisation's machine keys, read-only (they are registered through the API)."""

from __future__ import annotations

import base64
import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from cleanroom.errors import DomainError
from cleanroom.http import AuthenticatedHttpRequest
from parties import credentials, selectors
from parties.models import ApprovalCredential
from parties.permissions import Permission

# The registration's challenge and organisation wait in the session between the two requests.
SESSION_KEY = "passkey_registration"


@login_required
@require_GET
def passkeys(request: AuthenticatedHttpRequest) -> HttpResponse:
    owned = selectors.organizations_where(request.user, Permission.APPROVE_QUERIES)
    return render(
        request,
        "parties/passkeys.html",
        {
            "passkeys": selectors.passkeys_of(request.user),
            "organizations": owned,
            "machine_keys": ApprovalCredential.objects.filter(
                organization__in=owned,
                kind=ApprovalCredential.Kind.MACHINE_KEY,
                removed_at__isnull=True,
            ).select_related("organization"),
        },
    )


@login_required
@require_POST
def passkey_options(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The options for navigator.credentials.create, for one organisation the member owns in."""
    organization = get_object_or_404(
        selectors.organizations_of(request.user), slug=request.POST.get("organization")
    )
    try:
        options, challenge = credentials.passkey_registration_options(
            user=request.user, organization=organization
        )
    except DomainError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    request.session[SESSION_KEY] = {
        "organization": organization.pk,
        "challenge": base64.b64encode(challenge).decode(),
    }
    return JsonResponse(options)


@login_required
@require_POST
def passkey_register(request: AuthenticatedHttpRequest) -> HttpResponse:
    pending = request.session.pop(SESSION_KEY, None)
    if pending is None:
        messages.error(request, "Start the registration again: no passkey was asked for.")
        return redirect("passkeys")
    organization = get_object_or_404(
        selectors.organizations_of(request.user), pk=pending["organization"]
    )
    try:
        credential = json.loads(request.POST.get("credential") or "null")
        passkey = credentials.register_passkey(
            user=request.user,
            organization=organization,
            name=request.POST.get("name", ""),
            credential=credential,
            challenge=base64.b64decode(pending["challenge"]),
        )
        messages.success(request, f"Passkey “{passkey.name}” registered for {organization.name}.")
    except (DomainError, ValueError) as exc:
        messages.error(request, str(exc))
    return redirect("passkeys")


@login_required
@require_POST
def passkey_remove(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    passkey = get_object_or_404(selectors.passkeys_of(request.user), pk=pk)
    try:
        credentials.remove_credential(credential=passkey, by=request.user)
        messages.success(request, f"Passkey “{passkey.name}” removed.")
    except DomainError as exc:
        messages.error(request, str(exc))
    return redirect("passkeys")

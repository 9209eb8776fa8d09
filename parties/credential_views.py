"""An organisation's approval credentials, for its owners (/organizations/<org>/credentials/):
every live passkey of its owners and machine key, each removable, and the registration of a
machine key. The API's /api/organizations/<org>/credentials/ does the same under the same rule
(parties.permissions.credential_keeper)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from cleanroom.errors import DomainError
from cleanroom.http import AuthenticatedHttpRequest
from parties import credentials, selectors
from parties.forms import MachineKeyForm
from parties.permissions import credential_keeper


@login_required
@require_http_methods(["GET", "POST"])
def organization_credentials(request: AuthenticatedHttpRequest, org: str) -> HttpResponse:
    organization = credential_keeper(request.user, org)
    form = MachineKeyForm(request.POST if request.method == "POST" else None)
    if form.is_valid():
        try:
            machine_key = credentials.register_machine_key(
                organization=organization,
                by=request.user,
                name=form.cleaned_data["name"],
                public_key=credentials.machine_public_key(form.cleaned_data["public_key"]),
            )
        except DomainError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(
                request, f"Machine key “{machine_key.name}” registered for {organization.name}."
            )
            return redirect("organization-credentials", org=organization.slug)
    return render(
        request,
        "parties/organization_credentials.html",
        {
            "organization": organization,
            "credentials": selectors.live_credentials(organization).select_related("user"),
            "form": form,
        },
    )


@login_required
@require_POST
def organization_credential_remove(
    request: AuthenticatedHttpRequest, org: str, pk: int
) -> HttpResponse:
    organization = credential_keeper(request.user, org)
    credential = get_object_or_404(selectors.live_credentials(organization), pk=pk)
    try:
        credentials.remove_credential(credential=credential, by=request.user)
        messages.success(
            request, f"“{credential.name}” no longer approves for {organization.name}."
        )
    except DomainError as exc:
        messages.error(request, str(exc))
    return redirect("organization-credentials", org=organization.slug)

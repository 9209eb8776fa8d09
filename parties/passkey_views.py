"""The member's passkeys page (/account/passkeys/): list, register (the browser's
navigator.credentials.create, cleanroom/static/js/passkeys.js) and remove; and signing in with
a passkey from the login page (navigator.credentials.get; parties/sign_in.py)."""

from __future__ import annotations

import base64
import json
import time

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import authenticate, login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render, resolve_url
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_POST

from cleanroom.errors import DomainError
from cleanroom.http import AuthenticatedHttpRequest
from parties import credentials, selectors, sign_in
from parties.permissions import Permission

# The registration's challenge and organisation wait in the session between the two requests.
SESSION_KEY = "passkey_registration"
# The sign-in's challenge and when it was made, for one use.
SIGN_IN_KEY = "passkey_sign_in"


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
        },
    )


@login_required
@require_POST
def passkey_options(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The options for navigator.credentials.create: for one organisation the member owns in,
    or (no organisation named) for signing in only."""
    slug = request.POST.get("organization", "")
    organization = (
        get_object_or_404(selectors.organizations_of(request.user), slug=slug) if slug else None
    )
    try:
        options, challenge = credentials.passkey_registration_options(
            user=request.user, organization=organization
        )
    except DomainError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    request.session[SESSION_KEY] = {
        "organization": organization.pk if organization else None,
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
    organization = (
        get_object_or_404(selectors.organizations_of(request.user), pk=pending["organization"])
        if pending["organization"]
        else None
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
        use = f"for {organization.name}" if organization else "to sign in"
        messages.success(request, f"Passkey “{passkey.name}” registered {use}.")
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


@never_cache
@require_POST
def sign_in_options(request: HttpRequest) -> HttpResponse:
    """The options for navigator.credentials.get; a new challenge replaces any earlier one."""
    options, challenge = sign_in.sign_in_options()
    request.session[SIGN_IN_KEY] = {
        "challenge": base64.b64encode(challenge).decode(),
        "issued": time.time(),
    }
    return JsonResponse(options)


def _pending_challenge(request: HttpRequest) -> bytes | None:
    """The session's sign-in challenge, taken out (one use); None if none or expired."""
    pending = request.session.pop(SIGN_IN_KEY, None)
    if not pending or time.time() - pending["issued"] > sign_in.CHALLENGE_SECONDS:
        return None
    return base64.b64decode(pending["challenge"])


@sensitive_post_parameters("assertion")
@csrf_protect
@never_cache
@require_POST
def passkey_sign_in(request: HttpRequest) -> HttpResponse:
    """Sign in with the assertion the browser made; through `authenticate`, so django-axes
    refuses a locked-out holder and counts a refused assertion as it counts a wrong password."""
    challenge = _pending_challenge(request)
    assertion = sign_in.parsed_assertion(request.POST.get("assertion", ""))
    user = None
    if assertion is not None:
        user = authenticate(
            request,
            username=sign_in.holder_of(assertion),
            passkey=assertion,
            challenge=challenge,
        )
    next_url = request.POST.get("next", "")
    if user is None:
        return render(
            request,
            "registration/login.html",
            {
                "form": AuthenticationForm(request),
                "next": next_url,
                "passkey_error": "That passkey did not sign you in: try again, or use your "
                "password.",
            },
        )
    login(request, user)
    if not url_has_allowed_host_and_scheme(
        next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        next_url = resolve_url(settings.LOGIN_REDIRECT_URL)
    return redirect(next_url)

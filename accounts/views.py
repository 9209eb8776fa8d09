"""The Security page: the user's API tokens, their sessions and a way to their passkeys."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from accounts import selectors, services
from accounts.forms import TokenForm
from accounts.permissions import own_token
from cleanroom.errors import DomainError
from cleanroom.http import AuthenticatedHttpRequest


def _page(
    request: AuthenticatedHttpRequest,
    form: TokenForm,
    issued: services.IssuedToken | None = None,
    status: int = 200,
) -> HttpResponse:
    current = request.session.session_key
    context = {
        "form": form,
        "issued": issued,
        "tokens": selectors.tokens_of(request.user),
        "sessions": selectors.sessions_of(request.user),
        "current_session_key": current,
    }
    return render(request, "accounts/security.html", context, status=status)


@never_cache
@login_required
@require_GET
def security(request: AuthenticatedHttpRequest) -> HttpResponse:
    return _page(request, TokenForm())


@never_cache
@login_required
@require_POST
def token_create(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The new token's secret is in this response only: rendered, not redirected, so it is
    never kept in a message or the session."""
    form = TokenForm(request.POST)
    if form.is_valid():
        try:
            issued = services.issue_token(
                user=request.user,
                name=form.cleaned_data["name"],
                days=form.cleaned_data["expires_in_days"],
            )
        except DomainError as exc:
            form.add_error(None, str(exc))
        else:
            return _page(request, TokenForm(), issued=issued)
    return _page(request, form)


@login_required
@require_POST
def token_revoke(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    token = services.revoke_token(token=own_token(request.user, pk), by=request.user)
    messages.success(request, f"Token “{token.name}” ({token.prefix}…) is revoked.")
    return redirect("account-security")


@login_required
@require_POST
def sign_out_other_sessions(request: AuthenticatedHttpRequest) -> HttpResponse:
    ended = services.sign_out_other_sessions(
        user=request.user, current_session_key=request.session.session_key
    )
    messages.success(request, f"Signed out of {ended} other session{'s' if ended != 1 else ''}.")
    return redirect("account-security")

"""Who may do what with API tokens and sessions: each user their own, nobody else's.

Minting a token needs a sign-in: a browser session signed in with the password or a passkey (the
Security page, or the API called from it), or `POST /api/token/` with username and password. A
token cannot mint another, or a stolen token could renew itself for ever and outlive its expiry
and its revocation.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404

from accounts.models import ApiToken


def own_token(user, token_id: int) -> ApiToken:
    """The caller's token; another user's is as if it did not exist (404)."""
    token = (
        ApiToken.objects.filter(pk=token_id, user=user).first() if user.is_authenticated else None
    )
    if token is None:
        raise Http404("No such token.")
    return token


def require_sign_in(authenticated_by_token: bool) -> None:
    if authenticated_by_token:
        raise PermissionDenied(
            "A token cannot create tokens: sign in with your password or a passkey (the "
            "Security page), or use POST /api/token/ with username and password."
        )

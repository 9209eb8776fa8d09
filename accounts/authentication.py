"""`Authorization: Token <secret>` for the API, checked against the stored digests.

The header's keyword stays DRF's `Token`, so existing clients only need a new secret.
"""

from __future__ import annotations

from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from accounts import selectors, services


class ApiTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key: str):
        token = selectors.token_for_secret(key)
        if token is None:
            raise AuthenticationFailed("Invalid token.")
        if token.revoked_at is not None:
            raise AuthenticationFailed("This token was revoked.")
        if token.is_expired:
            raise AuthenticationFailed("This token has expired: create a new one.")
        if not token.user.is_active:
            raise AuthenticationFailed("User inactive or deleted.")
        services.token_used(token)
        return token.user, token

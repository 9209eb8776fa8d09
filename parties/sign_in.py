"""Signing in with a passkey instead of a password (WebAuthn authentication, py_webauthn).

Discoverable credentials, no username first: the login page asks the browser for any passkey
of this relying party, with a random challenge the session keeps for one use and
`CHALLENGE_SECONDS`; the assertion names its credential, and the credential its holder. So the
page never tells a visitor which usernames exist or have passkeys.

The check runs as a Django authentication backend (`PasskeyBackend`), called through
`django.contrib.auth.authenticate` with the holder's username beside the assertion, so that
django-axes treats it as it treats a password: a username locked out after repeated failures
is refused before the assertion is looked at, a refused assertion counts as one failure for
that username and address, and the lockout is audited (`account.locked_out`). An assertion
whose credential is unknown counts against no username, only its address.

The same passkey serves sign-in and, if registered for an organisation, its approvals; each
approval still needs an assertion of its own, whose challenge is derived from the decision
(cleanroom/audit/verifier/approvals.py). A sign-in assertion cannot approve (its challenge is
random) and an approval's cannot sign in (its challenge is not the session's).
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import User
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from webauthn import (
    generate_authentication_options,
    options_to_json,
    verify_authentication_response,
)
from webauthn.helpers import parse_authentication_credential_json
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import AuthenticationCredential, UserVerificationRequirement

from parties.credentials import CredentialRefused, user_handle
from parties.models import ApprovalCredential

# How long the browser's prompt may take, and the challenge stays good for.
CHALLENGE_SECONDS = 300


def sign_in_options() -> tuple[dict, bytes]:
    """The options for navigator.credentials.get, with no credentials listed (the browser
    offers this site's discoverable passkeys), and their challenge, for the session to keep."""
    challenge = secrets.token_bytes(32)
    options = generate_authentication_options(
        rp_id=settings.WEBAUTHN_RP_ID,
        challenge=challenge,
        timeout=CHALLENGE_SECONDS * 1000,
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    return json.loads(options_to_json(options)), challenge


def parsed_assertion(text: str) -> AuthenticationCredential | None:
    """The browser's PublicKeyCredential (JSON) as py_webauthn reads it; None if it is not one."""
    try:
        return parse_authentication_credential_json(json.loads(text))
    except (ValueError, TypeError, WebAuthnException):
        return None


def _live_passkey(credential_id: bytes) -> ApprovalCredential | None:
    return (
        ApprovalCredential.objects.select_related("user")
        .filter(
            credential_id=credential_id,
            kind=ApprovalCredential.Kind.PASSKEY,
            removed_at__isnull=True,
            user__isnull=False,
        )
        .first()
    )


def holder_of(assertion: AuthenticationCredential) -> str | None:
    """The username of the live passkey the assertion names (what the lockout counts against),
    or None."""
    passkey = _live_passkey(assertion.raw_id)
    return passkey.user.username if passkey and passkey.user else None


@transaction.atomic
def verify_sign_in(*, assertion: AuthenticationCredential, challenge: bytes) -> User:
    """The holder of the passkey that made `assertion` over `challenge`, user verified, from an
    origin of this deployment, with a signature counter that moved on (a cloned authenticator
    shows as one that did not); raises CredentialRefused."""
    found = _live_passkey(assertion.raw_id)
    if found is None or found.user is None:
        raise CredentialRefused("No registered passkey made this assertion.")
    passkey = ApprovalCredential.objects.select_for_update().get(pk=found.pk)
    holder = found.user
    handle = assertion.response.user_handle
    if handle is not None and handle != user_handle(holder):
        raise CredentialRefused("The assertion names another user than the passkey's holder.")
    try:
        verified = verify_authentication_response(
            credential=assertion,
            expected_challenge=challenge,
            expected_rp_id=passkey.rp_id,
            expected_origin=settings.WEBAUTHN_ORIGINS,
            credential_public_key=bytes(passkey.public_key),
            credential_current_sign_count=passkey.sign_count,
            require_user_verification=True,
        )
    except WebAuthnException as exc:
        raise CredentialRefused(f"The passkey assertion does not verify: {exc}") from None
    passkey.sign_count = verified.new_sign_count
    passkey.last_used_at = timezone.now()
    passkey.save(update_fields=["sign_count", "last_used_at"])
    return holder


class PasskeyBackend(ModelBackend):
    """`authenticate(request, username=..., passkey=..., challenge=...)`: the passkey's holder,
    if it is `username` and may sign in; None otherwise (the caller counts a failure). A
    password is never this backend's."""

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> User | None:
        passkey, challenge = kwargs.get("passkey"), kwargs.get("challenge")
        if (
            password is not None
            or username is None
            or not isinstance(passkey, AuthenticationCredential)
            or not isinstance(challenge, bytes)
        ):
            return None
        try:
            user = verify_sign_in(assertion=passkey, challenge=challenge)
        except CredentialRefused:
            return None
        if user.get_username() != username or not self.user_can_authenticate(user):
            return None
        return user

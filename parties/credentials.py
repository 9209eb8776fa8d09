"""Changes to passkeys and machine keys, and the check of one decision's credential.

A member registers a passkey (WebAuthn, verified with py_webauthn): for an organisation they
own data in, to approve for it (and sign in), or for no organisation, to sign in only
(parties/sign_in.py). An organisation registers a machine key it holds itself (the Ed25519
public half only). The platform holds no private key that can decide for an owner: a decision
is accepted only with a fresh assertion, or a signature, by a live credential of that
organisation, over the decision's approval message (cleanroom/audit/verifier/approvals.py).
Each change writes its audit event.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone
from webauthn import (
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import parse_authentication_credential_json
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from cleanroom.audit.log import record_platform_event
from cleanroom.audit.verifier.approvals import (
    MACHINE_KEY,
    PASSKEY,
    ApprovalError,
    approval_challenge,
    cose_public_key,
    machine_key_id,
    verify_evidence,
)
from cleanroom.errors import DomainError
from parties.models import ApprovalCredential, Organization
from parties.permissions import Permission, require

# What the offline verifier checks too (approvals.cose_public_key): ES256, EdDSA, RS256.
ALGORITHMS = [
    COSEAlgorithmIdentifier.ECDSA_SHA_256,
    COSEAlgorithmIdentifier.EDDSA,
    COSEAlgorithmIdentifier.RSASSA_PKCS1_v1_5_SHA_256,
]
RP_NAME = "Clean room"


class CredentialRefused(DomainError):
    code = "credential_refused"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 100:
        raise CredentialRefused("Name the credential (up to 100 characters).")
    return name


def user_handle(user: User) -> bytes:
    """The WebAuthn user handle of a member's passkeys, which an authenticator hands back."""
    return f"user:{user.pk}".encode()


def _may_approve_with(user: User, organization: Organization | None) -> None:
    """A passkey for an organisation is for a member who approves for it; one for none (sign-in
    only) is anyone's."""
    if organization is not None:
        require(user, Permission.APPROVE_QUERIES, organization=organization)


def passkey_registration_options(
    *, user: User, organization: Organization | None
) -> tuple[dict, bytes]:
    """The options the browser's navigator.credentials.create takes, and their challenge,
    which the caller keeps (in the session) for :func:`register_passkey`. Discoverable
    credentials are preferred: only those sign in without a username (parties/sign_in.py)."""
    _may_approve_with(user, organization)
    challenge = secrets.token_bytes(32)
    options = generate_registration_options(
        rp_id=settings.WEBAUTHN_RP_ID,
        rp_name=RP_NAME,
        user_name=user.username,
        user_id=user_handle(user),
        user_display_name=user.get_full_name() or user.username,
        challenge=challenge,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=[
            PublicKeyCredentialDescriptor(id=bytes(c.credential_id))
            for c in ApprovalCredential.objects.filter(user=user, removed_at__isnull=True)
        ],
        supported_pub_key_algs=ALGORITHMS,
    )
    return json.loads(options_to_json(options)), challenge


@transaction.atomic
def register_passkey(
    *,
    user: User,
    organization: Organization | None,
    name: str,
    credential: dict | str,
    challenge: bytes,
) -> ApprovalCredential:
    """Register the passkey the browser created for `challenge`: `user`'s, to sign in and, with
    an `organization`, to approve for it. User verification is required: the passkey alone
    (a device found or stolen) neither signs in nor decides."""
    _may_approve_with(user, organization)
    name = _name(name)
    try:
        verified = verify_registration_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=settings.WEBAUTHN_RP_ID,
            expected_origin=settings.WEBAUTHN_ORIGINS,
            require_user_verification=True,
            supported_pub_key_algs=ALGORITHMS,
        )
        cose_public_key(verified.credential_public_key)
    except (WebAuthnException, ApprovalError, ValueError) as exc:
        raise CredentialRefused(f"The passkey was not registered: {exc}") from None
    if ApprovalCredential.objects.filter(credential_id=verified.credential_id).exists():
        raise CredentialRefused("This passkey is already registered.", conflict=True)
    passkey = ApprovalCredential.objects.create(
        organization=organization,
        kind=ApprovalCredential.Kind.PASSKEY,
        user=user,
        registered_by=user,
        name=name,
        credential_id=verified.credential_id,
        public_key=verified.credential_public_key,
        rp_id=settings.WEBAUTHN_RP_ID,
        sign_count=verified.sign_count,
    )
    _record("passkey.registered", passkey, user)
    return passkey


def machine_public_key(text: str) -> bytes:
    """A machine key's public half as `python -m keyservice.approve new-key` prints it: the raw
    32-byte Ed25519 key, base64."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):  # ValueError: text that is not ASCII
        raise CredentialRefused("The public key is not base64.") from None
    if len(key) != 32:
        raise CredentialRefused("A machine key is a raw 32-byte Ed25519 public key.")
    return key


@transaction.atomic
def register_machine_key(
    *, organization: Organization, by: User, name: str, public_key: bytes
) -> ApprovalCredential:
    """Register the Ed25519 public key of a signing key the organisation holds itself."""
    require(by, Permission.APPROVE_QUERIES, organization=organization)
    name = _name(name)
    if len(public_key) != 32:
        raise CredentialRefused("A machine key is a raw 32-byte Ed25519 public key.")
    key_id = machine_key_id(public_key)
    if ApprovalCredential.objects.filter(credential_id=key_id).exists():
        raise CredentialRefused("This machine key is already registered.", conflict=True)
    machine_key = ApprovalCredential.objects.create(
        organization=organization,
        kind=ApprovalCredential.Kind.MACHINE_KEY,
        registered_by=by,
        name=name,
        credential_id=key_id,
        public_key=public_key,
    )
    _record("machine_key.registered", machine_key, by)
    return machine_key


@transaction.atomic
def remove_credential(*, credential: ApprovalCredential, by: User) -> ApprovalCredential:
    """End a credential's use: it signs in no more, and approvals it made stop counting for
    queries not yet run. Its holder or any owner of its organisation may (a lost device, a
    colleague who left)."""
    credential = ApprovalCredential.objects.select_for_update().get(pk=credential.pk)
    if credential.user_id != by.pk:
        if credential.organization is None:
            raise PermissionDenied("Only its holder removes a passkey that only signs in.")
        require(by, Permission.APPROVE_QUERIES, organization=credential.organization)
    if credential.removed_at is not None:
        raise CredentialRefused("This credential is already removed.", conflict=True)
    credential.removed_at = timezone.now()
    credential.save(update_fields=["removed_at"])
    kind = "passkey" if credential.kind == PASSKEY else "machine_key"
    _record(f"{kind}.removed", credential, by)
    return credential


def _record(event: str, credential: ApprovalCredential, by: User) -> None:
    record_platform_event(
        event,
        by=by,
        subject=f"credential:{credential.pk}",
        organization=credential.pinned().organization,
        credential=credential.pinned().as_json(),
        name=credential.name,
        holder=credential.user.username if credential.user else "",
    )


def decision_credential(
    *, organization: Organization, by: User, message: bytes, response: Any
) -> tuple[ApprovalCredential, dict]:
    """Check the owner's answer to a decision's challenge: a WebAuthn assertion (the browser's
    PublicKeyCredential as JSON) by `by`'s own passkey, or ``{"type": "machine-key",
    "credential_id", "signature"}`` by a machine key, for `organization` and over `message`.
    Returns the credential and the evidence to store; raises CredentialRefused. The caller
    holds the transaction, so a refused decision updates no counter."""
    if not isinstance(response, dict):
        raise CredentialRefused(
            "A decision needs the owner's passkey assertion or machine-key signature.",
            code="no_assertion",
        )
    if response.get("type") == MACHINE_KEY:
        credential, evidence = _machine_key_evidence(organization, response)
    else:
        credential, evidence = _passkey_evidence(organization, by, message, response)
    try:
        verify_evidence(
            evidence,
            message=message,
            organization=f"org:{organization.pk}",
            pinned=[credential.pinned()],
        )
    except ApprovalError as exc:
        raise CredentialRefused(f"The decision is not {organization.name}'s: {exc}") from None
    credential.last_used_at = timezone.now()
    credential.save(update_fields=["last_used_at", "sign_count"])
    return credential, evidence


def _live(credential_id: bytes, kind: str) -> ApprovalCredential:
    credential = (
        ApprovalCredential.objects.select_for_update()
        .filter(credential_id=credential_id, kind=kind, removed_at__isnull=True)
        # Unordered: the default order joins the organisation, which may be none (a passkey
        # that only signs in), and a row on the nullable side of a join cannot be locked.
        .order_by()
        .first()
    )
    if credential is None:
        raise CredentialRefused(
            f"No registered {kind} made this decision.", code="unknown_credential"
        )
    return credential


def _check_organization(credential: ApprovalCredential, organization: Organization) -> None:
    if credential.organization is None:
        raise CredentialRefused(
            f"This passkey only signs in: register one for {organization.name} to decide for it.",
            code="wrong_organization",
        )
    if credential.organization_id != organization.pk:
        raise CredentialRefused(
            f"This {credential.get_kind_display().lower()} decides for "
            f"{credential.organization.name}, not {organization.name}.",
            code="wrong_organization",
        )


def _machine_key_evidence(organization: Organization, response: dict) -> tuple:
    try:
        key_id = base64.b64decode(str(response.get("credential_id", "")), validate=True)
        signature = base64.b64decode(str(response.get("signature", "")), validate=True)
    except (binascii.Error, ValueError):  # ValueError: text that is not ASCII
        raise CredentialRefused("The machine key's id and signature are base64.") from None
    credential = _live(key_id, MACHINE_KEY)
    _check_organization(credential, organization)
    return credential, {
        "kind": MACHINE_KEY,
        "credential_id": _b64(key_id),
        "public_key": _b64(bytes(credential.public_key)),
        "signature": _b64(signature),
    }


def _passkey_evidence(organization: Organization, by: User, message: bytes, response: dict):
    try:
        parsed = parse_authentication_credential_json(response)
    except WebAuthnException as exc:
        raise CredentialRefused(f"The passkey assertion is malformed: {exc}") from None
    credential = _live(parsed.raw_id, PASSKEY)
    _check_organization(credential, organization)
    if credential.user_id != by.pk:
        raise CredentialRefused(
            "This passkey is another member's: decide with your own.", code="not_your_passkey"
        )
    try:
        verified = verify_authentication_response(
            credential=parsed,
            expected_challenge=approval_challenge(message),
            expected_rp_id=credential.rp_id,
            expected_origin=settings.WEBAUTHN_ORIGINS,
            credential_public_key=bytes(credential.public_key),
            credential_current_sign_count=credential.sign_count,
            require_user_verification=True,
        )
    except WebAuthnException as exc:
        raise CredentialRefused(
            f"The passkey assertion does not verify for this decision: {exc}",
            code="bad_assertion",
        ) from None
    credential.sign_count = verified.new_sign_count
    return credential, {
        "kind": PASSKEY,
        "credential_id": _b64(parsed.raw_id),
        "public_key": _b64(bytes(credential.public_key)),
        "rp_id": credential.rp_id,
        "authenticator_data": _b64(parsed.response.authenticator_data),
        "client_data_json": _b64(parsed.response.client_data_json),
        "signature": _b64(parsed.response.signature),
    }

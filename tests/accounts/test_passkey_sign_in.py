"""Signing in with a passkey instead of a password, and the attacks on it: a replayed
assertion, an assertion made for another session's challenge, another user's credential or
user handle, a tampered signature, a removed passkey, an approval's assertion. Each is refused
and nobody is signed in; refused assertions lock the holder out as wrong passwords do, audited."""

from __future__ import annotations

import base64
import json

import pytest
from django.test import Client

from cleanroom.audit.log import PLATFORM_LOG, events_of
from cleanroom.audit.verifier.approvals import approval_challenge
from jobs.queries.canonical import approval_message
from jobs.queries.services import decide_query
from parties import credentials, sign_in
from parties.credentials import CredentialRefused
from parties.models import ApprovalCredential
from tests import factories
from tests.factories import propose

pytestmark = pytest.mark.django_db

OPTIONS = "/login/passkey/options/"
SIGN_IN = "/login/passkey/"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def challenge_of(client: Client) -> bytes:
    """Ask for a sign-in challenge in this browser's session, as the login page does."""
    options = client.post(OPTIONS).json()
    assert options["allowCredentials"] == []  # discoverable: no username, no credential list
    assert options["userVerification"] == "required"
    text = options["challenge"]
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def post(client: Client, assertion: dict, next_url: str = ""):
    return client.post(SIGN_IN, {"assertion": json.dumps(assertion), "next": next_url})


def signed_in(client: Client) -> str | None:
    return client.session.get("_auth_user_id")


def lockouts() -> list[dict]:
    return [e for e in events_of(PLATFORM_LOG) if e["type"] == "account.locked_out"]


def test_an_owner_signs_in_with_the_passkey_she_approves_with(world):
    device = factories.register_passkey(world.alice, world.charite)
    client = Client()
    response = post(client, device.get(challenge_of(client)), next_url="/approvals/")
    assert response.status_code == 302 and response["Location"] == "/approvals/"
    assert signed_in(client) == str(world.alice.pk)
    passkey = ApprovalCredential.objects.get(user=world.alice)
    assert passkey.sign_count == device.sign_count and passkey.last_used_at is not None
    # Her session is listed on the Security page like a password's.
    assert client.get("/account/security/").status_code == 200


def test_the_next_page_is_never_another_site(world):
    device = factories.register_passkey(world.alice, world.charite)
    client = Client()
    response = post(client, device.get(challenge_of(client)), next_url="https://evil.example/")
    assert response.status_code == 302 and response["Location"] == "/"


def test_an_analyst_signs_in_with_a_passkey_that_approves_nothing(world, tmp_path):
    """Anyone may register a passkey to sign in; without an owner's role it decides nothing."""
    _, challenge = credentials.passkey_registration_options(user=world.bob, organization=None)
    device = factories.authenticator()
    passkey = credentials.register_passkey(
        user=world.bob,
        organization=None,
        name="Bob's laptop",
        credential=device.create(challenge),
        challenge=challenge,
    )
    assert passkey.organization is None and passkey.pinned().organization == ""
    client = Client()
    post(client, device.get(challenge_of(client)))
    assert signed_in(client) == str(world.bob.pk)
    assert events_of(PLATFORM_LOG)[-1]["data"]["organization"] == ""

    # Nor does a sign-in-only passkey of an owner approve for her organisation.
    query = propose(world.study(tmp_path), world.bob, world.pharma)
    _, challenge = credentials.passkey_registration_options(user=world.alice, organization=None)
    alices = factories.authenticator()
    credentials.register_passkey(
        user=world.alice,
        organization=None,
        name="Sign-in key",
        credential=alices.create(challenge),
        challenge=challenge,
    )
    message = approval_message(query, world.charite, "approve")
    with pytest.raises(CredentialRefused, match="only signs in"):
        decide_query(
            query=query,
            organization=world.charite,
            by=world.alice,
            approve=True,
            response=alices.get(approval_challenge(message)),
        )


def test_a_replayed_sign_in_assertion_is_refused(world):
    device = factories.register_passkey(world.alice, world.charite)
    client = Client()
    assertion = device.get(challenge_of(client))
    post(client, assertion)
    assert signed_in(client) == str(world.alice.pk)
    # Replayed in another browser, with or without a challenge of its own, and in the same one
    # after its challenge was used.
    with_challenge, without = Client(), Client()
    challenge_of(with_challenge)
    for replay in (with_challenge, without):
        post(replay, assertion)
        assert signed_in(replay) is None
    client.logout()
    post(client, assertion)
    assert signed_in(client) is None


def test_an_assertion_for_another_sessions_challenge_is_refused(world):
    """Mallory has alice's device answer alice's own login challenge (a phishing relay, say)
    and posts the assertion in her own browser: her session's challenge is another."""
    device = factories.register_passkey(world.alice, world.charite)
    alices_browser, mallorys_browser = Client(), Client()
    assertion = device.get(challenge_of(alices_browser))
    challenge_of(mallorys_browser)
    post(mallorys_browser, assertion)
    assert signed_in(mallorys_browser) is None
    # A challenge never asked for is refused the same way.
    post(Client(), factories.authenticator().get(b"\0" * 32))
    # The assertion was genuine: in alice's browser it signs her in.
    post(alices_browser, assertion)
    assert signed_in(alices_browser) == str(world.alice.pk)


def test_a_credential_or_user_handle_of_another_user_is_refused(world):
    factories.register_passkey(world.alice, world.charite)
    mallorys = factories.register_passkey(world.mallory, world.outsider)
    alices_id = bytes(ApprovalCredential.objects.get(user=world.alice).credential_id)

    # Mallory's device signs, naming alice's credential: the signature is not alice's key's.
    client = Client()
    forged = mallorys.get(challenge_of(client))
    forged["id"] = forged["rawId"] = b64url(alices_id)
    post(client, forged)
    assert signed_in(client) is None

    # Mallory's own passkey, its user handle set to alice's (the handle is not signed).
    client = Client()
    forged = mallorys.get(challenge_of(client))
    forged["response"]["userHandle"] = b64url(credentials.user_handle(world.alice))
    post(client, forged)
    assert signed_in(client) is None


def test_a_tampered_signature_is_refused(world):
    device = factories.register_passkey(world.alice, world.charite)
    client = Client()
    assertion = device.get(challenge_of(client))
    signature = bytearray(base64.urlsafe_b64decode(assertion["response"]["signature"] + "=="))
    signature[-1] ^= 1
    assertion["response"]["signature"] = b64url(bytes(signature))
    post(client, assertion)
    assert signed_in(client) is None


def test_a_removed_passkey_and_an_inactive_user_do_not_sign_in(world):
    device = factories.register_passkey(world.alice, world.charite)
    world.alice.is_active = False
    world.alice.save()
    client = Client()
    post(client, device.get(challenge_of(client)))
    assert signed_in(client) is None
    world.alice.is_active = True
    world.alice.save()
    credentials.remove_credential(
        credential=ApprovalCredential.objects.get(user=world.alice), by=world.alice
    )
    post(client, device.get(challenge_of(client)))
    assert signed_in(client) is None


def test_an_approvals_assertion_signs_nobody_in_and_a_sign_ins_approves_nothing(world, tmp_path):
    device = factories.register_passkey(world.alice, world.charite)
    query = propose(world.study(tmp_path), world.bob, world.pharma)
    approval = factories.assertion(query, world.charite, world.alice)
    client = Client()
    challenge_of(client)
    post(client, approval)
    assert signed_in(client) is None

    signing_in = device.get(challenge_of(Client()))
    with pytest.raises(CredentialRefused, match="does not verify for this decision"):
        decide_query(
            query=query,
            organization=world.charite,
            by=world.alice,
            approve=True,
            response=signing_in,
        )


def test_refused_assertions_lock_the_holder_out_as_wrong_passwords_do(world, settings):
    device = factories.register_passkey(world.alice, world.charite)
    mallorys = factories.authenticator()
    alices_id = b64url(bytes(ApprovalCredential.objects.get(user=world.alice).credential_id))
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        forged = mallorys.get(challenge_of(client))
        forged["id"] = forged["rawId"] = alices_id
        post(client, forged)
    [event] = lockouts()
    assert event["subject"] == "username:alice"
    # Alice's own passkey is now refused too, and so is her password: one counter.
    response = post(client, device.get(challenge_of(client)))
    assert response.status_code == 429 and signed_in(client) is None
    response = client.post("/login/", {"username": "alice", "password": "correct-horse-battery"})
    assert response.status_code == 429 and signed_in(client) is None


def test_a_username_locked_out_by_wrong_passwords_cannot_sign_in_with_its_passkey(world, settings):
    device = factories.register_passkey(world.alice, world.charite)
    client = Client()
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        client.post("/login/", {"username": "alice", "password": f"guess-{attempt}"})
    assert lockouts()
    response = post(client, device.get(challenge_of(client)))
    assert response.status_code == 429 and signed_in(client) is None


def test_a_passkey_sign_in_before_the_limit_clears_the_failures(world, settings):
    device = factories.register_passkey(world.alice, world.charite)
    client = Client()
    for attempt in range(settings.AXES_FAILURE_LIMIT - 1):
        client.post("/login/", {"username": "alice", "password": f"guess-{attempt}"})
    post(client, device.get(challenge_of(client)))
    assert signed_in(client) == str(world.alice.pk)
    client.logout()
    client.post("/login/", {"username": "alice", "password": "guess-again"})
    assert not lockouts()


def test_a_challenge_older_than_the_prompt_allows_is_refused(world, monkeypatch):
    device = factories.register_passkey(world.alice, world.charite)
    client = Client()
    assertion = device.get(challenge_of(client))
    monkeypatch.setattr(sign_in, "CHALLENGE_SECONDS", -1)
    post(client, assertion)
    assert signed_in(client) is None

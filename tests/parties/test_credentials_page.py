"""The page where an organisation's owners keep its approval credentials: a machine key
registered there approves, removed there it no longer does; the page and the API refuse the
same people (members without an owner's role 403, outsiders 404)."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.test import Client

from cleanroom.audit.log import PLATFORM_LOG, events_of
from jobs.models import Query
from jobs.queries.services import decide_query
from keyservice.approve import decision_body
from parties.credentials import CredentialRefused
from parties.models import ApprovalCredential
from tests import factories
from tests.factories import api, propose

pytestmark = pytest.mark.django_db

PAGE = "/organizations/charite/credentials/"


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def machine_decision(key: Ed25519PrivateKey, query: Query, org) -> dict:
    query = Query.objects.get(pk=query.pk)
    return decision_body(
        key,
        query=f"query:{query.pk}",
        digest=query.digest,
        organization=f"org:{org.pk}",
        approve=True,
    )["assertion"]


def test_an_owner_registers_a_machine_key_on_the_page_and_removes_it(world, tmp_path):
    room = world.study(tmp_path)
    factories.register_passkey(world.alice, world.charite, name="Alice laptop")
    key = Ed25519PrivateKey.generate()
    public = base64.b64encode(key.public_key().public_bytes_raw()).decode()
    alice = signed_in(world.alice)

    response = alice.post(PAGE, {"name": "Nightly pipeline", "public_key": public}, follow=True)
    page = response.content.decode()
    assert "Machine key “Nightly pipeline” registered for Charité Berlin" in page
    assert "Alice laptop" in page  # the owners' passkeys are listed beside it
    [machine_key] = ApprovalCredential.objects.filter(kind="machine-key")
    assert machine_key.organization == world.charite and machine_key.registered_by == world.alice
    assert events_of(PLATFORM_LOG)[-1]["type"] == "machine_key.registered"
    # The API lists what the page registered.
    listed = api(world.alice).get("/api/organizations/charite/credentials/").json()
    assert {c["name"] for c in listed} == {"Alice laptop", "Nightly pipeline"}

    query = propose(room, world.bob, world.pharma)
    response = alice.post(f"{PAGE}{machine_key.pk}/remove/", follow=True)
    assert "no longer approves for Charité Berlin" in response.content.decode()
    assert events_of(PLATFORM_LOG)[-1]["type"] == "machine_key.removed"
    with pytest.raises(CredentialRefused, match="No registered machine-key"):
        decide_query(
            query=query,
            organization=world.charite,
            by=world.alice,
            approve=True,
            response=machine_decision(key, query, world.charite),
        )


def test_a_key_that_is_not_an_ed25519_public_key_is_refused_on_the_page(world):
    alice = signed_in(world.alice)
    for public_key in ("not base64!", base64.b64encode(b"short").decode(), "clé"):
        response = alice.post(PAGE, {"name": "Pipeline", "public_key": public_key})
        assert response.status_code == 200
        assert 'role="alert"' in response.content.decode()
    assert not ApprovalCredential.objects.exists()


def test_members_who_may_not_approve_and_outsiders_are_refused_on_the_page_and_the_api(world):
    key = Ed25519PrivateKey.generate()
    public = base64.b64encode(key.public_key().public_bytes_raw()).decode()
    body = {"name": "Dave's script", "public_key": public}
    # dave audits the Charité: a member, not an owner (403); mallory is not a member (404).
    for user, status in ((world.dave, 403), (world.mallory, 404)):
        assert signed_in(user).get(PAGE).status_code == status
        assert signed_in(user).post(PAGE, body).status_code == status
        api_url = "/api/organizations/charite/credentials/"
        assert api(user).get(api_url).status_code == status
        assert api(user).post(api_url, body, format="json").status_code == status
    assert not ApprovalCredential.objects.exists()


def test_the_passkeys_page_links_each_owned_organisations_credentials(world):
    page = signed_in(world.alice).get("/account/passkeys/").content.decode()
    assert f'href="{PAGE}"' in page
    assert "/organizations/" not in signed_in(world.dave).get("/account/passkeys/").content.decode()

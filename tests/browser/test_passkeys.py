"""Owners register passkeys and approve or reject with them, in Chromium with its virtual
authenticator (CDP's WebAuthn domain): the page asks the browser's passkey prompt for each
decision, and the server stores the assertion it made."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from cleanroom.audit.verifier.approvals import PASSKEY
from jobs.models import Approval, Query
from jobs.queries.canonical import verify_approval
from parties.models import ApprovalCredential
from tests.factories import propose

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


@pytest.fixture
def study(world, tmp_path):
    return world.study(tmp_path)


def register(page, name: str) -> None:
    page.goto("/account/passkeys/")
    page.get_by_label("Name").fill(name)
    page.get_by_role("button", name="Register a passkey").click()
    expect(page.get_by_role("status")).to_contain_text(f"Passkey “{name}” registered")
    expect(page.get_by_role("cell", name=name, exact=True)).to_be_visible()


def test_owners_register_passkeys_then_approve_and_reject_with_them(
    world, study, page, log_in, authenticator
):
    session, authenticator_id = authenticator
    query = propose(study, world.bob, world.pharma)

    log_in(world.alice)
    page.goto("/approvals/")
    expect(page.get_by_role("link", name="Register a passkey")).to_be_visible()
    register(page, "Alice's laptop")
    [passkey] = ApprovalCredential.objects.filter(user=world.alice)
    assert passkey.kind == PASSKEY and passkey.organization == world.charite

    page.get_by_role("link", name="Approvals").click()
    item = page.get_by_role("article").filter(has_text=query.title)
    item.get_by_role("button", name="Approve for Charité Berlin").click()
    expect(page.get_by_role("status")).to_contain_text("Charité Berlin approved version 1")

    page.get_by_role("button", name="Log out").click()
    log_in(world.carol)
    register(page, "Carol's phone")
    page.goto("/approvals/")
    page.get_by_role("article").get_by_role("button", name="Reject").click()
    expect(page.get_by_role("status")).to_contain_text("rejected version 1")

    query = Query.objects.get(pk=query.pk)
    assert query.status == Query.Status.REJECTED
    for approval in Approval.objects.filter(query=query):
        assert approval.evidence["kind"] == PASSKEY
        assert approval.credential.user in (world.alice, world.carol)
        assert verify_approval(approval)
    credentials = session.send("WebAuthn.getCredentials", {"authenticatorId": authenticator_id})
    assert len(credentials["credentials"]) == 2  # the private keys stayed in the authenticator

    page.goto(f"/rooms/{study.slug}/queries/{query.pk}/")
    expect(page.get_by_text("assertion verified")).to_have_count(2)
    expect(page.get_by_text("the passkey “Alice's laptop” of alice")).to_be_visible()


def test_a_decision_without_a_passkey_is_refused_and_nothing_is_stored(world, study, page, log_in):
    """No passkey answers (no authenticator): the form never posts; a post forged without the
    script (as a hand-made request would) is refused by the server."""
    query = propose(study, world.bob, world.pharma)
    log_in(world.alice)
    page.goto("/approvals/")
    response = page.request.post(
        f"/rooms/{study.slug}/queries/{query.pk}/decide/",
        form={
            "organization": "charite",
            "decision": "approve",
            "assertion": "",
            "csrfmiddlewaretoken": page.locator(
                "input[name=csrfmiddlewaretoken]"
            ).first.get_attribute("value"),
        },
        headers={"Referer": page.url},
    )
    assert response.ok
    assert not Approval.objects.filter(query=query).exists()
    assert Query.objects.get(pk=query.pk).status == Query.Status.PENDING


def sign_in_with_passkey(page, next_path: str) -> None:
    page.goto(f"/login/?next={next_path}")
    page.get_by_role("button", name="Sign in with a passkey").click()
    page.wait_for_url(f"**{next_path}")


def test_members_sign_in_with_their_passkeys_instead_of_a_password(
    world, page, log_in, authenticator
):
    """An analyst's sign-in-only passkey and an owner's approval passkey each sign their holder
    in from the login page, no username typed: the browser offers the site's passkeys."""
    session, authenticator_id = authenticator
    log_in(world.bob)
    page.goto("/account/passkeys/")
    page.get_by_label("Name").fill("Bob's laptop")
    page.get_by_label("Approves for").select_option(label="Nothing: sign in only")
    page.get_by_role("button", name="Register a passkey").click()
    expect(page.get_by_role("status")).to_contain_text("“Bob's laptop” registered to sign in")
    page.get_by_role("button", name="Log out").click()
    sign_in_with_passkey(page, "/account/passkeys/")
    expect(page.locator(".who")).to_contain_text("bob")
    expect(page.get_by_role("cell", name="nothing (signs in only)")).to_be_visible()
    page.get_by_role("button", name="Log out").click()

    # Alice on the same device (Bob's passkey taken off it, so the prompt has one to offer).
    session.send("WebAuthn.clearCredentials", {"authenticatorId": authenticator_id})
    log_in(world.alice)
    register(page, "Alice's laptop")
    page.get_by_role("button", name="Log out").click()
    sign_in_with_passkey(page, "/approvals/")
    expect(page.locator(".who")).to_contain_text("alice")
    passkey = ApprovalCredential.objects.get(user=world.alice)
    assert passkey.organization == world.charite and passkey.last_used_at is not None

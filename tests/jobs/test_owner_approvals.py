"""Approvals are the owners' own: each decision is a WebAuthn assertion by the owner's passkey
over the decision's challenge. The attacks, as a dishonest platform or member would make
them, against the server's decision (decide_query) and the gate before a run
(check_runnable, which the planner and the worker ask)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from cleanroom.audit.log import events_of, room_log_name
from cleanroom.audit.verifier import approvals as evidence
from jobs.models import Approval, Query
from jobs.queries.canonical import approval_message
from jobs.queries.services import QueryRefused, check_runnable, decide_query, revoke_approval
from parties import credentials, services
from parties.credentials import CredentialRefused
from tests import factories
from tests.factories import propose

pytestmark = pytest.mark.django_db


@pytest.fixture
def study(world, tmp_path):
    return world.study(tmp_path)


def _refused(query, organization, by, response, match, approve=True):
    before = (Approval.objects.count(), len(events_of(room_log_name(query.room_id))))
    with pytest.raises((CredentialRefused, QueryRefused), match=match):
        decide_query(
            query=query, organization=organization, by=by, approve=approve, response=response
        )
    assert (Approval.objects.count(), len(events_of(room_log_name(query.room_id)))) == before
    assert Query.objects.get(pk=query.pk).status == Query.Status.PENDING


def _flip(text: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    raw[-1] ^= 1
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def test_a_decision_without_an_assertion_is_refused(world, study):
    query = propose(study, world.bob, world.pharma)
    _refused(query, world.charite, world.alice, None, "passkey assertion or machine-key")


def test_an_assertion_replayed_onto_another_query_is_refused(world, study):
    first = propose(study, world.bob, world.pharma)
    second = propose(study, world.bob, world.pharma, title="Another")
    replayed = factories.assertion(first, world.charite, world.alice)
    _refused(second, world.charite, world.alice, replayed, "does not verify for this decision")


def test_an_approving_assertion_cannot_reject_and_a_rejecting_one_cannot_approve(world, study):
    query = propose(study, world.bob, world.pharma)
    approving = factories.assertion(query, world.charite, world.alice, approve=True)
    _refused(query, world.charite, world.alice, approving, "does not verify", approve=False)
    rejecting = factories.assertion(query, world.charite, world.alice, approve=False)
    _refused(query, world.charite, world.alice, rejecting, "does not verify", approve=True)


def test_an_assertion_for_another_digest_is_refused(world, study):
    query = propose(study, world.bob, world.pharma)
    device = factories.passkey(world.alice, world.charite)
    other = evidence.approval_message(
        f"query:{query.pk}", "0" * 64, f"org:{world.charite.pk}", "approve"
    )
    forged = device.get(evidence.approval_challenge(other))
    _refused(query, world.charite, world.alice, forged, "does not verify")


def test_another_organisations_passkey_cannot_decide_for_this_one(world, study):
    query = propose(study, world.bob, world.pharma)
    zurich = factories.passkey(world.carol, world.zurich)
    message = approval_message(query, world.charite, "approve")
    answer = zurich.get(evidence.approval_challenge(message))
    _refused(query, world.charite, world.alice, answer, "decides for University Hospital Zurich")


def test_another_members_passkey_cannot_decide_for_them(world, study):
    olga = factories.user("olga")
    services.add_membership(organization=world.charite, user=olga, role="owner")
    query = propose(study, world.bob, world.pharma)
    alices = factories.assertion(query, world.charite, world.alice)
    _refused(query, world.charite, olga, alices, "another member's")


def test_a_tampered_signature_is_refused(world, study):
    query = propose(study, world.bob, world.pharma)
    answer = factories.assertion(query, world.charite, world.alice)
    answer["response"]["signature"] = _flip(answer["response"]["signature"])
    _refused(query, world.charite, world.alice, answer, "does not verify")


def test_an_unregistered_device_is_refused(world, study):
    query = propose(study, world.bob, world.pharma)
    stranger = factories.authenticator()
    message = approval_message(query, world.charite, "approve")
    answer = stranger.get(evidence.approval_challenge(message))
    _refused(query, world.charite, world.alice, answer, "No registered passkey")


def test_a_removed_passkey_no_longer_decides(world, study):
    query = propose(study, world.bob, world.pharma)
    answer = factories.assertion(query, world.charite, world.alice)
    passkey = world.alice.passkeys.get()
    credentials.remove_credential(credential=passkey, by=world.alice)
    _refused(query, world.charite, world.alice, answer, "No registered passkey")


def test_an_assertion_replayed_after_a_revocation_is_refused(world, study):
    query = propose(study, world.bob, world.pharma)
    answer = factories.assertion(query, world.charite, world.alice)
    approval = decide_query(
        query=query, organization=world.charite, by=world.alice, approve=True, response=answer
    )
    revoke_approval(approval=approval, by=world.alice)
    _refused(query, world.charite, world.alice, answer, "already decided|sign count")


def test_an_assertion_made_without_user_verification_is_refused(world, study):
    query = propose(study, world.bob, world.pharma)
    device = factories.passkey(world.alice, world.charite)
    answer = factories.assertion(query, world.charite, world.alice)
    data = bytearray(base64.urlsafe_b64decode(answer["response"]["authenticatorData"] + "=="))
    data[32] &= ~0x04  # the authenticator says it did not verify the user
    client = base64.urlsafe_b64decode(answer["response"]["clientDataJSON"] + "==")
    resigned = device.private_key.sign(
        bytes(data) + hashlib.sha256(client).digest(), ec.ECDSA(hashes.SHA256())
    )
    answer["response"]["authenticatorData"] = (
        base64.urlsafe_b64encode(bytes(data)).rstrip(b"=").decode()
    )
    answer["response"]["signature"] = base64.urlsafe_b64encode(resigned).rstrip(b"=").decode()
    _refused(query, world.charite, world.alice, answer, "User verification")


# The gate before a run: what the platform's database holds is checked again.


def _approved(world, study):
    query = propose(study, world.bob, world.pharma)
    for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
        factories.decide(query=query, organization=org, by=owner)
    query.refresh_from_db()
    assert query.status == Query.Status.APPROVED
    check_runnable(query)
    return query


def test_the_run_gate_refuses_an_approval_whose_assertion_is_replayed_from_another_query(
    world, study
):
    first = _approved(world, study)
    second = _approved(world, study)
    old = first.approvals.get(organization=world.charite)
    Approval.objects.filter(query=second, organization=world.charite).update(evidence=old.evidence)
    with pytest.raises(QueryRefused, match="Charité Berlin's approval is not a valid assertion"):
        check_runnable(Query.objects.get(pk=second.pk))


def test_the_run_gate_refuses_a_tampered_assertion(world, study):
    query = _approved(world, study)
    approval = query.approvals.get(organization=world.zurich)
    evidence = dict(approval.evidence)
    signature = bytearray(base64.b64decode(evidence["signature"]))
    signature[-1] ^= 1
    evidence["signature"] = base64.b64encode(bytes(signature)).decode()
    Approval.objects.filter(pk=approval.pk).update(evidence=evidence)
    with pytest.raises(QueryRefused, match="University Hospital Zurich's approval is not a valid"):
        check_runnable(Query.objects.get(pk=query.pk))


def test_the_run_gate_refuses_another_organisations_credential(world, study):
    query = _approved(world, study)
    zurich = query.approvals.get(organization=world.zurich)
    Approval.objects.filter(query=query, organization=world.charite).update(
        credential=zurich.credential, evidence=zurich.evidence
    )
    with pytest.raises(QueryRefused, match="Charité Berlin's approval is not"):
        check_runnable(Query.objects.get(pk=query.pk))


def test_the_run_gate_refuses_a_missing_assertion(world, study):
    query = _approved(world, study)
    Approval.objects.filter(query=query, organization=world.charite).update(evidence={})
    with pytest.raises(QueryRefused, match="Charité Berlin's approval is not"):
        check_runnable(Query.objects.get(pk=query.pk))


def test_the_run_gate_refuses_an_approval_by_a_passkey_removed_since(world, study):
    query = _approved(world, study)
    passkey = world.carol.passkeys.get()
    credentials.remove_credential(credential=passkey, by=world.carol)
    with pytest.raises(QueryRefused, match="University Hospital Zurich's approval is not"):
        check_runnable(Query.objects.get(pk=query.pk))


def test_a_counterless_passkeys_assertion_replayed_after_a_revocation_is_refused(world, study):
    """Synced passkeys report a signature counter of 0 always, so the counter cannot catch a
    replay: the server refuses an assertion that a stored approval already holds."""
    device = factories.authenticator()
    _, challenge = credentials.passkey_registration_options(
        user=world.alice, organization=world.charite
    )
    device.sign_count = -1  # each answer counts up to 0: the counter stays 0
    credentials.register_passkey(
        user=world.alice,
        organization=world.charite,
        name="Synced",
        credential=device.create(challenge),
        challenge=challenge,
    )
    query = propose(study, world.bob, world.pharma)
    device.sign_count = -1
    message = approval_message(Query.objects.get(pk=query.pk), world.charite, "approve")
    answer = device.get(evidence.approval_challenge(message))
    approval = decide_query(
        query=query, organization=world.charite, by=world.alice, approve=True, response=answer
    )
    revoke_approval(approval=approval, by=world.alice)
    _refused(query, world.charite, world.alice, answer, "already decided")

"""Proposing, approving and guarding joint queries: the workflow and the attacks on it."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from cleanroom.audit.log import events_of, room_log_name
from cleanroom.audit.verifier.approvals import verify_evidence
from jobs.models import Approval, BudgetEntry, Query
from jobs.queries.canonical import approval_message
from jobs.queries.services import (
    QueryRefused,
    check_runnable,
    revise_query,
    revoke_approval,
    submit_query,
)
from jobs.rooms.services import invite_organization, respond_to_invitation
from jobs.tasks import expire_queries
from tests import factories
from tests.factories import JOIN_SQL, UNION_SQL, propose

pytestmark = pytest.mark.django_db


@pytest.fixture
def study(world, tmp_path):
    return world.study(tmp_path)


def approve_all(world, query):
    for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
        factories.decide(query=query, organization=org, by=owner, approve=True)
    query.refresh_from_db()
    return query


def test_a_submitted_query_names_every_owner_as_approver_and_freezes_its_plan(world, study):
    query = propose(study, world.bob, world.pharma)
    assert query.status == Query.Status.PENDING
    assert query.plan["required_approvers"] == ["charite", "usz"]
    assert query.mechanism == "mpc"
    assert len(query.digest) == 64
    event = events_of(room_log_name(study.pk))[-1]
    assert event["type"] == "query.submitted"
    assert event["data"]["digest"] == query.digest
    assert event["data"]["required_approvers"] == [
        f"org:{world.charite.pk}",
        f"org:{world.zurich.pk}",
    ]


def test_a_join_goes_to_the_tee_with_the_reason(world, study):
    query = propose(study, world.bob, world.pharma, sql=JOIN_SQL)
    assert query.mechanism == "tee"
    assert "joins datasets on a key" in query.plan["mechanism"]["reason"]
    enclave = query.plan["steps"][0]
    assert enclave["step"] == "enclave"
    assert all(d["allowed"] for d in enclave["decisions"])


def test_every_owner_approving_makes_the_query_runnable_with_verified_assertions(world, study):
    query = approve_all(world, propose(study, world.bob, world.pharma))
    assert query.status == Query.Status.APPROVED
    plan = check_runnable(query)
    assert plan.ok
    approved = [e for e in events_of(room_log_name(study.pk)) if e["type"] == "query.approved"]
    assert len(approved) == 2
    for event in approved:
        approval = Approval.objects.get(
            query=query, organization_id=int(event["data"]["organization"].split(":")[1])
        )
        assert event["data"]["approval"] == approval.evidence
        assert approval.evidence["kind"] == "passkey"
        verify_evidence(
            event["data"]["approval"],
            message=approval_message(query, approval.organization, "approve"),
            organization=event["data"]["organization"],
            pinned=[approval.credential.pinned()],
        )


def test_one_rejection_rejects_the_query(world, study):
    query = propose(study, world.bob, world.pharma)
    factories.decide(
        query=query,
        organization=world.charite,
        by=world.alice,
        approve=False,
        comment="Too fine-grained",
    )
    query.refresh_from_db()
    assert query.status == Query.Status.REJECTED
    with pytest.raises(QueryRefused, match="rejected"):
        factories.decide(query=query, organization=world.zurich, by=world.carol, approve=True)


def test_a_query_edited_after_approval_needs_new_approvals(world, study):
    approved = approve_all(world, propose(study, world.bob, world.pharma))
    draft = revise_query(query=approved, by=world.bob, epsilon=Decimal("0.8"))
    assert draft.version == 2 and draft.approvals.count() == 0
    new = submit_query(query=draft, by=world.bob)
    approved.refresh_from_db()
    assert approved.status == Query.Status.SUPERSEDED
    assert new.status == Query.Status.PENDING and new.digest != approved.digest
    with pytest.raises(QueryRefused, match=r"superseded|not approved"):
        check_runnable(approved)
    with pytest.raises(QueryRefused, match="not approved"):
        check_runnable(new)


def test_a_query_text_changed_in_the_database_after_approval_is_refused(world, study):
    query = approve_all(world, propose(study, world.bob, world.pharma))
    Query.objects.filter(pk=query.pk).update(sql=UNION_SQL.replace("age_band", "sex"))
    query.refresh_from_db()
    with pytest.raises(QueryRefused, match="changed since approval"):
        check_runnable(query)


def test_an_analyst_cannot_approve(world, study):
    query = propose(study, world.bob, world.pharma)
    with pytest.raises(PermissionDenied, match="may not decide query"):
        factories.decide(query=query, organization=world.pharma, by=world.bob, approve=True)
    assert not query.approvals.exists()


def test_an_owner_of_an_organisation_that_owns_no_dataset_read_cannot_approve(world, study):
    factories.services.add_membership(organization=world.pharma, user=world.mallory, role="owner")
    query = propose(study, world.bob, world.pharma)
    with pytest.raises(QueryRefused, match="owns no dataset this query reads"):
        factories.decide(query=query, organization=world.pharma, by=world.mallory, approve=True)


def test_an_owner_decides_once_per_version(world, study):
    query = propose(study, world.bob, world.pharma)
    factories.decide(query=query, organization=world.charite, by=world.alice, approve=True)
    with pytest.raises(QueryRefused, match="already decided"):
        factories.decide(query=query, organization=world.charite, by=world.alice, approve=True)


def test_a_revoked_approval_before_the_run_stops_the_query(world, study):
    query = approve_all(world, propose(study, world.bob, world.pharma))
    approval = query.approvals.get(organization=world.zurich)
    revoke_approval(approval=approval, by=world.carol)
    query.refresh_from_db()
    assert query.status == Query.Status.REVOKED
    with pytest.raises(QueryRefused):
        check_runnable(query)
    assert events_of(room_log_name(study.pk))[-1]["type"] == "query.approval_revoked"


def test_approvals_expire(world, study):
    query = propose(study, world.bob, world.pharma)
    Query.objects.filter(pk=query.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(QueryRefused, match="expired"):
        factories.decide(query=query, organization=world.charite, by=world.alice, approve=True)
    query.refresh_from_db()
    assert query.status == Query.Status.EXPIRED
    assert events_of(room_log_name(study.pk))[-1]["type"] == "query.expired"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"epsilon": Decimal("1.5")}, "above charite.patients's maximum of 1"),
        ({"sql": UNION_SQL.replace("charite.patients", "other.patients")}, "not in this room"),
        ({"sql": "SELECT * FROM charite.patients"}, "line 1"),
    ],
)
def test_a_query_that_fails_its_plan_is_kept_as_a_draft_but_not_submitted(
    world, study, change, reason
):
    draft = propose(study, world.bob, world.pharma, submit=False, **change)
    with pytest.raises(QueryRefused, match=reason):
        submit_query(query=draft, by=world.bob)
    draft.refresh_from_db()
    assert draft.status == Query.Status.DRAFT and not draft.digest


def test_a_receiver_the_policy_does_not_allow_is_refused(world, study):
    invite_organization(
        room=study, organization=world.outsider, acting_for=world.pharma, by=world.bob
    )
    membership = study.memberships.get(organization=world.outsider)
    respond_to_invitation(membership=membership, accept=True, by=world.mallory)
    draft = propose(
        study, world.bob, world.pharma, submit=False, receivers=[world.pharma, world.outsider]
    )
    with pytest.raises(QueryRefused, match="does not allow Mallory Inc to receive"):
        submit_query(query=draft, by=world.bob)


def test_epsilon_above_the_remaining_budget_is_refused(world, study):
    query = propose(study, world.bob, world.pharma)
    dataset = study.contributions.get(dataset__organization=world.charite).dataset
    BudgetEntry.objects.create(
        room=study, dataset=dataset, query=query, kind="reserve", epsilon=Decimal("2.8")
    )
    draft = propose(study, world.bob, world.pharma, submit=False, title="More")
    with pytest.raises(QueryRefused, match=r"charges ε 0\.5, but only 0\.2 of 3 is left"):
        submit_query(query=draft, by=world.bob)


def test_the_periodic_task_expires_what_is_due_once(world, study):
    due = propose(study, world.bob, world.pharma)
    later = propose(study, world.bob, world.pharma, title="Later")
    Query.objects.filter(pk=due.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    assert expire_queries.apply().get() == 1
    assert expire_queries.apply().get() == 0
    assert Query.objects.get(pk=due.pk).status == Query.Status.EXPIRED
    assert Query.objects.get(pk=later.pk).status == Query.Status.PENDING

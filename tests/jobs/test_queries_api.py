"""The query endpoints: each operation, each refusal in the one error format, each persona."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import Query
from tests.factories import JOIN_SQL, UNION_SQL, api, decision_body, propose

pytestmark = pytest.mark.django_db


@pytest.fixture
def study(world, tmp_path):
    return world.study(tmp_path)


def body(**changes):
    data = {
        "title": "Stay by age band",
        "purpose": "Plan bed capacity",
        "sql": UNION_SQL,
        "epsilon": "0.5",
        "receivers": ["pharma"],
        "expires_at": (timezone.now() + timedelta(days=3)).isoformat(),
    }
    data.update(changes)
    return data


def test_an_analyst_proposes_and_submits_a_query(world, study):
    response = api(world.bob).post(
        f"/api/rooms/{study.slug}/queries/", body(submit=True), format="json"
    )
    assert response.status_code == 201, response.json()
    data = response.json()
    assert data["status"] == "pending_approval"
    assert data["plan"]["required_approvers"] == ["charite", "usz"]
    assert Query.objects.get(pk=data["id"]).digest == data["digest"]


def test_the_plan_endpoint_reports_without_storing(world, study):
    response = api(world.bob).post(
        f"/api/rooms/{study.slug}/queries/plan/",
        {"sql": JOIN_SQL, "epsilon": "0.5", "receivers": ["pharma"]},
        format="json",
    )
    assert response.status_code == 200
    plan = response.json()
    assert plan["ok"] and plan["mechanism"]["chosen"] == "tee"
    assert {cell["alias"] for cell in plan["cells"]} == {"n", "cost"}
    assert all(cell["accuracy95"] > 0 for cell in plan["cells"])
    assert not Query.objects.exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epsilon": "2"}, "above charite.patients's maximum"),
        ({"sql": "SELECT COUNT(*) FROM charite.patients LIMIT 5"}, "LIMIT"),
        ({"sql": UNION_SQL.replace("usz.patients", "other.patients")}, "not in this room"),
        ({"receivers": ["usz"]}, ""),
    ],
)
def test_a_query_failing_its_plan_is_refused_on_submit_with_the_reason(
    world, study, changes, message
):
    response = api(world.bob).post(
        f"/api/rooms/{study.slug}/queries/", body(submit=True, **changes), format="json"
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "plan_failed"
    assert message in error["message"]
    assert not Query.objects.exists()


def test_owners_approve_through_the_api_and_a_second_decision_is_refused(world, study):
    query = propose(study, world.bob, world.pharma)
    url = f"/api/rooms/{study.slug}/queries/{query.pk}"
    alice = decision_body(query, world.charite, world.alice, comment="ok")
    assert api(world.alice).post(f"{url}/approve/", alice, format="json").status_code == 201
    again = api(world.alice).post(
        f"{url}/approve/", decision_body(query, world.charite, world.alice), format="json"
    )
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "already_decided"
    carol = decision_body(query, world.zurich, world.carol)
    assert api(world.carol).post(f"{url}/approve/", carol, format="json").status_code == 201
    query.refresh_from_db()
    assert query.status == Query.Status.APPROVED
    approvals = api(world.bob).get(f"{url}/").json()["approvals"]
    assert [a["verified"] for a in approvals] == [True, True]
    assert [a["credential"]["kind"] for a in approvals] == ["passkey", "passkey"]


def test_an_api_decision_without_the_owners_assertion_is_refused(world, study):
    query = propose(study, world.bob, world.pharma)
    url = f"/api/rooms/{study.slug}/queries/{query.pk}"
    response = api(world.alice).post(f"{url}/approve/", {"comment": "ok"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "no_assertion"
    assert not query.approvals.exists()


def test_the_analyst_cannot_approve_and_an_outsider_cannot_see_the_query(world, study):
    query = propose(study, world.bob, world.pharma)
    url = f"/api/rooms/{study.slug}/queries/{query.pk}"
    assert api(world.bob).post(f"{url}/approve/", {}).status_code == 403
    assert api(world.mallory).get(f"{url}/").status_code == 404
    assert api(world.mallory).post(f"{url}/approve/", {}).status_code == 404
    assert api(world.rita).get(f"{url}/").status_code == 404
    assert api(world.dave).post(f"{url}/approve/", {}).status_code == 403
    assert not query.approvals.exists()


def test_the_inbox_lists_what_waits_for_the_owner_and_not_for_others(world, study):
    query = propose(study, world.bob, world.pharma)
    items = api(world.alice).get("/api/approvals/").json()
    assert [(i["organization"], i["query"]["id"]) for i in items] == [("charite", query.pk)]
    assert api(world.bob).get("/api/approvals/").json() == []
    assert api(world.mallory).get("/api/approvals/").json() == []


def test_patching_a_submitted_query_makes_a_new_version_without_approvals(world, study):
    query = propose(study, world.bob, world.pharma)
    api(world.alice).post(
        f"/api/rooms/{study.slug}/queries/{query.pk}/approve/",
        decision_body(query, world.charite, world.alice),
        format="json",
    )
    response = api(world.bob).patch(
        f"/api/rooms/{study.slug}/queries/{query.pk}/",
        {"epsilon": "0.7", "submit": True},
        format="json",
    )
    assert response.status_code == 200, response.json()
    data = response.json()
    assert data["version"] == 2 and data["approvals"] == [] and data["status"] == "pending_approval"
    query.refresh_from_db()
    assert query.status == Query.Status.SUPERSEDED


def test_an_owner_revokes_an_approval_before_the_run(world, study):
    query = propose(study, world.bob, world.pharma)
    url = f"/api/rooms/{study.slug}/queries/{query.pk}"
    body = decision_body(query, world.charite, world.alice)
    approval_id = api(world.alice).post(f"{url}/approve/", body, format="json").json()["id"]
    assert api(world.carol).post(f"{url}/approvals/{approval_id}/revoke/").status_code == 403
    response = api(world.alice).post(f"{url}/approvals/{approval_id}/revoke/")
    assert response.status_code == 200 and response.json()["revoked_at"]

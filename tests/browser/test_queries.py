"""Composing a query with its live plan, and deciding on it in the approvals inbox."""

import pytest
from playwright.sync_api import expect

from jobs.models import Approval, Query
from tests.browser.test_passkeys import register
from tests.factories import JOIN_SQL, propose

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def study(world, tmp_path):
    return world.study(tmp_path)


def test_the_plan_changes_as_the_analyst_types(world, study, page, log_in):
    log_in(world.bob)
    page.goto(f"/rooms/{study.slug}/queries/new/")
    page.get_by_label("Title").fill("Costs by diagnosis")
    page.get_by_label("Purpose").fill("Health economics")
    page.get_by_label("Pharma Research").check()
    plan = page.locator("#plan")
    page.get_by_label("Query").fill("SELECT diagnosis, COUNT(*) FROM charite.patients")
    expect(plan).to_contain_text("diagnosis must appear in GROUP BY")
    expect(plan).to_contain_text("Cannot be submitted")

    page.get_by_label("Query").fill(JOIN_SQL)
    expect(plan).to_contain_text("All checks pass")
    expect(plan).to_contain_text("The TEE, because it joins datasets on a key")
    expect(plan).to_contain_text("eu-frankfurt-tee")
    expect(plan.get_by_role("row").filter(has_text="Laplace, scale 800000")).to_contain_text("±")

    page.get_by_label("ε (epsilon)").fill("1.5")
    expect(plan).to_contain_text("above charite.patients's maximum of 1")
    page.get_by_label("ε (epsilon)").fill("0.5")
    expect(plan).to_contain_text("All checks pass")
    page.get_by_role("button", name="Submit for approval").click()
    expect(page.locator("#status")).to_have_text("Waiting for approvals")
    query = Query.objects.get()
    assert query.status == Query.Status.PENDING and query.mechanism == "tee"


def test_an_owner_approves_in_the_inbox_and_the_other_rejects(
    world, study, page, log_in, authenticator
):
    query = propose(study, world.bob, world.pharma)
    log_in(world.alice)
    register(page, "Laptop")
    page.get_by_role("link", name="Approvals").click()
    item = page.get_by_role("article").filter(has_text=query.title)
    expect(item).to_contain_text("Plan bed capacity")
    expect(item).to_contain_text("charite.patients")
    expect(item).to_contain_text("charges ε 0.5; 3 of 3 left")
    item.get_by_label("Comment for Charité Berlin").fill("Aggregates only, fine.")
    item.get_by_role("button", name="Approve for Charité Berlin").click()
    expect(page.get_by_role("status")).to_contain_text("Charité Berlin approved version 1")
    expect(page.get_by_text("Nothing waits for your decision.")).to_be_visible()

    page.get_by_role("button", name="Log out").click()
    log_in(world.carol)
    register(page, "Phone")
    page.goto("/approvals/")
    page.get_by_role("article").get_by_role("button", name="Reject").click()
    expect(page.get_by_role("status")).to_contain_text("rejected version 1")

    query.refresh_from_db()
    assert query.status == Query.Status.REJECTED
    decisions = dict(
        Approval.objects.filter(query=query).values_list("organization__slug", "decision")
    )
    assert decisions == {"charite": "approve", "usz": "reject"}
    page.goto(f"/rooms/{study.slug}/queries/{query.pk}/")
    expect(page.locator("#status")).to_have_text("Rejected")
    expect(page.get_by_text("assertion verified")).to_have_count(2)

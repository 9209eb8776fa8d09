"""One budget per dataset for its whole life, across every room it is contributed to.

The attack: a dataset with a total ε of 3 is contributed to two rooms, and an analyst runs
queries in each. Were the budget kept per room, each room would spend 3, and its people would
lose ε 6. Here the second room's plan shows what the first spent, reservations beyond the
lifetime total are refused with the reason and reserve nothing, and jobs racing in both rooms
on PostgreSQL never reserve more than the total."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.db import connection, connections
from django.test import Client

from cleanroom.audit.log import events_of, room_log_name
from jobs.budget.ledger import BudgetExceeded, balance, reserve, settle
from jobs.execution import outbox
from jobs.execution.lifecycle import run_query, start_attempt
from jobs.models import BudgetEntry, Job, Query, Room
from jobs.planning.planner import plan_query
from jobs.rooms.services import (
    contribute_dataset,
    create_room,
    invite_organization,
    respond_to_invitation,
)
from parties.models import Dataset
from tests import factories
from tests.factories import JOIN_SQL, api, propose

SITE = "eu-frankfurt-tee"


@pytest.fixture
def held(monkeypatch):
    """Jobs stay off the broker; the test starts their attempts itself."""
    monkeypatch.setenv("CLEANROOM_SITE", SITE)
    monkeypatch.setattr(outbox, "dispatch", lambda job_id: None)


@pytest.fixture
def rooms(world, tmp_path) -> tuple[Room, Room]:
    """The study room, and a second room of the same analyst's organisation into which both
    hospitals contribute the very same datasets (each with a lifetime ε of 3)."""
    first = world.study(tmp_path)
    second = create_room(
        organization=world.pharma, slug="second", name="Second study", purpose="More", by=world.bob
    )
    for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
        membership = invite_organization(
            room=second, organization=org, acting_for=world.pharma, by=world.bob
        )
        respond_to_invitation(membership=membership, accept=True, by=owner)
        contribute_dataset(room=second, dataset=Dataset.objects.get(organization=org), by=owner)
    return first, second


def approved(world, room: Room, epsilon: str = "1", title: str = "Costs") -> Query:
    query = propose(
        room, world.bob, world.pharma, sql=JOIN_SQL, epsilon=Decimal(epsilon), title=title
    )
    for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
        factories.decide(query=query, organization=org, by=owner, approve=True)
    query.refresh_from_db()
    return query


def used(dataset: Dataset) -> Decimal:
    """ε reserved or spent on the dataset in every room, less refunds."""
    return balance(dataset).used_epsilon


def spend(job: Job) -> None:
    """The job's result released: its reservation becomes a spend."""
    settle(query=job.query, kind=BudgetEntry.Kind.SPEND)


def plan_in(room: Room, world, epsilon: str = "1"):
    return plan_query(room=room, sql=JOIN_SQL, epsilon=Decimal(epsilon), receivers=[world.pharma])


@pytest.mark.django_db
def test_the_second_room_sees_the_first_rooms_spend_and_cannot_go_past_the_lifetime_total(
    world, rooms, held
):
    first, second = rooms
    # Every query is approved while the budget is untouched, so each passes its plan.
    in_first = [approved(world, first, title=f"First {i}") for i in range(2)]
    in_second = [approved(world, second, title=f"Second {i}") for i in range(2)]
    jobs = [run_query(query=query, by=world.bob) for query in in_first + in_second]

    for job in jobs[:2]:
        assert start_attempt(job.pk, SITE) is not None
        spend(job)

    plan = plan_in(second, world).as_dict()
    assert plan["ok"]
    for dataset in plan["datasets"]:
        assert (dataset["remaining_epsilon"], dataset["total_epsilon"]) == ("1", "3")
    assert "charite.patients: charges ε 1; 1 of 3 left" in [
        c["message"].split(" (")[0] for c in plan["checks"]
    ]

    assert start_attempt(jobs[2].pk, SITE) is not None
    refused = plan_in(second, world)
    assert not refused.ok
    assert any(
        "charges ε 1, but only 0 of 3 is left" in check.message for check in refused.failed()
    )

    # The last job was approved and dispatched before the budget ran out: its start is refused.
    assert start_attempt(jobs[3].pk, SITE) is None
    jobs[3].refresh_from_db()
    assert jobs[3].state == Job.State.FAILED
    assert "charges ε 1, but only 0 of 3 is left" in jobs[3].error
    assert "lifetime budget, across every room" in jobs[3].error
    assert not BudgetEntry.objects.filter(query=jobs[3].query).exists()
    assert not [
        e
        for e in events_of(room_log_name(second.pk))
        if e["type"] == "budget.reserved" and e["data"].get("job") == f"job:{jobs[3].pk}"
    ]
    for dataset in Dataset.objects.all():
        assert used(dataset) == Decimal(3)
        assert set(BudgetEntry.objects.filter(dataset=dataset).values_list("room", flat=True)) == {
            first.pk,
            second.pk,
        }


@pytest.mark.django_db
def test_a_refused_reservation_in_the_ledger_reserves_nothing(world, rooms):
    first, second = rooms
    big, late = approved(world, first), approved(world, second)
    reserve(query=big, room=first, epsilon=Decimal("2.5"), delta=Decimal(0))
    with pytest.raises(BudgetExceeded, match=r"charges ε 1, but only 0\.5 of 3 is left"):
        reserve(query=late, room=second, epsilon=Decimal(1), delta=Decimal(0))
    assert not BudgetEntry.objects.filter(query=late).exists()


@pytest.mark.django_db
def test_the_budget_page_and_api_of_each_room_show_the_one_lifetime_balance(world, rooms, held):
    first, second = rooms
    job = run_query(query=approved(world, first), by=world.bob)
    start_attempt(job.pk, SITE)
    spend(job)

    for room, here, elsewhere in ((first, "1.0000", "0.0000"), (second, "0.0000", "1.0000")):
        rows = api(world.bob).get(f"/api/rooms/{room.slug}/budget/").json()
        assert len(rows) == 2
        for row in rows:
            assert row["total_epsilon"] == "3.0000"
            assert row["spent_epsilon"] == "1.0000"
            assert row["remaining_epsilon"] == "2.0000"
            assert (row["used_epsilon_in_room"], row["used_epsilon_elsewhere"]) == (here, elsewhere)

    browser = Client()
    browser.force_login(world.bob)
    page = browser.get(f"/rooms/{second.slug}/budget/").content.decode()
    assert "Spent ε 1, reserved 0, remaining <strong>2</strong> of 3." in page
    assert "this room's queries used 0 and other rooms' 1" in page
    assert job.query.title not in page  # the other room's queries are not named


@pytest.mark.django_db
def test_the_approvals_page_shows_the_balance_now_not_at_submission(world, rooms, held):
    first, second = rooms
    waiting = propose(second, world.bob, world.pharma, sql=JOIN_SQL, title="Waiting")
    assert waiting.plan["datasets"][0]["remaining_epsilon"] == "3"  # frozen at submission
    for _ in range(2):
        job = run_query(query=approved(world, first), by=world.bob)
        start_attempt(job.pk, SITE)
        spend(job)

    browser = Client()
    browser.force_login(world.alice)
    for url in ("/approvals/", f"/rooms/{second.slug}/queries/{waiting.pk}/"):
        page = browser.get(url).content.decode()
        assert "charite.patients: charges ε 0.5; 1 of 3 left" in page, url
        # The table's budget cell: what is left now, and whether the charge still fits.
        cell = re.search(r'<td class="budget-left">(.*?)<div', page).group(1)
        assert cell == '1 of 3 left <span class="badge ok">fits</span>', url
        assert "3 of 3" not in page, url
        assert "Rows per unit (L)" in page, url

    # Once the rest is spent, the owner sees that the query would now be refused.
    job = run_query(query=approved(world, first), by=world.bob)
    start_attempt(job.pk, SITE)
    page = browser.get("/approvals/").content.decode()
    assert "Would be refused now" in page
    assert "charges ε 0.5, but only 0 of 3 is left" in page
    assert '0 of 3 left <span class="badge bad">does not fit</span>' in page


@pytest.mark.django_db(transaction=True)
def test_jobs_racing_in_two_rooms_never_reserve_more_than_the_lifetime_total(world, rooms, held):
    if connection.vendor != "postgresql":
        pytest.skip(
            "SQLite runs one write transaction at a time, so starts cannot race there; the "
            "row locks that keep concurrent reservations within the total are PostgreSQL's"
        )
    first, second = rooms
    # Three approved queries of ε 1 in each room, against a lifetime ε of 3 per dataset.
    jobs = [
        run_query(query=approved(world, room, title=f"{room.slug} {i}"), by=world.bob)
        for room in (first, second)
        for i in range(3)
    ]
    barrier = threading.Barrier(len(jobs))

    def start(job: Job) -> Job | None:
        try:
            barrier.wait(timeout=30)
            return start_attempt(job.pk, SITE)
        finally:
            connections.close_all()  # this thread's own connection

    with ThreadPoolExecutor(len(jobs)) as pool:
        started = list(pool.map(start, jobs))

    running = [job for job in started if job is not None]
    assert len(running) == 3
    for dataset in Dataset.objects.all():
        assert used(dataset) == Decimal(3)
    for job in jobs:
        job.refresh_from_db()
        kinds = sorted(BudgetEntry.objects.filter(query=job.query).values_list("kind", flat=True))
        if job.pk in {r.pk for r in running}:
            assert kinds == ["reserve", "reserve"]
        else:
            assert job.state == Job.State.FAILED and "but only 0 of 3 is left" in job.error
            assert kinds == []

    # Settling: one job's result released, the others refunded; a second settle is a no-op.
    for index, job in enumerate(running):
        kind = BudgetEntry.Kind.SPEND if index == 0 else BudgetEntry.Kind.REFUND
        settle(query=job.query, kind=kind)
        assert settle(query=job.query, kind=BudgetEntry.Kind.SPEND) == []
    for job in running:
        entries = BudgetEntry.objects.filter(query=job.query)
        for dataset in Dataset.objects.all():
            kinds = list(entries.filter(dataset=dataset).values_list("kind", flat=True))
            assert kinds.count("reserve") == 1 and len(kinds) == 2  # reserved, settled once
    for dataset in Dataset.objects.all():
        assert used(dataset) == Decimal(1)

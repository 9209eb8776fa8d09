"""The owner's kill switch: a dataset's owner suspends it, and from that moment nothing plans,
runs or gets its key, running jobs that need it fail closed (refunded when no key had left),
every room it is in shows the suspension; nobody but its owner can suspend or lift it."""

from __future__ import annotations

import pytest
from django.test import Client

from cleanroom.audit.log import events_of, room_log_name
from jobs.execution.lifecycle import run_query, start_attempt
from jobs.models import BudgetEntry, Job
from jobs.queries.services import QueryRefused, plan_for
from jobs.rooms.services import lift_suspension, suspend_dataset
from parties.models import Dataset
from tests.factories import api
from tests.jobs.test_key_release import SITE, approved

pytestmark = pytest.mark.django_db


def charite_patients(world) -> Dataset:
    return world.charite.datasets.get()


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_suspension_fails_a_running_job_closed_and_refunds_it(
    world, tmp_path, monkeypatch, django_capture_on_commit_callbacks
):
    room = world.study(tmp_path)
    monkeypatch.setenv("CLEANROOM_SITE", SITE)
    with django_capture_on_commit_callbacks(execute=False):
        job = run_query(query=approved(world, room), by=world.bob)
    suspend_dataset(dataset=charite_patients(world), by=world.alice)

    assert start_attempt(job.pk, SITE) is None
    job.refresh_from_db()
    assert job.state == Job.State.FAILED and "suspended by its owner" in job.error
    assert job.charged_at is None
    kinds = sorted(BudgetEntry.objects.filter(query=job.query).values_list("kind", flat=True))
    assert "spend" not in kinds  # nothing was reserved (the first attempt never started)
    types = [e["type"] for e in events_of(room_log_name(room.pk))]
    assert "dataset.suspended" in types


def test_while_suspended_no_new_query_plans_and_a_lifted_suspension_lets_it_run(
    world, tmp_path, django_capture_on_commit_callbacks
):
    room = world.study(tmp_path)
    query = approved(world, room)
    suspend_dataset(dataset=charite_patients(world), by=world.alice)
    plan = plan_for(query)
    assert any(c.name == "suspension" and not c.ok for c in plan.checks)
    with pytest.raises(QueryRefused, match="suspended by its owner"):
        run_query(query=query, by=world.bob)
    lift_suspension(dataset=charite_patients(world), by=world.alice)
    with django_capture_on_commit_callbacks(execute=False):
        job = run_query(query=query, by=world.bob)
    assert job.state == Job.State.QUEUED
    types = [e["type"] for e in events_of(room_log_name(room.pk))]
    assert types.count("dataset.suspended") == types.count("dataset.resumed") == 1


def test_nobody_but_the_owner_suspends_or_lifts_through_the_page_or_the_api(world, tmp_path):
    world.study(tmp_path)
    dataset = charite_patients(world)
    page = f"/datasets/{world.charite.slug}/{dataset.slug}/suspension/"
    endpoint = f"/api/datasets/{world.charite.slug}/{dataset.slug}/suspension/"
    # An owner of another hospital, the study's analyst, Charité's own auditor, an outsider.
    for user in (world.carol, world.bob, world.dave, world.mallory):
        assert client_for(user).post(page, {"action": "suspend"}).status_code in (403, 404)
        assert api(user).post(endpoint).status_code in (403, 404)
    dataset.refresh_from_db()
    assert dataset.suspended_at is None
    assert api(world.alice).post(endpoint).status_code == 200
    for user in (world.carol, world.bob, world.dave, world.mallory):
        assert api(user).delete(endpoint).status_code in (403, 404)
        assert client_for(user).post(page, {"action": "lift"}).status_code in (403, 404)
    dataset.refresh_from_db()
    assert dataset.suspended_at is not None
    response = client_for(world.alice).post(page, {"action": "lift"})
    assert response.status_code == 302
    dataset.refresh_from_db()
    assert dataset.suspended_at is None

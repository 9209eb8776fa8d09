"""The MPC steps take every term that sets the noise from the approved canonical form, never
from the platform's catalog; and the key that opens the parties' noisy output shares is only
unwrapped for a delivery that was claimed and charged. Played as the operator, who can edit any
row of the database, would try it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cleanroom.audit.log import events_of, room_log_name
from jobs import tasks
from jobs.engines.base import EngineError
from jobs.engines.mpc import engine as mpc_engine
from jobs.execution import outbox
from jobs.execution.lifecycle import run_query
from jobs.models import BudgetEntry, Job, JobStep, Query
from parties.models import Column
from tests.engines.support import mpc_config
from tests.jobs.mpc_support import approved_union, three_hospitals

pytestmark = pytest.mark.django_db


@pytest.fixture
def job(world, tmp_path, monkeypatch) -> Job:
    monkeypatch.setattr(outbox, "dispatch", lambda job_id: None)
    return run_query(query=approved_union(world, three_hospitals(world, tmp_path)), by=world.bob)


def _run_input(job: Job, monkeypatch, site: str = "eu-frankfurt") -> str:
    step = job.steps.get(kind=JobStep.Kind.INPUT, site__name=site)
    monkeypatch.setenv("CLEANROOM_SITE", site)
    return tasks.run_step(step.pk, site)


def _events(job: Job, type: str) -> list[dict]:
    return [
        e
        for e in events_of(room_log_name(job.query.room_id))
        if e["data"].get("job") == f"job:{job.pk}" and e["type"] == type
    ]


def test_an_operator_who_raises_rows_per_unit_in_the_signed_form_gets_no_shares(job, monkeypatch):
    canonical = job.query.canonical
    for item in canonical["datasets"]:
        item["rows_per_unit"] = 60
    canonical["accountant"]["rows_per_unit"] = 60
    Query.objects.filter(pk=job.query_id).update(canonical=canonical)

    assert _run_input(job, monkeypatch) == "nothing to do"
    job.refresh_from_db()
    assert job.state == Job.State.FAILED and "digest no longer matches" in job.error
    assert not _events(job, "key.released") and not _events(job, "job.step.succeeded")
    assert not BudgetEntry.objects.filter(query=job.query).exists()


def test_an_operator_who_widens_a_columns_bounds_in_the_catalog_gets_no_shares(job, monkeypatch):
    """The catalog the planner read is no longer what was signed: the run gate re-plans and
    finds another digest, before any key or share."""
    Column.objects.filter(name="length_of_stay").update(upper=600)

    assert _run_input(job, monkeypatch) == "nothing to do"
    job.refresh_from_db()
    assert job.state == Job.State.FAILED and "changed since approval" in job.error
    assert not _events(job, "key.released")


def test_the_steps_take_their_bounds_from_the_signed_terms_not_the_catalog(job):
    """Defence in depth: even where the gate is passed, the steps' context is the signed one,
    built from the canonical form alone."""
    context = mpc_engine.inputs.query_context(job.query.canonical)
    assert context.rows_per_unit == job.query.canonical["accountant"]["rows_per_unit"]
    Column.objects.filter(name="length_of_stay").update(upper=600)
    again = mpc_engine.inputs.query_context(job.query.canonical)
    bound = next(
        c["upper"]
        for item in job.query.canonical["datasets"]
        for c in item["columns"]
        if c["name"] == "length_of_stay"
    )
    assert again.columns[("charite.patients", "length_of_stay")].upper == Decimal(bound) == 60


def test_the_output_shares_stay_sealed_for_a_delivery_that_was_not_claimed_and_charged(job):
    delivery = job.steps.get(kind=JobStep.Kind.DELIVER)
    with pytest.raises(EngineError, match="not claimed and charged"):
        mpc_engine.delivery_order(delivery, [], mpc_config())
    job.refresh_from_db()
    assert job.charged_at is None

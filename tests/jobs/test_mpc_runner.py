"""MPC jobs short of the party processes: the plan's calibration and sites, a job's steps at
several sites, dispatch after commit and the outbox, the refusal of a worker of the wrong site,
and the planner refusing two compute parties."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from cleanroom.audit.log import events_of, room_log_name
from jobs import tasks
from jobs.execution import outbox
from jobs.execution.expiry import Expired, expire_leases
from jobs.execution.lifecycle import run_query, start_attempt
from jobs.execution.outbox import dispatch_pending
from jobs.execution.steps import claim_delivery, start_step
from jobs.models import BudgetEntry, Job, JobStep, Result
from jobs.queries.services import plan_for
from parties.models import Site
from tests.factories import propose
from tests.jobs.mpc_support import (
    INPUT_SITES,
    PARTY_SITES,
    THREE_WAY_SQL,
    approved_union,
    three_hospitals,
)


@pytest.fixture
def room(world, tmp_path):
    return three_hospitals(world, tmp_path)


def step_events(job: Job, *types: str) -> list[dict]:
    return [
        e
        for e in events_of(room_log_name(job.query.room_id))
        if e["data"].get("job") == f"job:{job.pk}" and e["type"] in types
    ]


@pytest.mark.django_db
def test_the_plan_calibrates_every_mpc_cell_on_an_integer_grid_and_names_every_party(world, room):
    query = propose(room, world.bob, world.pharma, sql=THREE_WAY_SQL)
    plan = query.plan
    assert plan["mechanism"]["chosen"] == "mpc"
    assert "no party's rows leave its site" in plan["mechanism"]["reason"]
    steps = {s["step"]: s for s in plan["steps"]}
    assert sorted(s["site"] for s in steps.values() if s["kind"] == "input") == INPUT_SITES
    parties = [s for s in plan["steps"] if s["kind"] == "compute"]
    assert sorted(s["site"] for s in parties) == PARTY_SITES
    assert [s["party"] for s in parties] == [0, 1, 2]
    assert {s["jurisdiction"] for s in parties} == {"EU", "CH", "UK"}
    cells = {c["alias"]: c for c in plan["cells"]}
    assert cells["n"]["mechanism"] == "discrete Laplace"
    assert cells["stay"]["mechanism"] == "discrete Laplace"
    # A float measure is summed in fixed point and noised on that grid.
    assert "discrete Laplace on a 2^-3 grid sum" in cells["mean_cost"]["mechanism"]
    assert all(
        "total variation of the exact discrete Laplace" in c["sampling"] for c in cells.values()
    )
    sampling = plan["groups"]["mpc_sampling"]
    assert 0 < sampling["deviation_per_cell"] <= 2**-40 and sampling["cells"] == 4 * 3


@pytest.mark.django_db
def test_with_two_mpc_party_sites_left_the_planner_refuses_mpc_and_says_why(world, room):
    Site.objects.filter(name="uk-manchester-mpc").update(active=False)
    query = propose(
        room, world.bob, world.pharma, sql=THREE_WAY_SQL, submit=False, requested_mechanism="mpc"
    )
    plan = plan_for(query)
    assert not plan.ok and plan.mechanism is None
    [check] = [c for c in plan.failed() if c.name == "mechanism"]
    assert "only 2 MPC party sites may receive shares of every dataset" in check.message
    assert "threshold 0" in check.message
    # Automatic choice falls back to the TEE and says why.
    fallback = plan_for(propose(room, world.bob, world.pharma, sql=THREE_WAY_SQL, submit=False))
    assert fallback.mechanism == "tee"
    assert "MPC needs 3" in fallback.mechanism_reason


@pytest.mark.django_db
def test_an_mpc_job_has_an_input_step_per_dataset_three_compute_steps_and_a_delivery(
    world, room, django_capture_on_commit_callbacks
):
    query = approved_union(world, room)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = run_query(query=query, by=world.bob)
    assert len(callbacks) == 1 and job.site is None and job.mechanism == "mpc"
    steps = list(job.steps.select_related("site", "dataset"))
    inputs = [s for s in steps if s.kind == JobStep.Kind.INPUT]
    assert {(s.dataset.qualified_name, s.site.name) for s in inputs} == {
        ("charite.patients", "eu-frankfurt"),
        ("usz.patients", "ch-zurich"),
        ("barts.patients", "uk-london"),
    }
    compute = sorted((s for s in steps if s.kind == JobStep.Kind.COMPUTE), key=lambda s: s.party)
    assert [s.site.jurisdiction.code for s in compute] == ["CH", "EU", "UK"]
    [delivery] = [s for s in steps if s.kind == JobStep.Kind.DELIVER]
    # The delivery key lives in the receiver's key service: the platform holds its public half.
    assert delivery.site is None and set(delivery.output) == {"public_key", "receiver"}
    assert delivery.output["receiver"] == world.pharma.slug
    # Residency was decided for every step at dispatch: rows at the inputs, shares at parties.
    decided = step_events(job, "residency.decided")
    kinds = {(e["data"]["step"], e["data"]["kind"]) for e in decided}
    assert ("input usz.patients", "process_rows") in kinds
    assert ("compute party 3", "receive_shares") in kinds
    assert all(e["data"]["allowed"] for e in decided)


@pytest.mark.django_db
def test_only_the_input_steps_go_out_first_and_the_outbox_resends_what_the_broker_missed(
    world, room, monkeypatch
):
    query = approved_union(world, room)
    sent: list[tuple[int, str, str]] = []

    def broker_down(*, args, queue, retry):
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks.run_step, "apply_async", broker_down)
    job = run_query(query=query, by=world.bob)
    assert not job.steps.exclude(dispatched_at=None).exists()

    def broker_up(*, args, queue, retry):
        sent.append((args[0], args[1], queue))

    monkeypatch.setattr(tasks.run_step, "apply_async", broker_up)
    assert dispatch_pending() == 1
    assert sorted(queue for _, _, queue in sent) == [f"site.{s}" for s in INPUT_SITES]
    assert dispatch_pending() == 0  # the compute steps wait for every input


@pytest.mark.django_db(transaction=True)
def test_a_worker_of_another_site_receiving_a_step_refuses_it_and_nothing_is_charged(
    world, room, site_worker, monkeypatch
):
    monkeypatch.setattr(outbox, "dispatch", lambda job_id: None)
    job = run_query(query=approved_union(world, room), by=world.bob)
    step = job.steps.get(kind=JobStep.Kind.INPUT, site__name="eu-frankfurt")

    # The Zurich worker gets Berlin's step, named as if it were its own.
    wait = site_worker("ch-zurich")
    tasks.run_step.apply_async(args=[step.pk, "ch-zurich"], queue="site.ch-zurich")
    assert wait() == ("jobs.run_step", "SUCCESS", "nothing to do")

    job.refresh_from_db()
    step.refresh_from_db()
    assert job.state == Job.State.FAILED and step.state == JobStep.State.FAILED
    assert "A worker at ch-zurich received the step 'input charite.patients'" in job.error
    assert not BudgetEntry.objects.filter(query=job.query).exists()
    [refused] = step_events(job, "access.refused")
    assert refused["data"]["site"] == "ch-zurich"
    assert step_events(job, "job.step.failed")
    assert not step_events(job, "key.released", "job.step.started")


def run_inputs(job: Job, monkeypatch) -> None:
    """Each owner's input step, run by its own site's worker code in this process."""
    for step in job.steps.filter(kind=JobStep.Kind.INPUT).select_related("site"):
        monkeypatch.setenv("CLEANROOM_SITE", step.site.name)
        assert tasks.run_step(step.pk, step.site.name) == "shared"


@pytest.mark.django_db(transaction=True)
def test_a_redelivered_input_step_runs_again_uncharged_but_a_redelivered_party_fails_the_job(
    world, room, share_inboxes, monkeypatch
):
    monkeypatch.setattr(outbox, "dispatch", lambda job_id: None)
    share_inboxes.start(*PARTY_SITES)
    job = run_query(query=approved_union(world, room), by=world.bob)
    # Berlin's worker claims its step and is lost; once its lease ran out, the sweep sends the
    # step again.
    berlin = job.steps.get(kind=JobStep.Kind.INPUT, site__name="eu-frankfurt")
    monkeypatch.setenv("CLEANROOM_SITE", "eu-frankfurt")
    claimed = start_step(berlin.pk, "eu-frankfurt")
    assert claimed.attempt == 1
    assert expire_leases(now=claimed.lease_expires_at + timedelta(seconds=1)) == [
        Expired(job.pk, berlin.name, "retried")
    ]
    run_inputs(job, monkeypatch)
    job.refresh_from_db()
    assert job.state == Job.State.RUNNING
    assert ledger_kinds(job) == ["reserve"] * 3  # reserved once, by the first step
    for step in job.steps.filter(kind=JobStep.Kind.INPUT):
        assert step.state == JobStep.State.SUCCEEDED
        assert step.attempt == (2 if step.pk == berlin.pk else 1)
        assert sorted(step.output["shares"]) == ["0", "1", "2"]
    assert len(step_events(job, "key.released")) == 3

    party = job.steps.select_related("site").get(kind=JobStep.Kind.COMPUTE, party=0)
    monkeypatch.setenv("CLEANROOM_SITE", party.site.name)
    claimed = start_step(party.pk, party.site.name)
    assert claimed.attempt == 1
    # A copy the broker delivers again while the party holds its lease does nothing.
    assert start_step(party.pk, party.site.name) is None
    assert Job.objects.get(pk=job.pk).state == Job.State.RUNNING
    # The party's worker dies mid-round; the broker delivers its step again after its lease
    # ran out, before the sweep came.
    later = claimed.lease_expires_at + timedelta(seconds=1)
    monkeypatch.setattr(timezone, "now", lambda: later)
    assert start_step(party.pk, party.site.name) is None
    job.refresh_from_db()
    assert job.state == Job.State.FAILED and "lost mid-computation" in job.error
    assert ledger_kinds(job) == ["refund"] * 3 + ["reserve"] * 3
    assert "wrapped_key" not in job.steps.get(kind=JobStep.Kind.DELIVER).output
    assert claim_delivery(job.pk) is None
    assert not Result.objects.filter(job=job).exists()


def ledger_kinds(job: Job) -> list[str]:
    return sorted(BudgetEntry.objects.filter(query=job.query).values_list("kind", flat=True))


@pytest.mark.django_db
def test_a_one_site_step_forged_for_an_mpc_job_is_refused_and_nothing_is_charged(
    world, room, monkeypatch, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        job = run_query(query=approved_union(world, room), by=world.bob)
    # A run_job message, as a TEE job's, naming the worker's own site: an MPC job has no one site.
    monkeypatch.setenv("CLEANROOM_SITE", "eu-frankfurt")
    assert start_attempt(job.pk, "eu-frankfurt") is None
    job.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert "A worker at eu-frankfurt received this job's step for no site." in job.error
    assert not BudgetEntry.objects.filter(query=job.query).exists()
    [refused] = step_events(job, "access.refused")
    assert refused["data"]["reason"] == "worker at eu-frankfurt received a step for no site"

"""Leases: a running job or step is held by the site that claimed it, renewed only by that site
and attempt, and once it runs out the sweep sends the job again where that is safe or ends it
with the reason, the ledger as its rules say. Time is driven by the sweep's `now`, never slept.
(Real site processes killed mid-job: test_site_deaths.py.)"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from cleanroom.audit.log import events_of, room_log_name
from cleanroom.celery import app as project_app
from jobs import tasks
from jobs.execution import leases, lifecycle, outbox
from jobs.execution.expiry import Expired, expire_leases
from jobs.execution.leases import Heartbeat, Lease, LeaseLost, renew
from jobs.execution.lifecycle import cancel_job, run_query, start_attempt
from jobs.execution.steps import claim_delivery, start_step
from jobs.models import BudgetEntry, Job, JobStep
from tests import factories
from tests.factories import JOIN_SQL, propose
from tests.jobs.mpc_support import PARTY_SITES, approved_union, three_hospitals

SITE = "eu-frankfurt-tee"


def approved(world, room):
    query = propose(room, world.bob, world.pharma, sql=JOIN_SQL)
    for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
        factories.decide(query=query, organization=org, by=owner, approve=True)
    query.refresh_from_db()
    return query


def ledger(job: Job) -> list[str]:
    return sorted(BudgetEntry.objects.filter(query=job.query).values_list("kind", flat=True))


def events(job: Job, type: str) -> list[dict]:
    return [
        e["data"]
        for e in events_of(room_log_name(job.query.room_id))
        if e["data"].get("job") == f"job:{job.pk}" and e["type"] == type
    ]


def later(held: Job | JobStep, seconds: float = 1) -> datetime:
    assert held.lease_expires_at is not None
    return held.lease_expires_at + timedelta(seconds=seconds)


@pytest.fixture
def sent(monkeypatch) -> list[int]:
    """The jobs handed to the outbox (kept off the broker: the test plays the worker)."""
    kept: list[int] = []
    monkeypatch.setattr(outbox, "dispatch", kept.append)
    return kept


@pytest.fixture
def tee_job(world, tmp_path, sent, monkeypatch) -> Job:
    """A TEE job whose first attempt its site has claimed."""
    monkeypatch.setenv("CLEANROOM_SITE", SITE)
    job = run_query(query=approved(world, world.study(tmp_path)), by=world.bob)
    claimed = start_attempt(job.pk, SITE)
    assert claimed is not None
    return claimed


# --- Renewal ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_only_the_site_and_attempt_holding_a_lease_renew_it(tee_job, monkeypatch):
    """A site that renews a job it does not run would keep a dead job from ever being sent
    again or ended: another site, and an attempt a later one replaced, are refused."""
    job = tee_job
    assert (job.lease_site.name, job.attempt) == (SITE, 1)
    granted = job.lease_expires_at
    for site, attempt in (("ch-zurich-tee", 1), ("eu-frankfurt", 1), (SITE, 2), (SITE, 0)):
        with pytest.raises(LeaseLost, match="does not hold the lease"):
            renew(Lease("job", job.pk, attempt), site)
    job.refresh_from_db()
    assert job.lease_expires_at == granted
    # Nothing kept it alive: the sweep finds it at the time it runs out.
    assert [e.outcome for e in expire_leases(now=later(job))] == ["retried"]

    # The holder renews (here twenty seconds on), so its lease outlives the first expiry...
    job = start_attempt(job.pk, SITE)
    first = job.lease_expires_at
    monkeypatch.setattr(timezone, "now", lambda: first - timedelta(seconds=10))
    renewed = renew(Lease.of(job), SITE)
    monkeypatch.undo()
    assert renewed == first + leases.length() - timedelta(seconds=10)
    assert expire_leases(now=first + timedelta(seconds=1)) == []
    # ...and the attempt it replaced, though at the same site, is refused.
    with pytest.raises(LeaseLost):
        renew(Lease("job", job.pk, 1), SITE)
    # A job that is not running has no lease to renew.
    [_] = expire_leases(now=renewed + timedelta(seconds=1))
    with pytest.raises(LeaseLost):
        renew(Lease.of(job), SITE)


@pytest.mark.django_db
def test_a_host_that_ignores_a_cancellation_cannot_keep_the_job(world, tee_job):
    """It would hold the job and its reservation for as long as it liked, renewing."""
    cancel_job(job=tee_job, by=world.bob)
    with pytest.raises(LeaseLost):
        renew(Lease.of(tee_job), SITE)
    assert expire_leases(now=later(tee_job)) == [Expired(tee_job.pk, None, "cancelled")]


@pytest.mark.django_db
def test_a_copy_of_the_task_delivered_while_the_lease_is_live_claims_nothing(tee_job):
    assert start_attempt(tee_job.pk, SITE) is None
    job = Job.objects.get(pk=tee_job.pk)
    assert (job.state, job.attempt) == (Job.State.RUNNING, 1)
    assert ledger(job) == ["reserve", "reserve"]


# --- The sweep, for a job of one site ----------------------------------------------------------


@pytest.mark.django_db
def test_a_job_lost_before_its_keys_left_is_sent_again_with_its_reservation(
    tee_job, sent, django_capture_on_commit_callbacks
):
    job = tee_job
    assert expire_leases(now=job.lease_expires_at) == []  # not run out yet
    with django_capture_on_commit_callbacks(execute=True):
        assert expire_leases(now=later(job)) == [Expired(job.pk, None, "retried")]
    assert sent == [job.pk]  # the outbox sends it again

    job.refresh_from_db()
    assert (job.state, job.attempt, job.dispatched_at) == (Job.State.QUEUED, 1, None)
    assert job.progress_message.startswith(f"Sent again: its host at {SITE} stopped renewing")
    assert ledger(job) == ["reserve", "reserve"]  # kept for the next attempt
    [expired] = events(job, "job.lease_expired")
    assert expired == {
        "job": f"job:{job.pk}",
        "site": SITE,
        "attempt": 1,
        "expired_at": job.lease_expires_at.isoformat(),
        "outcome": "retried",
    }
    job = start_attempt(job.pk, SITE)
    assert job.attempt == 2 and ledger(job) == ["reserve", "reserve"]


@pytest.mark.django_db
def test_a_job_lost_after_its_keys_left_fails_and_stays_spent(tee_job):
    lifecycle.charge_at_key_release(tee_job.pk)
    assert expire_leases(now=later(tee_job)) == [Expired(tee_job.pk, None, "failed")]

    job = Job.objects.get(pk=tee_job.pk)
    assert job.state == Job.State.FAILED
    assert job.error == (
        f"The keys were released to its enclave, then its host at {SITE} stopped renewing the "
        "job's lease: the job is charged and does not run again with fresh noise."
    )
    assert ledger(job) == ["reserve", "reserve", "spend", "spend"]
    assert start_attempt(job.pk, SITE) is None  # a late copy of its task changes nothing
    assert events(job, "job.failed")[0]["reason"] == job.error


@pytest.mark.django_db
def test_a_cancelled_job_whose_host_died_ends_cancelled_and_refunded(world, tee_job):
    cancel_job(job=tee_job, by=world.bob)  # asks the host, which never reports again
    assert expire_leases(now=later(tee_job)) == [Expired(tee_job.pk, None, "cancelled")]
    job = Job.objects.get(pk=tee_job.pk)
    assert job.state == Job.State.CANCELLED and "stopped renewing" in job.error
    assert ledger(job) == ["refund", "refund", "reserve", "reserve"]
    assert events(job, "job.lease_expired")[0]["outcome"] == "cancelled"


@pytest.mark.django_db
def test_a_job_left_running_without_a_lease_is_swept_at_once(tee_job):
    """A job running when leases came (it has none) is the sweep's at its first pass."""
    Job.objects.filter(pk=tee_job.pk).update(lease_expires_at=None)
    assert expire_leases() == [Expired(tee_job.pk, None, "retried")]


# --- The sweep, for a job of steps (MPC) -------------------------------------------------------


@pytest.fixture
def mpc_job(world, tmp_path, sent, share_inboxes, monkeypatch) -> Job:
    """An MPC job whose input steps all ran (their shares are sealed to the parties, in their
    inboxes)."""
    share_inboxes.start(*PARTY_SITES)
    job = run_query(query=approved_union(world, three_hospitals(world, tmp_path)), by=world.bob)
    for step in job.steps.filter(kind=JobStep.Kind.INPUT).select_related("site"):
        monkeypatch.setenv("CLEANROOM_SITE", step.site.name)
        assert tasks.run_step(step.pk, step.site.name) == "shared"
    return job


def party(job: Job, index: int) -> JobStep:
    return job.steps.select_related("site").get(kind=JobStep.Kind.COMPUTE, party=index)


@pytest.mark.django_db(transaction=True)
def test_a_compute_party_whose_lease_ran_out_fails_the_job_refunded(mpc_job, monkeypatch):
    step = party(mpc_job, 0)
    monkeypatch.setenv("CLEANROOM_SITE", step.site.name)
    step = start_step(step.pk, step.site.name)
    assert expire_leases(now=later(step)) == [Expired(mpc_job.pk, step.name, "failed")]

    job = Job.objects.get(pk=mpc_job.pk)
    assert job.state == Job.State.FAILED and job.charged_at is None
    assert job.error == (
        f"The step 'compute party 1' at {step.site.name} stopped renewing its lease: an MPC "
        "round cannot resume with a new party process."
    )
    assert ledger(job) == ["refund"] * 3 + ["reserve"] * 3
    [expired] = events(job, "job.lease_expired")
    assert (expired["step"], expired["kind"], expired["outcome"]) == (
        step.name,
        "compute",
        "failed",
    )


@pytest.mark.django_db(transaction=True)
def test_a_delivery_whose_lease_ran_out_fails_its_charged_job_spent(mpc_job, monkeypatch):
    # Two of three parties stored their noisy output shares (t + 1): the delivery may open.
    JobStep.objects.filter(job=mpc_job, kind=JobStep.Kind.COMPUTE, party__in=[0, 1]).update(
        state=JobStep.State.SUCCEEDED
    )
    monkeypatch.setenv("CLEANROOM_SITE", party(mpc_job, 1).site.name)
    assert claim_delivery(mpc_job.pk) is not None
    assert claim_delivery(mpc_job.pk) is None  # another party's worker, while it is live
    delivery = mpc_job.steps.get(kind=JobStep.Kind.DELIVER)
    assert delivery.lease_site == party(mpc_job, 1).site

    assert expire_leases(now=later(delivery)) == [Expired(mpc_job.pk, "delivery", "failed")]
    job = Job.objects.get(pk=mpc_job.pk)
    assert job.state == Job.State.FAILED and job.charged_at is not None
    assert "stopped renewing its lease after the job was charged" in job.error
    assert ledger(job) == ["reserve"] * 3 + ["spend"] * 3
    assert job.steps.get(kind=JobStep.Kind.DELIVER).output["shredded"]


@pytest.mark.django_db(transaction=True)
def test_a_cancelled_mpc_job_whose_steps_wait_for_absent_sites_ends_cancelled(world, mpc_job):
    """Its compute steps are queued at party sites whose workers are gone: nothing runs that
    would see the cancellation, so the sweep ends it."""
    cancel_job(job=mpc_job, by=world.bob)
    assert expire_leases() == [Expired(mpc_job.pk, None, "cancelled")]
    job = Job.objects.get(pk=mpc_job.pk)
    assert job.state == Job.State.CANCELLED
    assert ledger(job) == ["refund"] * 3 + ["reserve"] * 3


# --- The heartbeat and the beat ---------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_worker_renews_its_lease_while_it_works_and_stops_once_it_is_lost(
    tee_job, settings, monkeypatch
):
    settings.JOB_LEASE_SECONDS = 0.3  # a beat every 0.1 s
    renewed: list[datetime] = []
    twice, refused = threading.Event(), threading.Event()

    def counted(lease: Lease, site: str) -> datetime:
        try:
            renewed.append(renew(lease, site))
        except LeaseLost:
            refused.set()
            raise
        if len(renewed) == 2:
            twice.set()
        return renewed[-1]

    monkeypatch.setattr(leases, "renew", counted)
    with Heartbeat(Lease.of(tee_job), SITE) as beat:
        assert twice.wait(30), "the heartbeat did not renew the lease"
        assert Job.objects.get(pk=tee_job.pk).lease_expires_at >= renewed[1]
        # The sweep takes the job from it (as if its renewals had stopped long ago).
        [expired] = expire_leases(now=renewed[-1] + timedelta(days=1))
        assert expired.outcome == "retried"
        assert refused.wait(30), "the heartbeat did not learn it lost the lease"
    assert beat.lost


def test_beat_runs_the_sweep_as_often_as_the_docs_say(settings):
    assert settings.CELERY_BEAT_SCHEDULE["expire-leases"] == {
        "task": "jobs.expire_leases",
        "schedule": settings.JOB_LEASE_SWEEP_SECONDS,
    }
    assert "jobs.expire_leases" in project_app.tasks

"""The job runner's guarantees, short of the enclave: refusals, the outbox, the worker's site."""

from __future__ import annotations

from datetime import timedelta

import kombu.pools
import pytest
import redis
from django.core.exceptions import PermissionDenied
from kombu import Connection

from cleanroom.audit.log import events_of, room_log_name
from cleanroom.celery import app
from jobs.engines.tee.engine import NO_ENCLAVE_SITE, TeeEngine
from jobs.execution import lifecycle
from jobs.execution.expiry import expire_leases
from jobs.execution.lifecycle import fail_job, run_query, start_attempt
from jobs.execution.outbox import dispatch_pending
from jobs.execution.records import JobRefused
from jobs.models import BudgetEntry, Job
from jobs.queries.services import QueryRefused, plan_for
from parties.models import Site
from tests import factories
from tests.factories import JOIN_SQL, api, propose

pytestmark = pytest.mark.django_db

REDIS = "redis://127.0.0.1:6379/15"


@pytest.fixture
def study(world, tmp_path):
    return world.study(tmp_path)


def approved(world, room, sql=JOIN_SQL, **values):
    query = propose(room, world.bob, world.pharma, sql=sql, **values)
    for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
        factories.decide(query=query, organization=org, by=owner, approve=True)
    query.refresh_from_db()
    return query


def use_broker(url: str) -> None:
    """Point the Celery app at another broker. The app and kombu cache connection and producer
    pools on first use (kombu in a process-wide registry), so all are dropped and rebuilt."""
    app.conf.broker_url = url
    kombu.pools.reset()
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def broker():
    """The real Redis broker, on a database of its own, emptied before and after."""
    client = redis.Redis.from_url(REDIS)
    client.flushdb()
    previous = app.conf.broker_url
    use_broker(REDIS)
    yield client
    use_broker(previous)
    client.flushdb()


def test_a_query_that_is_not_approved_does_not_run(world, study):
    query = propose(study, world.bob, world.pharma, sql=JOIN_SQL)
    with pytest.raises(QueryRefused, match="not approved"):
        run_query(query=query, by=world.bob)
    assert not Job.objects.exists()


def test_an_owner_cannot_start_a_run(world, study):
    query = approved(world, study)
    with pytest.raises(PermissionDenied, match="Only analysts"):
        run_query(query=query, by=world.alice)
    # Through the API, with the owner's own token: forbidden, and no job exists.
    response = api(world.alice).post(f"/api/rooms/{study.slug}/queries/{query.pk}/run/")
    assert response.status_code == 403
    assert response.json()["error"]["message"] == (
        "Only analysts of a member organisation run queries."
    )
    assert not Job.objects.exists()


def test_a_query_runs_at_most_once(world, study, broker):
    query = approved(world, study)
    run_query(query=query, by=world.bob)
    query.refresh_from_db()
    with pytest.raises((JobRefused, QueryRefused)):
        run_query(query=query, by=world.bob)
    assert Job.objects.filter(query=query).count() == 1


def test_a_job_goes_to_its_sites_queue_only_after_commit(
    world, study, broker, django_capture_on_commit_callbacks
):
    query = approved(world, study)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = run_query(query=query, by=world.bob)
        assert broker.llen("site.eu-frankfurt-tee") == 0
    assert len(callbacks) == 1
    callbacks[0]()
    assert broker.llen("site.eu-frankfurt-tee") == 1
    assert broker.llen("celery") == 0 and broker.llen("control") == 0
    job.refresh_from_db()
    assert job.dispatched_at is not None
    types = [e["type"] for e in events_of(room_log_name(study.pk))]
    assert "job.dispatched" in types and "residency.decided" in types


def test_a_broker_outage_at_dispatch_loses_nothing(
    world, study, broker, django_capture_on_commit_callbacks
):
    query = approved(world, study)
    use_broker("redis://127.0.0.1:9/0")  # nothing listens there
    with django_capture_on_commit_callbacks(execute=True):
        job = run_query(query=query, by=world.bob)
    job.refresh_from_db()
    assert job.state == Job.State.QUEUED and job.dispatched_at is None

    use_broker(REDIS)
    assert dispatch_pending() == 1
    assert dispatch_pending() == 0
    with Connection(REDIS) as connection:
        message = connection.SimpleQueue("site.eu-frankfurt-tee").get(timeout=5)
        assert message.headers["task"] == "jobs.run_job"
        args, _kwargs, _embed = message.payload
        assert args == [job.pk, "eu-frankfurt-tee"]


def test_a_worker_of_another_site_refuses_the_step_and_nothing_is_charged(
    world, study, monkeypatch, django_capture_on_commit_callbacks
):
    query = approved(world, study)
    with django_capture_on_commit_callbacks(execute=False):
        job = run_query(query=query, by=world.bob)
    monkeypatch.setenv("CLEANROOM_SITE", "us-virginia-tee")
    assert start_attempt(job.pk, "eu-frankfurt-tee") is None
    job.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert "us-virginia-tee received this job's step" in job.error
    assert not BudgetEntry.objects.filter(query=query).exists()
    types = [e["type"] for e in events_of(room_log_name(study.pk))]
    assert "access.refused" in types and types[-1] == "job.failed"


def test_starting_an_attempt_reserves_once_and_a_failure_before_noise_refunds(
    world, study, monkeypatch, django_capture_on_commit_callbacks
):
    query = approved(world, study)
    with django_capture_on_commit_callbacks(execute=False):
        job = run_query(query=query, by=world.bob)
    monkeypatch.setenv("CLEANROOM_SITE", "eu-frankfurt-tee")
    first = start_attempt(job.pk, "eu-frankfurt-tee")
    assert first.attempt == 1
    # A copy the broker delivers again while the first attempt holds its lease does nothing.
    assert start_attempt(job.pk, "eu-frankfurt-tee") is None
    # The first attempt's worker is lost: its lease runs out and the sweep sends the job again.
    expire_leases(now=first.lease_expires_at + timedelta(seconds=1))
    assert start_attempt(job.pk, "eu-frankfurt-tee").attempt == 2
    assert BudgetEntry.objects.filter(query=query, kind="reserve").count() == 2  # two datasets
    fail_job(job.pk, "the enclave stopped")
    fail_job(job.pk, "the enclave stopped")
    kinds = sorted(BudgetEntry.objects.filter(query=query).values_list("kind", flat=True))
    assert kinds == ["refund", "refund", "reserve", "reserve"]


def test_a_failure_after_the_keys_were_released_spends_instead_of_refunding(
    world, study, monkeypatch, django_capture_on_commit_callbacks
):
    query = approved(world, study)
    with django_capture_on_commit_callbacks(execute=False):
        job = run_query(query=query, by=world.bob)
    monkeypatch.setenv("CLEANROOM_SITE", "eu-frankfurt-tee")
    start_attempt(job.pk, "eu-frankfurt-tee")
    lifecycle.charge_at_key_release(job.pk)
    fail_job(job.pk, "lost after the keys left")
    kinds = sorted(BudgetEntry.objects.filter(query=query).values_list("kind", flat=True))
    assert kinds == ["reserve", "reserve", "spend", "spend"]


def test_placing_a_tee_job_with_no_tee_site_left_is_a_plan_problem(world, study):
    plan = plan_for(propose(study, world.bob, world.pharma, sql=JOIN_SQL, submit=False))
    Site.objects.filter(kind=Site.Kind.TEE).update(active=False)
    placed = TeeEngine.place(plan.parsed, plan.contributions)
    assert placed.steps == [] and placed.problems == [NO_ENCLAVE_SITE]

"""Site processes killed outright mid-job (SIGKILL: no handler, no `finally`), run as production
runs them: each site's worker a process of its own under the demo's supervisor, which restarts
it, on the embedded broker (which never delivers a lost task again) and on RabbitMQ (which
does, once the worker is back). Each job ends once the sweep runs after its lease ran out: sent
again and released, or failed with the reason; charged at most once, the ledger consistent, no
enclave or MPC party left running. The tests call the sweep with the time the lease runs out
instead of waiting for it, and print how long the job took from the kill to its end beyond
that wait (which is JOB_LEASE_SECONDS + JOB_LEASE_SWEEP_SECONDS at most)."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest

from cleanroom.audit.log import events_of, room_log_name
from jobs import tasks
from jobs.execution.expiry import Expired, expire_leases
from jobs.execution.lifecycle import run_query
from jobs.models import BudgetEntry, Job, JobStep, Result
from tests import factories
from tests.factories import JOIN_SQL, propose
from tests.jobs.mpc_support import PARTY_SITES, approved_union, three_hospitals
from tests.jobs.site_processes import handles, kill_and_reap, tail, wait_gone

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TEE_SITE = "eu-frankfurt-tee"
INPUT_SITE = "eu-frankfurt"
PARTY_SITE = "eu-paris-mpc"
ENDED = ("succeeded", "failed", "cancelled")


def approved(world, room):
    query = propose(room, world.bob, world.pharma, sql=JOIN_SQL)
    for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
        factories.decide(query=query, organization=org, by=owner, approve=True)
    query.refresh_from_db()
    return query


def ledger(job: Job) -> list[str]:
    return sorted(BudgetEntry.objects.filter(query=job.query).values_list("kind", flat=True))


def types(job: Job) -> list[str]:
    return [
        e["type"]
        for e in events_of(room_log_name(job.query.room_id))
        if e["data"].get("job") == f"job:{job.pk}"
    ]


def wait_for(listener, job: Job, until, log, timeout: float = 120) -> dict:
    """The first committed change to `job` that `until` accepts (PostgreSQL notifications)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        for notice in listener.notifies(timeout=min(left, 1), stop_after=1):
            change = json.loads(notice.payload)
            if change["id"] == job.pk and until(change):
                return change
    pytest.fail(f"job {job.pk} did not get there in {timeout} s:\n{tail(log)}")


def sweep_when_it_runs_out(held: Job | JobStep) -> list[Expired]:
    held.refresh_from_db()
    assert held.lease_expires_at is not None
    return expire_leases(now=held.lease_expires_at + timedelta(seconds=1))


def measured(what: str, broker: str, seconds: float) -> None:
    print(f"\n[measured] {what} on the {broker} broker: {seconds:.1f} s from SIGKILL to its end")


def test_a_tee_host_killed_while_its_enclave_waits_for_keys_runs_again_and_releases_once(
    world, tmp_path, site_broker, site_processes, job_changes
):
    host = site_processes.start(TEE_SITE, holds=("attested",))
    job = run_query(query=approved(world, world.study(tmp_path)), by=world.bob)
    worker, [enclave] = host.held("attested")
    enclave_handle = handles([enclave])

    killed = time.monotonic()
    kill_and_reap(worker)
    assert not wait_gone(enclave_handle, timeout=10), "the enclave outlived its host"
    job.refresh_from_db()
    assert (job.state, job.attempt, job.charged_at) == (Job.State.RUNNING, 1, None)

    # Whatever the broker does with the lost task, the lease runs out and the sweep sends the
    # job again; the restarted worker runs it.
    assert sweep_when_it_runs_out(job) == [Expired(job.pk, None, "retried")]
    done = wait_for(job_changes, job, lambda c: c["state"] in ENDED, host.log)
    measured(
        "the TEE host's worker, before the keys left", site_broker.name, time.monotonic() - killed
    )

    job.refresh_from_db()
    assert done["state"] == "succeeded", job.error
    assert job.attempt == 2
    assert Result.objects.filter(job=job).count() == 1
    assert ledger(job) == ["reserve", "reserve", "spend", "spend"]
    seen = types(job)
    assert seen.count("job.charged") == 1 and seen.count("result.released") == 1
    assert seen.count("job.lease_expired") == 1 and "budget.refunded" not in seen
    assert f"The worker of {TEE_SITE} stopped (killed by SIGKILL)" in " ".join(site_processes.said)


def test_a_tee_host_killed_after_the_keys_left_fails_spent_and_never_runs_again(
    world, tmp_path, site_broker, site_processes, job_changes
):
    host = site_processes.start(TEE_SITE, holds=("keys released",))
    job = run_query(query=approved(world, world.study(tmp_path)), by=world.bob)
    worker, [enclave] = host.held("keys released")
    enclave_handle = handles([enclave])

    killed = time.monotonic()
    kill_and_reap(worker)
    assert not wait_gone(enclave_handle, timeout=10), "the enclave outlived its host"
    assert sweep_when_it_runs_out(job) == [Expired(job.pk, None, "failed")]
    measured(
        "the TEE host's worker, after the keys left", site_broker.name, time.monotonic() - killed
    )

    job.refresh_from_db()
    assert (job.state, job.attempt) == (Job.State.FAILED, 1)
    assert "the job is charged and does not run again with fresh noise" in job.error
    assert not Result.objects.filter(job=job).exists()
    assert ledger(job) == ["reserve", "reserve", "spend", "spend"]
    seen = types(job)
    assert seen.count("job.charged") == 1 and seen.count("job.started") == 1
    assert "budget.refunded" not in seen


def test_an_mpc_job_outlives_its_input_worker_and_fails_cleanly_when_a_party_host_dies(
    world, tmp_path, site_broker, site_processes, share_inboxes, job_changes, monkeypatch
):
    room = three_hospitals(world, tmp_path)
    share_inboxes.start(*PARTY_SITES)
    owner = site_processes.start(INPUT_SITE, holds=("input",))
    party_host = site_processes.start(PARTY_SITE, holds=("party",))
    job = run_query(query=approved_union(world, room), by=world.bob)
    # The other owners' input steps run here, in this process; no worker serves the other
    # two party sites, so the party at Paris waits for peers that never come.
    for step in job.steps.filter(kind=JobStep.Kind.INPUT).exclude(site__name=INPUT_SITE):
        monkeypatch.setenv("CLEANROOM_SITE", step.site.name)
        assert tasks.run_step(step.pk, step.site.name) == "shared"

    # Berlin's input worker dies mid-step: its step is sent again and runs at the restarted
    # worker, uncharged.
    worker, _ = owner.held("input")
    killed = time.monotonic()
    kill_and_reap(worker)
    frankfurt = job.steps.get(kind=JobStep.Kind.INPUT, site__name=INPUT_SITE)
    assert sweep_when_it_runs_out(frankfurt) == [Expired(job.pk, frankfurt.name, "retried")]
    every_input_done = 5 + 85 * 3 // job.steps.count()  # steps._progress
    wait_for(job_changes, job, lambda c: c["progress"] >= every_input_done, owner.log)
    measured(
        "an MPC input worker (until its step ran again)",
        site_broker.name,
        time.monotonic() - killed,
    )
    frankfurt.refresh_from_db()
    assert (frankfurt.state, frankfurt.attempt) == (JobStep.State.SUCCEEDED, 2)

    # The party's host dies while its party waits for its peers: the party dies with it, and
    # the job fails, refunded (no noisy value existed).
    worker, [party] = party_host.held("party")
    party_handle = handles([party])
    killed = time.monotonic()
    kill_and_reap(worker)
    assert not wait_gone(party_handle, timeout=10), "the MPC party outlived its host"
    paris = job.steps.get(kind=JobStep.Kind.COMPUTE, site__name=PARTY_SITE)
    assert sweep_when_it_runs_out(paris) == [Expired(job.pk, paris.name, "failed")]
    measured("an MPC party's host", site_broker.name, time.monotonic() - killed)

    job.refresh_from_db()
    assert job.state == Job.State.FAILED and job.charged_at is None
    assert "an MPC round cannot resume with a new party process" in job.error
    assert ledger(job) == ["refund"] * 3 + ["reserve"] * 3
    seen = types(job)
    assert seen.count("job.lease_expired") == 2 and "job.charged" not in seen
    assert not Result.objects.filter(job=job).exists()

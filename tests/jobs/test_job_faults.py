"""Faults and attacks around a running job: a worker lost mid-job, an enclave killed, many jobs
starting at once against one budget, approvals gone stale in the queue, cancellation, and
everyone who is not a receiver asking for the result. Each ends in one clean state: at most one
result, at most one charge per dataset, a refund whenever no noisy value exists."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection, connections, transaction
from django.test import Client
from django.utils import timezone

from cleanroom.audit.log import events_of, room_log_name
from cleanroom.celery import app as project_app
from jobs import tasks
from jobs.budget import ledger as budget_ledger
from jobs.budget.ledger import BudgetExceeded
from jobs.engines.tee import engine as tee_engine
from jobs.execution import lifecycle, outbox
from jobs.execution.expiry import expire_leases
from jobs.execution.lifecycle import MAX_ATTEMPTS, cancel_job, run_query, start_attempt
from jobs.execution.outbox import dispatch as send_to_broker
from jobs.models import Approval, BudgetEntry, Job, Query, Result
from parties.models import Dataset
from tests import factories
from tests.engines.support import order_of
from tests.engines.support import tee_engine as tee_engine_of_worker
from tests.factories import JOIN_SQL, api, propose
from tests.jobs.site_processes import children, handles, kill_and_reap, use_broker, wait_gone
from tests.privacy.support import recalibrated

SITE = "eu-frankfurt-tee"
QUEUE = f"site.{SITE}"


def approved(world, room, **values) -> Query:
    query = propose(room, world.bob, world.pharma, sql=JOIN_SQL, **values)
    for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
        factories.decide(query=query, organization=org, by=owner, approve=True)
    query.refresh_from_db()
    return query


def ledger(query: Query) -> list[str]:
    return sorted(BudgetEntry.objects.filter(query=query).values_list("kind", flat=True))


def events(job: Job, *types: str) -> list[dict]:
    return [
        e
        for e in events_of(room_log_name(job.query.room_id))
        if e["data"].get("job") == f"job:{job.pk}" and (not types or e["type"] in types)
    ]


def types(job: Job) -> list[str]:
    return [e["type"] for e in events(job)]


def enclaves() -> list[int]:
    """Enclave processes this test process started."""
    found = []
    for pid in children(os.getpid()):
        with contextlib.suppress(FileNotFoundError):
            if b"dataplane.enclave" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


@pytest.fixture
def study(world, tmp_path):
    return world.study(tmp_path)


@pytest.fixture
def held(monkeypatch):
    """Jobs run_query creates stay off the broker until the test sends them (send_to_broker):
    the worker side is then driven step by step."""
    monkeypatch.setenv("CLEANROOM_SITE", SITE)
    kept: list[int] = []
    monkeypatch.setattr(outbox, "dispatch", kept.append)
    return kept


def pause_progress_at(monkeypatch, percent: int) -> tuple[threading.Event, threading.Event]:
    """Hold the worker at its progress report of `percent` until the test lets it go on."""
    reached, go_on = threading.Event(), threading.Event()
    report = lifecycle.report_progress

    def held_report(job_id: int, at: int, message: str) -> bool:
        if at == percent:
            reached.set()
            assert go_on.wait(60), "the test never let the worker go on"
        return report(job_id, at, message)

    monkeypatch.setattr(lifecycle, "report_progress", held_report)
    return reached, go_on


# --- A worker or an enclave lost mid-job ------------------------------------------------------


class WorkerLost(BaseException):
    """The worker process vanished: nothing after this point runs, no handler, no failure."""


@pytest.mark.django_db(transaction=True)
def test_a_worker_lost_mid_job_is_redelivered_and_the_job_released_and_charged_once(
    world, study, held, site_worker
):
    job = run_query(query=approved(world, study), by=world.bob)
    first = start_attempt(job.pk, SITE)

    def lost_once_attested(percent: int, message: str) -> bool:
        lifecycle.report_progress(job.pk, percent, message)
        if percent == 25:
            raise WorkerLost
        return True

    # Lost before the keys were released: the next attempt may start a new enclave (lost
    # after that, it may not: tests/privacy/test_dishonest_host.py).
    with pytest.raises(WorkerLost):
        tee_engine_of_worker().run(order_of(first), lost_once_attested)
    assert not enclaves()  # the engine's enclave died with its worker
    job.refresh_from_db()
    assert (job.state, job.attempt, job.progress) == (Job.State.RUNNING, 1, 25)
    assert ledger(job.query) == ["reserve", "reserve"]

    # The broker delivers the unacknowledged task again while the lost attempt's lease is live:
    # the copy does nothing (it cannot tell a dead attempt from a slow one).
    wait = site_worker(SITE)
    assert send_to_broker(job.pk)
    assert wait() == ("jobs.run_job", "SUCCESS", "nothing to do")
    job.refresh_from_db()
    assert (job.state, job.attempt) == (Job.State.RUNNING, 1)

    # Its lease runs out: the sweep sends the job again, and the next attempt releases.
    held.clear()
    [expired] = expire_leases(now=job.lease_expires_at + timedelta(seconds=1))
    assert (expired.outcome, held) == ("retried", [job.pk])
    assert send_to_broker(job.pk)
    outcome = wait()
    job.refresh_from_db()
    assert outcome == ("jobs.run_job", "SUCCESS", "released"), job.error
    assert (job.state, job.attempt) == (Job.State.SUCCEEDED, 2)
    assert Result.objects.filter(job=job).count() == 1
    assert ledger(job.query) == ["reserve", "reserve", "spend", "spend"]
    assert [e["data"]["attempt"] for e in events(job, "job.started")] == [1, 2]
    [lapsed] = events(job, "job.lease_expired")
    assert lapsed["data"] | {"expired_at": None} == {
        "job": f"job:{job.pk}",
        "site": SITE,
        "attempt": 1,
        "expired_at": None,
        "outcome": "retried",
    }
    seen = types(job)
    assert seen.count("budget.reserved") == 2 and seen.count("budget.spent") == 2
    assert seen.count("result.released") == 1 and "budget.refunded" not in seen
    # The first enclave's document never reached the key service; the second's did.
    assert seen.count("attestation.verified") == 1 and seen.count("key.released") == 2

    # A duplicate delivery after the release finds nothing to do.
    tasks.run_job.apply_async(args=[job.pk, SITE], queue=QUEUE)
    assert wait() == ("jobs.run_job", "SUCCESS", "nothing to do")
    assert Result.objects.filter(job=job).count() == 1
    assert ledger(job.query) == ["reserve", "reserve", "spend", "spend"]


@pytest.mark.django_db
def test_an_enclave_killed_before_it_asks_for_keys_fails_the_job_and_refunds(
    world, study, held, monkeypatch
):
    job = run_query(query=approved(world, study), by=world.bob)
    message = tee_engine._job_message
    started: list[subprocess.Popen] = []
    popen = subprocess.Popen

    def start(*args, **kwargs) -> subprocess.Popen:
        started.append(popen(*args, **kwargs))
        return started[-1]

    def kill_the_enclave_first(job: Job, config) -> dict:
        [enclave] = started
        kill_and_reap(enclave.pid)
        return message(job, config)

    # The engine's own process handle: the enclave it started, whatever else runs.
    monkeypatch.setattr(tee_engine.subprocess, "Popen", start)
    monkeypatch.setattr(tee_engine, "_job_message", kill_the_enclave_first)
    assert tasks.run_job(job.pk, SITE) == "failed"

    job.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert "enclave stopped" in job.error
    assert not Result.objects.filter(job=job).exists()
    assert ledger(job.query) == ["refund", "refund", "reserve", "reserve"]
    assert "key.released" not in types(job) and types(job)[-1] == "job.failed"


@pytest.mark.django_db
def test_an_enclave_killed_while_waiting_for_its_keys_is_charged_as_its_keys_left(
    world, study, held, monkeypatch
):
    """Once attested, the enclave's keys leave the key service whether or not it still lives:
    the key service cannot tell a dead enclave from a host that says so, so the job is charged."""
    job = run_query(query=approved(world, study), by=world.bob)
    report = lifecycle.report_progress

    def kill_the_enclave_once_attested(job_id: int, percent: int, message: str) -> bool:
        if percent == 25:
            [enclave] = enclaves()
            kill_and_reap(enclave)
        return report(job_id, percent, message)

    monkeypatch.setattr(lifecycle, "report_progress", kill_the_enclave_once_attested)
    assert tasks.run_job(job.pk, SITE) == "failed"

    job.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert "enclave stopped" in job.error
    assert not Result.objects.filter(job=job).exists()
    assert ledger(job.query) == ["reserve", "reserve", "spend", "spend"]
    assert types(job).count("key.released") == 2 and types(job)[-1] == "job.failed"


@pytest.mark.django_db
def test_after_its_last_attempt_a_lost_job_fails_cleanly_and_refunds(
    world, study, held, monkeypatch
):
    job = run_query(query=approved(world, study), by=world.bob)
    for attempt in range(1, MAX_ATTEMPTS):
        claimed = start_attempt(job.pk, SITE)
        assert claimed.attempt == attempt
        # Its worker is lost; the lease runs out and the sweep sends the job again.
        [expired] = expire_leases(now=claimed.lease_expires_at + timedelta(seconds=1))
        assert expired.outcome == "retried"
    last = start_attempt(job.pk, SITE)
    assert last.attempt == MAX_ATTEMPTS

    # Lost too: the sweep ends it...
    after = last.lease_expires_at + timedelta(seconds=1)
    with transaction.atomic():
        assert [e.outcome for e in expire_leases(now=after)] == ["failed"]
        job.refresh_from_db()
        assert job.state == Job.State.FAILED
        assert job.error == (
            f"Gave up after {MAX_ATTEMPTS} attempts: its host at {SITE} stopped renewing the "
            "job's lease."
        )
        transaction.set_rollback(True)
    # ...or a copy the broker delivers again before the sweep comes does.
    monkeypatch.setattr(timezone, "now", lambda: after)
    assert start_attempt(job.pk, SITE) is None

    job.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert job.error == f"Gave up after {MAX_ATTEMPTS} attempts."
    assert ledger(job.query) == ["refund", "refund", "reserve", "reserve"]
    assert types(job).count("budget.refunded") == 2


REDIS_WORKER_DB = "redis://127.0.0.1:6379/13"
# Keys of this test process's own on the broker: concurrent test runs never share a queue.
KEY_PREFIX = f"cleanroom-faults-{os.getpid()}:"
# The project's worker, with the broker keys above (not settable from the environment).
WORKER = (
    "import sys; from cleanroom.celery import app; "
    "app.conf.broker_transport_options = {'global_keyprefix': sys.argv[1]}; "
    "app.worker_main(sys.argv[2:])"
)


def forget_broker_keys() -> None:
    client = redis.Redis.from_url(REDIS_WORKER_DB)
    for key in client.scan_iter(f"{KEY_PREFIX}*"):
        client.delete(key)


def wait_for_job(listener, worker: subprocess.Popen, log: Path, until, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        assert worker.poll() is None, f"the worker exited:\n{log.read_text()[-3000:]}"
        for notice in listener.notifies(timeout=min(left, 1), stop_after=1):
            change = json.loads(notice.payload)
            if until(change):
                return change
    pytest.fail(f"no such job change within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_pool_process_sigkilled_after_the_keys_left_takes_its_enclave_and_never_reruns(
    world, study, job_changes, tmp_path
):
    forget_broker_keys()
    db = connection.settings_dict
    log = tmp_path / "worker.log"
    env = {
        **os.environ,
        "CLEANROOM_BOOTSTRAP": "0",
        "CLEANROOM_SITE": SITE,
        "DATABASE_URL": (
            f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:"
            f"{db['PORT'] or 5432}/{db['NAME']}"
        ),
        "CELERY_BROKER_URL": REDIS_WORKER_DB,
        "CLEANROOM_STORAGE_ROOT": str(settings.STORAGE_ROOT),
        "CLEANROOM_KEY_ROOT": str(settings.KEY_SERVICE_ROOT),
        "TEE_SIMULATED_ROOT_DIR": str(settings.TEE_SIMULATED_ROOT_DIR),
        # Checkpoint signing stays with this process; the worker only appends events.
        "CLEANROOM_AUDIT_SIGNING": "off",
    }
    previous = project_app.conf.broker_url, project_app.conf.broker_transport_options
    use_broker(REDIS_WORKER_DB, {"global_keyprefix": KEY_PREFIX})
    with log.open("w") as output:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                KEY_PREFIX,
                "worker",
                "-Q",
                QUEUE,
                "--pool",
                "prefork",
                "--concurrency",
                "1",
                "--hostname",
                f"faults-{os.getpid()}@%h",
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
                "--loglevel",
                "INFO",
            ],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        job = run_query(query=approved(world, study), by=world.bob)  # sent on commit
        job.refresh_from_db()
        assert job.dispatched_at is not None

        wait_for_job(
            job_changes,
            worker,
            log,
            lambda c: c["id"] == job.pk and c["attempt"] == 1 and c["progress"] >= 40,
        )
        # The keys are out and the enclave computes. Holding the job's row lock keeps the
        # attempt from releasing before it is killed: whatever it writes next waits for us.
        with transaction.atomic():
            Job.objects.select_for_update().get(pk=job.pk)
            assert not Result.objects.filter(job=job).exists()
            [pool_process] = children(worker.pid)
            [enclave] = children(pool_process)
            enclave_handle = handles([enclave])
            kill_and_reap(pool_process)
        # Its enclave dies with it.
        assert not wait_gone(enclave_handle, timeout=10)

        # The worker hands the task back to Redis at once (reject_on_worker_lost), and the copy
        # finds the job's lease live: it cannot tell a dead attempt from a slow one. Once the
        # lease runs out, the sweep ends the job.
        job.refresh_from_db()
        [expired] = expire_leases(now=job.lease_expires_at + timedelta(seconds=1))
        assert expired.outcome == "failed"
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            for child in children(worker.pid):
                kill_and_reap(child)
            kill_and_reap(worker.pid)
        use_broker(*previous)
        forget_broker_keys()

    # The job was charged: its enclave may have drawn noise, so no second enclave draws fresh
    # noise for the same charge.
    job.refresh_from_db()
    assert (job.state, job.attempt) == (Job.State.FAILED, 1)
    assert "does not run again with fresh noise" in job.error
    assert not Result.objects.filter(job=job).exists()
    assert ledger(job.query) == ["reserve", "reserve", "spend", "spend"]
    seen = types(job)
    assert seen.count("job.started") == 1 and seen.count("key.released") == 2
    assert seen.count("budget.spent") == 2 and "budget.refunded" not in seen


# --- The budget under concurrent starts ------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_many_jobs_started_at_once_never_reserve_more_than_the_total(world, study, held):
    if connection.vendor != "postgresql":
        pytest.skip(
            "SQLite runs one write transaction at a time, so starts cannot race there; the "
            "row locks that keep concurrent reservations within the total are PostgreSQL's"
        )
    # Each dataset allows ε 3 in total; five approved queries ask ε 1 each.
    jobs = [
        run_query(query=approved(world, study, epsilon=Decimal("1")), by=world.bob)
        for _ in range(5)
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
    for dataset in Dataset.objects.filter(contributions__room=study):
        entries = BudgetEntry.objects.filter(room=study, dataset=dataset)
        reserved = sum(e.epsilon for e in entries if e.kind == BudgetEntry.Kind.RESERVE)
        refunded = sum(e.epsilon for e in entries if e.kind == BudgetEntry.Kind.REFUND)
        assert reserved - refunded == Decimal(3)
    for job in jobs:
        job.refresh_from_db()
        if job.pk in {r.pk for r in running}:
            assert job.state == Job.State.RUNNING
            assert ledger(job.query) == ["reserve", "reserve"]
        else:
            assert job.state == Job.State.FAILED
            assert "charges ε 1, but only 0 of 3 is left" in job.error
            assert ledger(job.query) == []  # refused: nothing reserved, nothing refunded
            assert "budget.reserved" not in types(job) and "budget.refunded" not in types(job)
            assert events(job, "job.failed")[0]["data"]["reason"] == job.error


@pytest.mark.django_db(transaction=True)
def test_concurrent_reservations_in_the_ledger_itself_never_exceed_the_total(world, study):
    """The same race one level down, without the job's other locks (its row, the audit log's
    head) that happen to serialise starts today: the ledger's own row locks must hold."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite runs one write transaction at a time; see the test above")
    candidates = [approved(world, study, epsilon=Decimal("1")) for _ in range(6)]
    barrier = threading.Barrier(len(candidates))

    def reserve(query: Query) -> bool:
        try:
            barrier.wait(timeout=30)
            with transaction.atomic():
                budget_ledger.reserve(
                    query=query, room=study, epsilon=query.epsilon, delta=query.delta
                )
            return True
        except BudgetExceeded:
            return False
        finally:
            connections.close_all()

    with ThreadPoolExecutor(len(candidates)) as pool:
        reserved = list(pool.map(reserve, candidates))

    assert reserved.count(True) == 3
    for dataset in Dataset.objects.filter(contributions__room=study):
        entries = BudgetEntry.objects.filter(room=study, dataset=dataset)
        assert sum(e.epsilon for e in entries) == Decimal(3)
        assert {e.kind for e in entries} == {BudgetEntry.Kind.RESERVE}


@pytest.mark.django_db
def test_a_job_refused_budget_on_one_dataset_reserves_nothing_on_the_other(world, study, held):
    query = approved(world, study, epsilon=Decimal("1"))
    job = run_query(query=query, by=world.bob)
    # Zurich's budget is nearly used by another query; Berlin's is untouched.
    zurich = Dataset.objects.get(organization=world.zurich)
    BudgetEntry.objects.create(
        room=study,
        dataset=zurich,
        query=propose(study, world.bob, world.pharma, sql=JOIN_SQL),
        kind=BudgetEntry.Kind.RESERVE,
        epsilon=Decimal("2.5"),
        delta=Decimal(0),
    )

    assert start_attempt(job.pk, SITE) is None
    job.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert "usz.patients: charges ε 1, but only 0.5 of 3 is left" in job.error
    assert ledger(query) == []
    assert not events(job, "budget.reserved", "budget.refunded")


# --- A host that changes what the enclave runs -----------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "edit",
    [
        pytest.param({"sql": JOIN_SQL.replace("SUM(v.cost)", "AVG(v.cost)")}, id="sql"),
        pytest.param({"epsilon": "5"}, id="epsilon"),
    ],
)
def test_a_host_that_edits_the_approved_query_on_its_way_to_the_enclave_gets_no_keys(
    world, study, held, monkeypatch, edit
):
    """The enclave hashes the canonical form it receives into its attestation: a worker that
    hands it anything but what the owners signed is refused every key, and nothing is spent."""
    job = run_query(query=approved(world, study), by=world.bob)
    message = tee_engine._job_message

    def tampered(job: Job, config) -> dict:
        sent = message(job, config)
        sent["query"] = recalibrated({**sent["query"], **edit})
        return sent

    monkeypatch.setattr(tee_engine, "_job_message", tampered)
    assert tasks.run_job(job.pk, SITE) == "failed"

    job.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert job.error.startswith("Attestation refused: the document is bound to other user data")
    assert not Result.objects.filter(job=job).exists()
    assert ledger(job.query) == ["refund", "refund", "reserve", "reserve"]
    assert "key.released" not in types(job)


# --- Approvals that went stale while the job waited ------------------------------------------


@pytest.mark.django_db
def test_a_job_whose_approvals_expired_in_the_queue_fails_at_the_worker_uncharged(
    world, study, held, monkeypatch
):
    job = run_query(query=approved(world, study), by=world.bob)
    later = job.query.expires_at + timedelta(seconds=1)
    monkeypatch.setattr(timezone, "now", lambda: later)

    assert start_attempt(job.pk, SITE) is None
    job.refresh_from_db()
    assert (job.state, job.attempt) == (Job.State.FAILED, 0)
    assert job.error == "The query's approvals have expired."
    assert ledger(job.query) == []
    assert not Result.objects.filter(job=job).exists()
    assert "job.started" not in types(job)
    assert events(job, "job.failed")[0]["data"]["reason"] == job.error


@pytest.mark.django_db
def test_an_owner_cannot_revoke_an_approval_once_its_job_exists(world, study, held):
    job = run_query(query=approved(world, study), by=world.bob)
    approval = Approval.objects.get(query=job.query, organization=world.zurich)

    response = api(world.carol).post(
        f"/api/rooms/{study.slug}/queries/{job.query.pk}/approvals/{approval.pk}/revoke/"
    )
    assert response.status_code in (400, 409)
    assert "too late to revoke" in response.json()["error"]["message"]
    approval.refresh_from_db()
    assert approval.revoked_at is None


def _tampered_signature(approval: Approval) -> dict:
    signature = bytearray(base64.b64decode(approval.evidence["signature"]))
    signature[-1] ^= 1
    return {"evidence": {**approval.evidence, "signature": base64.b64encode(signature).decode()}}


def _charite_credential(approval: Approval) -> dict:
    charite = Approval.objects.get(query=approval.query, organization__slug="charite")
    return {"credential": charite.credential, "evidence": charite.evidence}


NOT_VALID = "University Hospital Zurich's approval is not a valid assertion"


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda a: {"revoked_at": timezone.now()}, "University Hospital Zurich has not approved"),
        (_tampered_signature, NOT_VALID),
        (lambda a: {"evidence": {}}, NOT_VALID),
        (_charite_credential, NOT_VALID),
    ],
    ids=["revoked", "tampered assertion", "missing assertion", "another organisation's"],
)
@pytest.mark.django_db
def test_an_approval_changed_behind_the_services_stops_the_job_at_the_worker(
    world, study, held, tamper, reason
):
    job = run_query(query=approved(world, study), by=world.bob)
    approval = Approval.objects.get(query=job.query, organization=world.zurich)
    Approval.objects.filter(pk=approval.pk).update(**tamper(approval))

    assert start_attempt(job.pk, SITE) is None
    job.refresh_from_db()
    assert job.state == Job.State.FAILED and reason in job.error
    assert ledger(job.query) == []
    assert "job.started" not in types(job)


# --- Cancellation -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_queued_job_cancelled_before_dispatch_is_never_sent(world, study, held):
    job = run_query(query=approved(world, study), by=world.bob)
    cancel_job(job=job, by=world.bob)

    assert send_to_broker(job.pk) is False
    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED and job.dispatched_at is None
    assert job.error == "Cancelled before it started."
    [cancelled] = events(job, "job.cancelled")
    assert cancelled["actor"] == f"user:{world.bob.pk}"


@pytest.mark.django_db(transaction=True)
def test_a_queued_job_cancelled_after_dispatch_is_dropped_by_the_worker(
    world, study, held, site_worker
):
    wait = site_worker(SITE)
    job = run_query(query=approved(world, study), by=world.bob)
    response = api(world.bob).post(f"/api/rooms/{study.slug}/jobs/{job.pk}/cancel/")
    assert response.status_code == 200 and response.json()["state"] == "cancelled"

    # The step was already on the broker when the analyst cancelled.
    tasks.run_job.apply_async(args=[job.pk, SITE], queue=QUEUE)
    assert wait() == ("jobs.run_job", "SUCCESS", "nothing to do")
    job.refresh_from_db()
    assert (job.state, job.attempt) == (Job.State.CANCELLED, 0)
    assert ledger(job.query) == []
    assert "job.started" not in types(job)


@pytest.mark.parametrize(
    ("percent", "settled", "note"),
    [(25, "refund", "before the keys left"), (60, "spend", "after the keys left")],
    ids=["before the keys", "after the keys"],
)
@pytest.mark.django_db(transaction=True)
def test_a_running_job_cancelled_stops_at_its_next_progress_report(
    world, study, site_worker, monkeypatch, percent, settled, note
):
    reached, go_on = pause_progress_at(monkeypatch, percent)
    wait = site_worker(SITE)
    job = run_query(query=approved(world, study), by=world.bob)
    assert reached.wait(60), f"the worker never reported {percent} %"

    response = api(world.bob).post(f"/api/rooms/{study.slug}/jobs/{job.pk}/cancel/")
    assert response.status_code == 200 and response.json()["state"] == "running"
    go_on.set()
    assert wait()[:2] == ("jobs.run_job", "SUCCESS")

    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED, (note, job.error)
    assert (job.charged_at is not None) == (settled == "spend")
    assert not Result.objects.filter(job=job).exists()
    assert ledger(job.query) == sorted(["reserve", "reserve", settled, settled])
    seen = types(job)
    assert "job.cancel_requested" in seen and seen[-1] == "job.cancelled"
    assert "result.released" not in seen


# --- Who reads a released result --------------------------------------------------------------


@pytest.mark.django_db
def test_only_members_of_a_receiving_organisation_read_the_result(world, study, held):
    job = run_query(query=approved(world, study), by=world.bob)
    assert tasks.run_job(job.pk, SITE) == "released"
    result = Result.objects.get(job=job)
    api_path = f"/api/rooms/{study.slug}/jobs/{job.pk}/result/"
    pages = [
        f"/rooms/{study.slug}/jobs/{job.pk}/result/",
        f"/rooms/{study.slug}/jobs/{job.pk}/result.csv",
        f"/rooms/{study.slug}/jobs/{job.pk}/result.json",
    ]

    def browse(user: User) -> list[int]:
        client = Client()
        client.force_login(user)
        responses = [client.get(path) for path in pages]
        for response in responses:
            if response.status_code != 200:
                assert b"ci95" not in response.content
        return [r.status_code for r in responses]

    # The receiver: pharma, the analyst's organisation.
    table = api(world.bob).get(api_path).json()
    assert table["commitment"] == result.commitment and table["table"]["rows"]
    assert table["opening"]["commitment"] == result.commitment
    assert browse(world.bob) == [200, 200, 200]

    # A member organisation that receives nothing, its auditor: they see the room, not this.
    for member in (world.alice, world.dave):
        response = api(member).get(api_path)
        assert response.status_code == 403
        assert "receiving organisations" in response.json()["error"]["message"]
        assert browse(member) == [403, 403, 403]
    # The regulator, an outsider, and the platform's operator: no such room for them.
    operator = User.objects.create_superuser("operator", password="correct-horse-battery")
    for stranger in (world.rita, world.mallory, operator):
        response = api(stranger).get(api_path)
        assert response.status_code == 404
        assert "ci95" not in response.content.decode()
        assert browse(stranger) == [404, 404, 404]
    operator_client = Client()
    operator_client.force_login(operator)
    assert operator_client.get("/operator/jobs/result/").status_code == 404
    assert operator_client.get("/operator/").status_code == 200  # the operator is signed in

    assert api(world.bob).post(api_path).status_code == 405
    assert Client().get(pages[0]).status_code == 302  # to the login page
    assert api(world.bob).get(api_path).status_code == 200
    assert Result.objects.filter(job=job).count() == 1

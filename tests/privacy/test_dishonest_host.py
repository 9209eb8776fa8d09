"""A TEE host (the worker beside the enclave) that relays, edits, replays or hides anything
between the platform, the key service and the enclave, and starts enclaves at will, as the
threat model in the README has it. It must never get a release under parameters the owners did
not sign, nor a second noisy release for one charge."""

from __future__ import annotations

import copy
import os
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from django.utils import timezone

from cleanroom.attestation.binding import binding
from cleanroom.audit.log import events_of, room_log_name
from cleanroom.crypto.sealing import public_bytes
from jobs import tasks
from jobs.engines.base import EngineError
from jobs.engines.tee import engine as tee_engine
from jobs.engines.tee import trust
from jobs.execution import lifecycle, outbox
from jobs.execution.lifecycle import fail_job, run_query, start_attempt
from jobs.models import BudgetEntry, Job, Query, Result
from jobs.results.storage import read_result
from tests import factories
from tests.engines.support import order_of, tee_config
from tests.engines.support import tee_engine as tee_engine_of_worker
from tests.factories import JOIN_SQL, propose
from tests.privacy.support import recalibrated

pytestmark = pytest.mark.django_db

SITE = "eu-frankfurt-tee"


@pytest.fixture
def study(world, tmp_path):
    return world.study(tmp_path)


@pytest.fixture
def held(monkeypatch):
    """run_query's jobs stay off the broker: the test plays the host's worker itself."""
    monkeypatch.setenv("CLEANROOM_SITE", SITE)
    monkeypatch.setattr(outbox, "dispatch", lambda job_id: None)


def approved(world, room) -> Query:
    query = propose(room, world.bob, world.pharma, sql=JOIN_SQL)
    for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
        factories.decide(query=query, organization=org, by=owner, approve=True)
    query.refresh_from_db()
    return query


def ledger(query: Query) -> list[str]:
    return sorted(BudgetEntry.objects.filter(query=query).values_list("kind", flat=True))


def types(job: Job) -> list[str]:
    return [
        e["type"]
        for e in events_of(room_log_name(job.query.room_id))
        if e["data"].get("job") == f"job:{job.pk}"
    ]


def document(job: Job) -> bytes:
    """An attestation document of a genuine enclave of this job, with a fresh key: what a host
    that starts another enclave for the same job would present."""
    return trust.simulated_enclave(tee_config()).attest(
        pcrs=trust.enclave_measurements(tee_config()),
        public_key=public_bytes(X25519PrivateKey.generate()),
        user_data=binding(job.pk, job.query.digest),
        nonce=os.urandom(16),
    )


def _dataset(canonical: dict, name: str) -> dict:
    return next(item for item in canonical["datasets"] if item["name"] == name)


def _column(canonical: dict, name: str, column: str) -> dict:
    return next(c for c in _dataset(canonical, name)["columns"] if c["name"] == column)


def swap_unit(canonical: dict) -> None:
    """The unit becomes a column with two values, so each 'unit' keeps L rows of many people."""
    dataset = _dataset(canonical, "charite.patients")
    dataset["columns"].append(
        {
            "name": "sex",
            "type": "string",
            "role": "unit",
            "domain": [],
            "lower": None,
            "upper": None,
            "uses": [],
        }
    )
    _column(canonical, "charite.patients", "patient_id")["role"] = "other"
    dataset["unit"] = "sex"


def widen_bounds(canonical: dict) -> None:
    _column(canonical, "usz.patients", "cost")["upper"] = "1000000000"


def raise_rows_per_unit(canonical: dict) -> None:
    for item in canonical["datasets"]:
        item["rows_per_unit"] = 60
    canonical["accountant"]["rows_per_unit"] = 60


def lower_min_group(canonical: dict) -> None:
    for item in canonical["datasets"]:
        item["min_group_size"] = 1
    canonical["accountant"]["min_group_size"] = 1


def add_to_domain(canonical: dict) -> None:
    _column(canonical, "charite.patients", "diagnosis")["domain"].append("rare-disease")


@pytest.mark.parametrize(
    "edit",
    [swap_unit, widen_bounds, raise_rows_per_unit, lower_min_group, add_to_domain],
    ids=["unit column", "clamp bounds", "rows per unit", "minimum group", "domain"],
)
def test_a_host_that_changes_a_noise_term_on_its_way_to_the_enclave_gets_no_keys(
    world, study, held, monkeypatch, edit
):
    """Every term that sets the noise is in the canonical form the enclave hashes into its
    attestation: a host that edits any of them gets an enclave attested for another digest,
    no keys, and the job fails closed, refunded."""
    job = run_query(query=approved(world, study), by=world.bob)
    message = tee_engine._job_message

    def tampered(job: Job, config) -> dict:
        sent = message(job, config)
        sent["query"] = copy.deepcopy(sent["query"])
        edit(sent["query"])
        recalibrated(sent["query"])
        return sent

    monkeypatch.setattr(tee_engine, "_job_message", tampered)
    assert tasks.run_job(job.pk, SITE) == "failed"

    job.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert job.error.startswith("Attestation refused: the document is bound to other user data")
    assert not Result.objects.filter(job=job).exists()
    assert "key.released" not in types(job)
    assert ledger(job.query) == ["refund", "refund", "reserve", "reserve"]


def test_a_catalog_the_host_adds_beside_the_approved_form_is_ignored(
    world, study, held, monkeypatch
):
    """The enclave takes no catalog, bound or unit from the host: one slipped in beside the
    canonical form (a swapped unit, L = 60, no minimum group) changes nothing released."""
    job = run_query(query=approved(world, study), by=world.bob)
    message = tee_engine._job_message

    def with_a_catalog(job: Job, config) -> dict:
        return {
            **message(job, config),
            "units": {"charite.patients": "diagnosis", "usz.patients": "diagnosis"},
            "rows_per_unit": 60,
            "min_group_size": 0,
        }

    monkeypatch.setattr(tee_engine, "_job_message", with_a_catalog)
    assert tasks.run_job(job.pk, SITE) == "released"

    [result] = Result.objects.filter(job=job)
    table = read_result(result, world.pharma, world.bob)
    signed = job.query.canonical["accountant"]
    assert table["rows_per_unit"] == signed["rows_per_unit"] == 1
    assert table["min_group_size"] == signed["min_group_size"]
    count = next(m for m in table["measurements"] if m["name"] == "count")
    assert count["sensitivity"] == signed["changed_rows_per_person"] == 2


def test_a_host_asking_twice_for_one_jobs_keys_gets_them_only_once(world, study, held):
    """A host that starts a second enclave for the same job, to draw a second noisy release
    against one charge, is refused its keys, and the refusal is audited."""
    job = run_query(query=approved(world, study), by=world.bob)
    job = start_attempt(job.pk, SITE)
    first = tee_engine_of_worker().release_keys(order_of(job), document(job))
    assert sorted(first) == ["charite.patients", "usz.patients"]

    with pytest.raises(EngineError, match="already released to an enclave"):
        tee_engine_of_worker().release_keys(order_of(job), document(job))

    job.refresh_from_db()
    assert job.charged_at is not None
    seen = types(job)
    assert seen.count("key.released") == 2 and seen.count("key.refused") == 1
    assert seen.count("job.charged") == 1
    # However the job ends now, its reservation is spent.
    fail_job(job.pk, "the host gave up")
    assert ledger(job.query) == ["reserve", "reserve", "spend", "spend"]


def test_a_host_that_hides_the_noise_and_reports_a_failure_is_charged(
    world, study, held, monkeypatch
):
    """The charge is taken when the keys leave the key service, not on the host's word: a
    host that lets the enclave run, keeps what it printed and reports a failure is charged."""
    job = run_query(query=approved(world, study), by=world.bob)
    report = lifecycle.report_progress

    def claims_a_crash_once_decrypted(job_id: int, percent: int, message: str) -> bool:
        if percent == 60:
            raise EngineError("the enclave crashed (says the host)")
        return report(job_id, percent, message)

    monkeypatch.setattr(lifecycle, "report_progress", claims_a_crash_once_decrypted)
    assert tasks.run_job(job.pk, SITE) == "failed"

    job.refresh_from_db()
    assert job.state == Job.State.FAILED and job.charged_at is not None
    assert not Result.objects.filter(job=job).exists()
    assert ledger(job.query) == ["reserve", "reserve", "spend", "spend"]


class WorkerLost(BaseException):
    """The worker process vanished: nothing after this point runs."""


def test_an_attempt_after_the_keys_were_released_never_draws_fresh_noise(
    world, study, held, monkeypatch
):
    """A worker lost after the keys went out (or a host that says so) gets its task again: while
    the lost attempt's lease is live the copy does nothing; once it ran out, the new attempt
    fails the job, charged once, and starts no enclave and asks for no key."""
    job = run_query(query=approved(world, study), by=world.bob)
    first = start_attempt(job.pk, SITE)

    def lost_after_decrypting(percent: int, message: str) -> bool:
        if percent == 60:
            raise WorkerLost
        return lifecycle.report_progress(job.pk, percent, message)

    with pytest.raises(WorkerLost):
        tee_engine_of_worker().run(order_of(first), lost_after_decrypting)
    assert tasks.run_job(job.pk, SITE) == "nothing to do"
    assert Job.objects.get(pk=job.pk).state == Job.State.RUNNING
    later = first.lease_expires_at + timedelta(seconds=1)
    monkeypatch.setattr(timezone, "now", lambda: later)
    assert tasks.run_job(job.pk, SITE) == "nothing to do"

    job.refresh_from_db()
    assert job.state == Job.State.FAILED and job.attempt == 1
    assert "does not run again with fresh noise" in job.error
    assert not Result.objects.filter(job=job).exists()
    assert ledger(job.query) == ["reserve", "reserve", "spend", "spend"]
    seen = types(job)
    assert seen.count("attestation.verified") == 1 and seen.count("key.released") == 2

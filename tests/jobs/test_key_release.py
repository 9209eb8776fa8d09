"""The key service's release of data keys to an enclave: only for a document that verifies,
measures allowed code, binds this running job and its approved query, and only where residency
allows. Every refusal names its reason in the audit, and no key leaves."""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from cleanroom.attestation.binding import binding, key_context
from cleanroom.audit.log import events_of, room_log_name
from cleanroom.crypto.keys import key_service
from cleanroom.crypto.sealing import open_sealed, public_bytes
from jobs.engines.base import EngineError
from jobs.engines.tee import trust
from jobs.execution.lifecycle import cancel_job, fail_job, run_query, start_attempt
from jobs.models import Job
from parties.models import DatasetVersion, Jurisdiction, Site
from tests import factories
from tests.engines.support import order_of, tee_config
from tests.engines.support import tee_engine as tee_engine_of_worker
from tests.factories import JOIN_SQL, propose

pytestmark = pytest.mark.django_db

SITE = "eu-frankfurt-tee"


def approved(world, room):
    query = propose(room, world.bob, world.pharma, sql=JOIN_SQL)
    for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
        factories.decide(query=query, organization=org, by=owner, approve=True)
    query.refresh_from_db()
    return query


@pytest.fixture
def start(world, tmp_path, monkeypatch, django_capture_on_commit_callbacks):
    """Start jobs the way a worker does: run the query (its dispatch held back), then claim the
    first attempt at the step's site."""
    room = world.study(tmp_path)
    monkeypatch.setenv("CLEANROOM_SITE", SITE)

    def started() -> Job:
        with django_capture_on_commit_callbacks(execute=False):
            job = run_query(query=approved(world, room), by=world.bob)
        job = start_attempt(job.pk, SITE)
        assert job is not None and job.state == Job.State.RUNNING
        return job

    return started


@pytest.fixture
def job(start):
    return start()


@pytest.fixture
def enclave_key():
    return X25519PrivateKey.generate()


def document(job: Job, enclave_key, *, bound_to: Job | None = None, pcrs=None) -> bytes:
    """What the simulated security module signs for an enclave holding `enclave_key`."""
    bound_to = bound_to or job
    return trust.simulated_enclave(tee_config()).attest(
        pcrs=trust.enclave_measurements(tee_config()) if pcrs is None else pcrs,
        public_key=public_bytes(enclave_key),
        user_data=binding(bound_to.pk, bound_to.query.digest),
        nonce=os.urandom(16),
    )


def events(job: Job, *types: str) -> list[dict]:
    return [
        e
        for e in events_of(room_log_name(job.query.room_id))
        if e["data"].get("job") == f"job:{job.pk}" and (not types or e["type"] in types)
    ]


def refused(job: Job, enclave_key, evidence: bytes, match: str) -> dict:
    """Present `evidence`, expect a refusal naming `match`; return its audit event."""
    with pytest.raises(EngineError, match=match):
        tee_engine_of_worker().release_keys(order_of(job), evidence)
    assert not events(job, "key.released")
    [event] = events(job, "attestation.refused")
    job.refresh_from_db()
    assert job.attestation["accepted"] is False
    assert job.attestation["reason"] == event["data"]["reason"]
    return event


def data_keys(job: Job) -> dict[str, bytes]:
    keys = {}
    for item in job.query.canonical["datasets"]:
        version = DatasetVersion.objects.get(
            dataset_id=int(item["dataset"].split(":")[1]), number=item["version"]
        )
        keys[item["name"]] = key_service().unwrap(
            version.kek_id, bytes(version.wrapped_data_key), context=version.key_context
        )
    return keys


def test_a_verified_enclave_gets_each_datasets_key_sealed_to_it_alone(job, enclave_key):
    sealed = tee_engine_of_worker().release_keys(order_of(job), document(job, enclave_key))

    expected = data_keys(job)
    assert sorted(sealed) == sorted(expected) == ["charite.patients", "usz.patients"]
    for name, blob in sealed.items():
        opened = open_sealed(enclave_key, base64.b64decode(blob), context=key_context(job.pk, name))
        assert opened == expected[name]
        # Sealed to this enclave's key, for this job and this dataset only.
        with pytest.raises(InvalidTag):
            open_sealed(
                X25519PrivateKey.generate(),
                base64.b64decode(blob),
                context=key_context(job.pk, name),
            )
        with pytest.raises(InvalidTag):
            open_sealed(enclave_key, base64.b64decode(blob), context=key_context(job.pk + 1, name))
    assert expected["charite.patients"] != expected["usz.patients"]

    job.refresh_from_db()
    assert job.attestation["accepted"] is True and job.attestation["kind"] == "simulated"
    types = [e["type"] for e in events(job, "attestation.verified", "key.released")]
    assert types == ["attestation.verified", "key.released", "key.released"]
    released = events(job, "key.released")
    assert {e["data"]["site"] for e in released} == {SITE}
    assert sorted(e["data"]["dataset"] for e in released) == sorted(
        item["dataset"] for item in job.query.canonical["datasets"]
    )


@pytest.mark.parametrize("where", ["public key", "user data", "signature"])
def test_a_document_with_one_byte_flipped_is_refused(job, enclave_key, where):
    evidence = bytearray(document(job, enclave_key))
    position = {
        # An attacker swapping in a key of their own, or rebinding the document, or forging.
        "public key": evidence.find(public_bytes(enclave_key)),
        "user data": evidence.find(binding(job.pk, job.query.digest)) + 20,
        "signature": len(evidence) - 1,
    }[where]
    assert position > 0
    evidence[position] ^= 0x01

    event = refused(job, enclave_key, bytes(evidence), "Attestation refused")
    assert event["data"]["reason"]


def test_a_document_replayed_from_another_job_is_refused(start, enclave_key):
    job, other = start(), start()
    theirs = document(other, enclave_key)
    assert tee_engine_of_worker().release_keys(
        order_of(other), theirs
    )  # genuine for the job it was made for

    event = refused(job, enclave_key, theirs, "bound to other user data")
    assert f"job/v1\\n{other.pk}\\n" in event["data"]["reason"]


def test_a_document_for_the_right_job_but_another_query_digest_is_refused(job, enclave_key):
    job.query.digest = "0" * 64  # only in memory: what a forged binding would claim
    forged = document(job, enclave_key)
    job.refresh_from_db()
    refused(job, enclave_key, forged, "bound to other user data")


def test_a_measurement_off_the_allow_list_is_refused_naming_it(job, enclave_key, settings):
    settings.TEE_MEASUREMENT_ALLOWLIST = ["ab" * 48]
    measured = trust.enclave_measurements(tee_config())[0].hex()

    event = refused(job, enclave_key, document(job, enclave_key), measured)
    assert "not on the allow-list" in event["data"]["reason"]
    assert f"PCR0={measured}" in event["data"]["reason"]


def test_changed_enclave_code_is_refused_by_the_default_allow_list(job, enclave_key):
    pcrs = trust.enclave_measurements(tee_config())
    pcrs[0] = bytes(48)
    refused(job, enclave_key, document(job, enclave_key, pcrs=pcrs), "not on the allow-list")


def test_the_allow_list_admits_the_configured_measurement(job, enclave_key, settings):
    measured = trust.enclave_measurements(tee_config())[0].hex()
    settings.TEE_MEASUREMENT_ALLOWLIST = ["ab" * 48, measured]
    assert len(tee_engine_of_worker().release_keys(order_of(job), document(job, enclave_key))) == 2


def test_a_simulated_document_is_refused_when_the_simulated_root_is_not_trusted(
    job, enclave_key, settings
):
    evidence = document(job, enclave_key)
    settings.TEE_ALLOW_SIMULATED = False

    event = refused(job, enclave_key, evidence, "Attestation refused")
    assert "trusted" in event["data"]["reason"]


def test_a_job_that_is_not_running_gets_no_keys(job, enclave_key):
    evidence = document(job, enclave_key)
    fail_job(job.pk, "stopped before the keys")

    with pytest.raises(EngineError, match="not running"):
        tee_engine_of_worker().release_keys(order_of(job), evidence)
    assert not events(job, "key.released")


def test_a_running_job_whose_cancellation_was_requested_gets_no_keys(job, enclave_key, world):
    evidence = document(job, enclave_key)
    cancel_job(job=job, by=world.bob)
    assert Job.objects.get(pk=job.pk).state == Job.State.RUNNING  # the worker has not noticed

    with pytest.raises(EngineError, match="cancelled"):
        tee_engine_of_worker().release_keys(order_of(job), evidence)
    assert not events(job, "key.released")


def test_the_key_service_refuses_a_site_where_residency_forbids_the_rows(job, enclave_key):
    # The third residency check: even with a verified document, a job whose enclave site would
    # receive EU and Swiss rows in the US gets no key.
    Job.objects.filter(pk=job.pk).update(site=Site.objects.get(name="us-virginia-tee"))
    job.refresh_from_db()

    with pytest.raises(EngineError, match="Residency refuses"):
        tee_engine_of_worker().release_keys(order_of(job), document(job, enclave_key))
    assert not events(job, "key.released")


def test_a_rule_change_refusing_one_dataset_refuses_every_key(job, enclave_key):
    # Swiss rules tightened after dispatch: the EU dataset alone is still allowed at Frankfurt,
    # but any refusal refuses every key, and no key is audited as released.
    swiss = Jurisdiction.objects.get(code="CH")
    swiss.enclave_processing_in.remove(Jurisdiction.objects.get(code="EU"))

    with pytest.raises(EngineError, match=r"Residency refuses usz\.patients"):
        tee_engine_of_worker().release_keys(order_of(job), document(job, enclave_key))
    assert not events(job, "key.released")

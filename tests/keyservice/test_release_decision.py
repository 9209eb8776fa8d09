"""An owner's key service decides each release itself, against a host that skips its own
checks and relays whatever it likes: each attack is refused by the key service, and nothing
is released."""

from __future__ import annotations

import base64
import copy
import dataclasses
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from cleanroom.attestation.binding import binding, key_context
from cleanroom.audit.verifier.approvals import approval_challenge
from cleanroom.crypto.keys import key_service
from cleanroom.crypto.sealing import open_sealed, public_bytes
from cleanroom.residency import Place, SiteKind
from jobs.engines.tee import trust
from jobs.queries.canonical import approval_message, digest_of
from jobs.rooms.services import suspend_dataset
from keyservice.release import Refused, ReleaseLog, SiteKeyRequest
from keyservice.service import OrganizationKeyService
from parties.keys import embedded_pinned
from tests import factories
from tests.engines.support import tee_config
from tests.jobs.test_key_release import document
from tests.keyservice.support import release_request

pytestmark = pytest.mark.django_db


@pytest.fixture
def charite_keys(world, tmp_path):
    def service(**pinned_changes) -> OrganizationKeyService:
        config = tee_config()
        pinned = embedded_pinned(
            world.charite, trust.trusted_roots(config), trust.allowed_measurements(config)
        )
        pinned = dataclasses.replace(pinned, **pinned_changes)
        return OrganizationKeyService(pinned, key_service(), ReleaseLog(tmp_path / "releases"))

    return service


def test_an_attested_enclave_of_an_approved_job_gets_the_key_sealed_to_it(
    job, enclave_key, charite_keys
):
    released = charite_keys().release(release_request(job, document(job, enclave_key)))
    key = open_sealed(
        enclave_key, released.sealed_key, context=key_context(job.pk, "charite.patients")
    )
    assert len(key) == 32 and released.attestation_kind == "simulated"


def test_a_host_with_its_own_key_for_a_job_the_owner_did_not_approve_is_refused(
    job, enclave_key, charite_keys
):
    # The host edits the approved form (a wider epsilon) and has a genuine simulated enclave
    # attest the new digest with the host's own key: the owner never signed that digest.
    canonical = copy.deepcopy(job.query.canonical)
    canonical["epsilon"] = "5"
    host_key = X25519PrivateKey.generate()
    evidence = trust.simulated_enclave(tee_config()).attest(
        pcrs=trust.enclave_measurements(tee_config()),
        public_key=public_bytes(host_key),
        user_data=binding(job.pk, digest_of(canonical)),
        nonce=os.urandom(16),
    )
    with pytest.raises(Refused, match="did not approve"):
        charite_keys().release(release_request(job, evidence, canonical=canonical))


def _charite_approval(job) -> dict:
    return job.query.approvals.get(organization__slug="charite").evidence


def _flipped(evidence: dict, name: str) -> dict:
    raw = bytearray(base64.b64decode(evidence[name]))
    raw[-1] ^= 1
    return {**evidence, name: base64.b64encode(bytes(raw)).decode()}


def test_a_missing_assertion_is_refused(job, enclave_key, charite_keys):
    with pytest.raises(Refused, match="no owner's assertion"):
        charite_keys().release(release_request(job, document(job, enclave_key), approval=None))
    with pytest.raises(Refused, match="lacks 'signature'"):
        evidence = {k: v for k, v in _charite_approval(job).items() if k != "signature"}
        charite_keys().release(release_request(job, document(job, enclave_key), approval=evidence))


def test_a_tampered_assertion_signature_is_refused(job, enclave_key, charite_keys):
    tampered = _flipped(_charite_approval(job), "signature")
    with pytest.raises(Refused, match=r"signature of org:\d+ does not verify"):
        charite_keys().release(release_request(job, document(job, enclave_key), approval=tampered))


def test_an_assertion_replayed_from_another_job_is_refused(job, start, enclave_key, charite_keys):
    # The owner approved another query too: the host relays that approval for this one.
    other = start()
    replayed = _charite_approval(other)
    with pytest.raises(Refused, match="answers another challenge"):
        charite_keys().release(release_request(job, document(job, enclave_key), approval=replayed))


def test_another_organisations_assertion_is_refused(job, enclave_key, charite_keys):
    theirs = job.query.approvals.get(organization__slug="usz").evidence
    with pytest.raises(Refused, match="not a credential pinned for org:"):
        charite_keys().release(release_request(job, document(job, enclave_key), approval=theirs))


def test_a_passkey_the_platform_registered_behind_the_owner_is_refused(
    world, job, enclave_key, charite_keys
):
    # The key service pinned what Charité confirmed; then the platform adds a passkey of its
    # own under alice's name and approves with it. The key service does not know that passkey.
    pinned_before = charite_keys().pinned.approvers
    factories.DEVICES.clear()
    planted = factories.register_passkey(world.alice, world.charite, name="planted")
    message = approval_message(job.query, world.charite, "approve")
    answer = planted.get(approval_challenge(message))
    planted_evidence = {
        "kind": "passkey",
        "credential_id": base64.b64encode(planted.credential_id).decode(),
        "public_key": base64.b64encode(planted.cose_key()).decode(),
        "rp_id": planted.rp_id,
        "authenticator_data": _std(answer["response"]["authenticatorData"]),
        "client_data_json": _std(answer["response"]["clientDataJSON"]),
        "signature": _std(answer["response"]["signature"]),
    }
    with pytest.raises(Refused, match="not a credential pinned"):
        charite_keys(approvers=pinned_before).release(
            release_request(job, document(job, enclave_key), approval=planted_evidence)
        )


def _std(b64url: str) -> str:
    return base64.b64encode(base64.urlsafe_b64decode(b64url + "=" * (-len(b64url) % 4))).decode()


def test_a_document_bound_to_another_job_is_refused(job, start, enclave_key, charite_keys):
    other = start()
    with pytest.raises(Refused, match="attestation refused"):
        charite_keys().release(release_request(job, document(job, enclave_key, bound_to=other)))


def test_a_document_naming_no_enclave_key_is_refused_and_claims_nothing(
    job, enclave_key, charite_keys
):
    # Genuinely attested and bound to the approved job, but with no key to seal the data key to.
    keyless = trust.simulated_enclave(tee_config()).attest(
        pcrs=trust.enclave_measurements(tee_config()),
        public_key=None,
        user_data=binding(job.pk, job.query.digest),
        nonce=os.urandom(16),
    )
    service = charite_keys()
    with pytest.raises(Refused, match="names no public key"):
        service.release(release_request(job, keyless))
    assert service.release(release_request(job, document(job, enclave_key))).sealed_key


def test_the_embedded_key_service_keeps_no_suspensions_of_its_own(job, world, charite_keys):
    dataset = world.charite.datasets.get()
    with pytest.raises(Refused, match="keeps no suspensions"):
        charite_keys().suspend(dataset.pk)


def test_a_second_release_for_the_same_job_is_refused(job, enclave_key, charite_keys):
    service = charite_keys()
    service.release(release_request(job, document(job, enclave_key)))
    again = X25519PrivateKey.generate()
    with pytest.raises(Refused, match="already released"):
        service.release(release_request(job, document(job, again)))


def test_an_enclave_site_residency_forbids_is_refused(job, enclave_key, charite_keys):
    # The owner pins where each enclave site is: the host cannot move the job to a US host.
    us = {job.site.name: Place(name=job.site.name, kind=SiteKind.TEE, jurisdiction="US")}
    with pytest.raises(Refused, match="residency"):
        charite_keys(sites=us).release(release_request(job, document(job, enclave_key)))
    unknown = {}
    with pytest.raises(Refused, match="not a site this organisation knows"):
        charite_keys(sites=unknown).release(release_request(job, document(job, enclave_key)))


def test_a_suspended_dataset_is_refused(job, enclave_key, charite_keys, world):
    dataset = world.charite.datasets.get()
    with pytest.raises(Refused, match="suspended"):
        charite_keys(suspended=frozenset({dataset.pk})).release(
            release_request(job, document(job, enclave_key))
        )


def test_another_datasets_key_relayed_under_this_ones_name_is_refused(
    job, enclave_key, charite_keys
):
    theirs = release_request(job, document(job, enclave_key), dataset="usz.patients")
    mixed = release_request(
        job,
        document(job, enclave_key),
        kek_id=theirs.kek_id,
        wrapped_key=theirs.wrapped_key,
        key_context=theirs.key_context,
    )
    with pytest.raises(Refused, match=r"not charite\.patients.s approved version"):
        charite_keys().release(mixed)
    # And another organisation's dataset is not this key service's to release at all.
    with pytest.raises(Refused, match="not a dataset of this organisation"):
        charite_keys().release(theirs)


def site_key_request(job, site: str, dataset: str = "charite.patients") -> SiteKeyRequest:
    relayed = release_request(job, b"", dataset=dataset)
    return SiteKeyRequest(
        job=job.pk,
        query=relayed.query,
        dataset=relayed.dataset,
        canonical=relayed.canonical,
        approval=relayed.approval,
        site=site,
        kek_id=relayed.kek_id,
        wrapped_key=relayed.wrapped_key,
        key_context=relayed.key_context,
    )


def test_the_owners_own_worker_site_gets_the_key_and_no_other_kind_of_site_does(job, charite_keys):
    data_key, reason = charite_keys().site_key(site_key_request(job, "eu-frankfurt"))
    assert len(data_key) == 32 and reason.startswith("Allowed")
    # An enclave host gets keys only attested; an MPC party never reads rows.
    for site, why in (("eu-frankfurt-tee", "not a worker site"), ("eu-paris-mpc", "not a site")):
        with pytest.raises(Refused, match=why):
            charite_keys().site_key(site_key_request(job, site))
    # A worker in a jurisdiction the dataset's rules do not allow rows in.
    with pytest.raises(Refused, match="residency"):
        charite_keys().site_key(site_key_request(job, "us-virginia"))


def test_a_dataset_its_owner_suspended_on_the_platform_gets_no_key(
    job, enclave_key, charite_keys, world
):
    suspend_dataset(dataset=world.charite.datasets.get(), by=world.alice)
    with pytest.raises(Refused, match="suspended by its owner"):
        charite_keys().release(release_request(job, document(job, enclave_key)))

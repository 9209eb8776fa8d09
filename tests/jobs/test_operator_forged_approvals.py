"""The platform's operator forges the owners' approvals, as it could: it inserts a passkey of its
own in each owner's name (a row of ApprovalCredential, through the ORM, as anyone who writes the
database can) and an approval signed by it, marks the query approved, and runs it under each
engine. The platform's own run gate passes it (it trusts the platform's credential records);
every owner's key service refuses it, against the credentials the owner pinned when it started,
so no data key leaves for the enclave (TEE, synthetic extract) or for the owner's own worker
site (MPC input step), no share is made and nothing is released. And an owner that runs no key
service where the others do is refused an upload: the embedded service would decide its
releases on the platform's records."""

from __future__ import annotations

import base64
import json
from decimal import Decimal

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.utils import timezone

from cleanroom.audit.verifier.approvals import PASSKEY, approval_challenge
from cleanroom.testing import SoftwareAuthenticator
from jobs.demo.key_services import owner_key_services
from jobs.execution.lifecycle import run_query
from jobs.models import Approval, Job, JobStep, Query, Result
from jobs.queries.canonical import approval_message
from jobs.queries.services import check_runnable
from keyservice.config import GRANTS
from parties.ingest import IngestError
from parties.models import ApprovalCredential, Organization
from tests import factories
from tests.factories import JOIN_SQL, UNION_SQL, propose
from tests.jobs.test_synthetic_plan import JOINED, allow_synthetic

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

REFUSAL = "is not a credential pinned for"


def std_b64(b64url: str) -> str:
    return base64.b64encode(base64.urlsafe_b64decode(b64url + "=" * (-len(b64url) % 4))).decode()


def forge_approvals(query: Query, owners: list[tuple[Organization, User]]) -> None:
    """What an operator with write access to the database does: a passkey of its own in each
    owner's name, an approval of this version by it, the query marked approved."""
    query = Query.objects.get(pk=query.pk)
    for organization, owner in owners:
        device = SoftwareAuthenticator(
            rp_id=settings.WEBAUTHN_RP_ID, origin=settings.WEBAUTHN_ORIGINS[0]
        )
        credential = ApprovalCredential.objects.create(
            organization=organization,
            kind=PASSKEY,
            user=owner,
            registered_by=owner,
            name="Phone",
            credential_id=device.credential_id,
            public_key=device.cose_key(),
            rp_id=settings.WEBAUTHN_RP_ID,
        )
        message = approval_message(query, organization, "approve")
        answer = device.get(approval_challenge(message))["response"]
        Approval.objects.create(
            query=query,
            organization=organization,
            decision=Approval.Decision.APPROVE,
            decided_by=owner,
            digest=query.digest,
            credential=credential,
            evidence={
                "kind": PASSKEY,
                "credential_id": base64.b64encode(device.credential_id).decode(),
                "public_key": base64.b64encode(device.cose_key()).decode(),
                "rp_id": settings.WEBAUTHN_RP_ID,
                "authenticator_data": std_b64(answer["authenticatorData"]),
                "client_data_json": std_b64(answer["clientDataJSON"]),
                "signature": std_b64(answer["signature"]),
            },
            decided_at=timezone.now(),
        )
    Query.objects.filter(pk=query.pk).update(status=Query.Status.APPROVED)


def decisions(slug: str) -> list[dict]:
    """The service's release decisions (its log also names every operation's caller)."""
    log = settings.VAR_DIR / "keyservices" / slug / "decisions.jsonl"
    entries = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return [entry for entry in entries if "released" in entry]


@pytest.fixture
def owners(world, tmp_path, settings):
    """The owners register their passkeys and start their key services, which pin them; the
    hospitals' datasets are uploaded through their services. Yields the study's room."""
    settings.VAR_DIR = tmp_path / "var"
    settings.KEY_SERVICE_CALLER_KEY = tmp_path / "caller.key"
    factories.register_passkey(world.alice, world.charite)
    factories.register_passkey(world.carol, world.zurich)
    # The sites' workers run in this process, beside the web tier: one caller plays them all.
    callers = {settings.KEY_SERVICE_CALLER: frozenset(GRANTS)}
    with owner_key_services([world.charite, world.zurich, world.pharma], callers):
        yield world.study(tmp_path)


def forged(world, room, **values) -> Query:
    query = propose(room, world.bob, world.pharma, **values)
    forge_approvals(query, [(world.charite, world.alice), (world.zurich, world.carol)])
    query = Query.objects.get(pk=query.pk)
    # The platform's own gate is satisfied: it checks against the platform's records.
    check_runnable(query)
    return query


def assert_nothing_left_the_key_services(job: Job) -> None:
    job.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert REFUSAL in job.error, job.error
    assert not Result.objects.filter(job=job).exists()
    asked = decisions("charite") + decisions("usz")
    assert asked and not [d for d in asked if d.get("released")]
    assert all(REFUSAL in d["reason"] for d in asked)


def test_the_enclave_gets_no_key_for_a_forged_approval(world, owners, site_worker):
    query = forged(world, owners, sql=JOIN_SQL)
    assert query.mechanism == "tee"
    wait = site_worker("eu-frankfurt-tee")
    job = run_query(query=query, by=world.bob)
    assert wait() == ("jobs.run_job", "SUCCESS", "failed")
    assert_nothing_left_the_key_services(job)


def test_a_synthetic_extract_gets_no_key_for_a_forged_approval(world, owners, site_worker):
    allow_synthetic(world, owners)
    query = forged(
        world,
        owners,
        sql=JOINED,
        epsilon=Decimal("1"),
        delta=Decimal("1e-6"),
        output_kind=Query.OutputKind.SYNTHETIC,
        synthetic_method="dp-marginals",
        synthetic_rows=100,
    )
    wait = site_worker("eu-frankfurt-tee")
    job = run_query(query=query, by=world.bob)
    assert wait() == ("jobs.run_job", "SUCCESS", "failed")
    assert_nothing_left_the_key_services(job)


def test_no_mpc_input_step_reads_its_rows_for_a_forged_approval(world, owners, site_worker):
    query = forged(world, owners, sql=UNION_SQL, requested_mechanism="mpc")
    assert query.mechanism == "mpc"
    waits = [site_worker(site) for site in ("eu-frankfurt", "ch-zurich")]
    job = run_query(query=query, by=world.bob)
    outcomes = [waits[0]()[2] for _ in waits]
    assert "shared" not in outcomes, outcomes
    assert_nothing_left_the_key_services(job)
    # No input step left shares; no compute step was sent.
    inputs = job.steps.filter(kind=JobStep.Kind.INPUT)
    assert inputs.count() == 2 and not [s for s in inputs if s.output]
    assert not job.steps.filter(kind=JobStep.Kind.COMPUTE, dispatched_at__isnull=False).exists()


def test_an_owner_left_out_where_owners_run_key_services_is_refused_an_upload(
    world, tmp_path, settings
):
    """Its data key would be wrapped under the platform's own key folder and released by the
    embedded service on the platform's records, where a forged approval passes: refused before
    anything is stored."""
    settings.KEY_SERVICES = {"charite": "https://keys.charite.example:8443"}
    path = factories.patients_csv(tmp_path / "usz.csv", rows=20)
    with pytest.raises(IngestError, match="runs no key service of its own") as refused:
        factories.dataset(world.zurich, world.carol, path, jurisdiction="CH")
    assert refused.value.code == "no_key_service"
    assert not world.zurich.datasets.exists()
    stored = settings.STORAGE_ROOT
    assert not stored.exists() or not any(p.is_file() for p in stored.rglob("*"))

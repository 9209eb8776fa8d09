"""The site API for an MPC job's steps, against the sites that may lie: each attack made as that
site makes it, over real HTTP to a live control plane, signed with real certificates from the
deployment's site API CA. A site claims only the steps placed at it, acts only on the step
attempts it holds, releases only through a delivery it claimed (which charged the job first),
and its share inbox is told about placements at its own site only. Each refusal changes
nothing."""

from __future__ import annotations

import base64
import hashlib

import pytest

from cleanroom.audit.log import events_of, room_log_name
from dataplane.mpc import sharing
from jobs.engines.base import EngineError
from jobs.engines.mpc import inbox
from jobs.engines.mpc.engine import output_context
from jobs.engines.orders import Lease
from jobs.execution import outbox
from jobs.execution.leases import LeaseLost
from jobs.execution.lifecycle import run_query
from jobs.models import Job, JobStep, Result
from jobs.sites.client import SiteApiClient
from parties.site_certificates import ensure_site_certificates
from tests.jobs.mpc_support import INPUT_SITES, PARTY_SITES, approved_union, three_hospitals
from tests.jobs.test_site_api import credentials

pytestmark = pytest.mark.django_db(transaction=True)

TEE_SITE = "eu-frankfurt-tee"


@pytest.fixture
def site_api(live_server, tmp_path, settings):
    """A site's client of the live control plane's site API, signing as `site`."""
    root = tmp_path / "site-api"
    ensure_site_certificates(root, [*INPUT_SITES, *PARTY_SITES, TEE_SITE], ["localhost"])
    settings.SITE_API_CA = root / "ca.crt"

    def client(site: str) -> SiteApiClient:
        return SiteApiClient(
            f"{live_server.url}/site-api", site, credentials(root, site), root / "ca.crt"
        )

    return client


@pytest.fixture
def job(world, tmp_path, monkeypatch) -> Job:
    """An MPC job whose steps wait for their sites, kept off the broker: the test plays them."""
    monkeypatch.setattr(outbox, "dispatch", lambda job_id: None)
    return run_query(query=approved_union(world, three_hospitals(world, tmp_path)), by=world.bob)


def step_at(job: Job, kind: str, site: str) -> JobStep:
    return job.steps.select_related("site").get(kind=kind, site__name=site)


def refusals(job: Job) -> list[dict]:
    return [
        e["data"]
        for e in events_of(room_log_name(job.query.room_id))
        if e["type"] == "access.refused" and e["data"].get("job") == f"job:{job.pk}"
    ]


def test_an_owners_site_claims_its_input_step_and_gets_only_its_own_dataset(job, site_api):
    step = step_at(job, "input", "eu-frankfurt")
    order = site_api("eu-frankfurt").claim_step(step.pk)

    assert order is not None
    assert (order.job, order.step, order.attempt, order.kind) == (job.pk, step.pk, 1, "input")
    assert order.dataset is not None and order.dataset.name == "charite.patients"
    assert order.canonical == job.query.canonical
    assert sorted(p.site for p in order.parties) == PARTY_SITES
    step.refresh_from_db()
    assert (step.state, step.lease_site.name) == (JobStep.State.RUNNING, "eu-frankfurt")
    # Exactly once through the API too: a second claim while the lease is live does nothing.
    assert site_api("eu-frankfurt").claim_step(step.pk) is None


@pytest.mark.parametrize("claimant", ["ch-zurich", "eu-paris-mpc", TEE_SITE])
def test_a_site_claiming_another_sites_step_is_refused_and_the_step_untouched(
    job, site_api, claimant
):
    step = step_at(job, "input", "eu-frankfurt")
    with pytest.raises(EngineError, match=f"not placed at {claimant}"):
        site_api(claimant).claim_step(step.pk)

    step.refresh_from_db()
    job.refresh_from_db()
    assert (step.state, step.attempt, step.lease_site) == (JobStep.State.QUEUED, 0, None)
    assert job.state == Job.State.QUEUED
    [refused] = refusals(job)
    assert refused["site"] == claimant and "claimed the step 'input" in refused["reason"]


def test_acts_on_a_step_attempt_the_site_does_not_hold_are_refused(job, site_api):
    step = step_at(job, "input", "eu-frankfurt")
    order = site_api("eu-frankfurt").claim_step(step.pk)
    assert order is not None
    held = Lease("step", step.pk, order.attempt)
    stale = Lease("step", step.pk, order.attempt + 1)
    output = {"length": 1, "shares": {}}

    other = site_api("ch-zurich")
    for act in (
        lambda: other.recorder(held, job.pk).shares_may_move(step.pk, 0),
        lambda: other.recorder(held, job.pk).key_released(
            job.pk, dataset=1, site="ch-zurich", reason="lying"
        ),
        lambda: other.complete(held, output),
        lambda: other.fail(held, "a rival's failure"),
        lambda: other.renew(held),
        lambda: site_api("eu-frankfurt").complete(stale, output),
        lambda: site_api("eu-frankfurt").fail(stale, "an attempt long gone"),
    ):
        with pytest.raises(LeaseLost):
            act()

    step.refresh_from_db()
    job.refresh_from_db()
    assert (step.state, step.output, step.error) == (JobStep.State.RUNNING, {}, "")
    assert job.state == Job.State.RUNNING
    # The holder's own acts go through.
    assert site_api("eu-frankfurt").recorder(held, job.pk).shares_may_move(step.pk, 0) is True


def test_an_input_step_releases_nothing_and_claims_no_delivery(job, site_api):
    step = step_at(job, "input", "eu-frankfurt")
    order = site_api("eu-frankfurt").claim_step(step.pk)
    assert order is not None
    held = Lease("step", step.pk, order.attempt)

    with pytest.raises(EngineError, match="not a delivery"):
        site_api("eu-frankfurt").release(held, {"columns": ["n"], "rows": [[1]]})
    assert site_api("eu-frankfurt").claim_delivery(step.pk) is None

    job.refresh_from_db()
    assert not Result.objects.filter(job=job).exists()
    assert job.charged_at is None and job.state == Job.State.RUNNING


def _computed(job: Job, parties: int) -> None:
    """Every input step done and `parties` compute steps done, each with a noisy share sealed to
    the delivery key, as their sites would have reported them."""
    public_key = base64.b64decode(job.steps.get(kind="deliver").output["public_key"])
    job.steps.filter(kind="input").update(state=JobStep.State.SUCCEEDED, attempt=1)
    for step in job.steps.filter(kind="compute").order_by("party")[:parties]:
        blob = sharing.seal_for_receiver([1, 2], public_key, output_context(job.pk, step.party))
        step.state, step.attempt = JobStep.State.SUCCEEDED, 1
        step.output = {
            "share": {
                "site": step.site.name,
                "sha256": hashlib.sha256(blob).hexdigest(),
                "sealed": base64.b64encode(blob).decode(),
            }
        }
        step.save()
    Job.objects.filter(pk=job.pk).update(state=Job.State.RUNNING, attempt=1)


def test_only_a_compute_partys_site_claims_the_delivery_and_the_claim_charges_first(job, site_api):
    _computed(job, parties=2)
    paris = step_at(job, "compute", "eu-paris-mpc")
    geneva = step_at(job, "compute", "ch-geneva-mpc")

    # An owner's site, naming a party's step, is refused; nothing is charged.
    with pytest.raises(EngineError, match="not placed at eu-frankfurt"):
        site_api("eu-frankfurt").claim_delivery(paris.pk)
    job.refresh_from_db()
    assert job.charged_at is None

    order = site_api("eu-paris-mpc").claim_delivery(paris.pk)
    assert order is not None and sorted(order.shares) == sorted([paris.party, geneva.party])
    job.refresh_from_db()
    delivery = job.steps.get(kind="deliver")
    assert job.charged_at is not None  # before any share could be opened
    assert (delivery.state, delivery.lease_site.name) == (JobStep.State.RUNNING, "eu-paris-mpc")
    # Another party's site, while the claim is live, gets nothing.
    assert site_api("ch-geneva-mpc").claim_delivery(geneva.pk) is None
    # Nor may it release through the delivery it does not hold.
    with pytest.raises(LeaseLost):
        site_api("ch-geneva-mpc").release(
            Lease("step", delivery.pk, delivery.attempt), {"columns": ["n"], "rows": [[1]]}
        )
    assert not Result.objects.filter(job=job).exists()


def test_a_share_inbox_hears_only_of_placements_at_its_own_site(job, site_api):
    step = step_at(job, "input", "eu-frankfurt")
    order = site_api("eu-frankfurt").claim_step(step.pk)
    assert order is not None
    paris = step_at(job, "compute", "eu-paris-mpc")
    geneva = step_at(job, "compute", "ch-geneva-mpc")

    def delivery(party: int) -> inbox.Delivery:
        return inbox.Delivery(
            job=job.pk,
            step=step.pk,
            attempt=order.attempt,
            dataset=step.dataset_id,
            party=party,
            length=1,
            sha256="0" * 64,
        )

    assert site_api("eu-paris-mpc").placement(delivery(paris.party), "eu-frankfurt") is None
    # Paris's inbox asking about Geneva's party: the placement is judged at the asking site.
    refused = site_api("eu-paris-mpc").placement(delivery(geneva.party), "eu-frankfurt")
    assert refused == f"job {job.pk} places no party {geneva.party} at eu-paris-mpc"
    # A sender that is not the input step's site.
    refused = site_api("eu-paris-mpc").placement(delivery(paris.party), "ch-zurich")
    assert refused is not None and "is not the site of input step" in refused

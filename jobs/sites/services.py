"""What a site has the control plane do for an attempt it holds, as the site API and the
in-process port ask it: claim the attempt (a TEE job's, an MPC step's, an MPC job's delivery)
and get its work order, renew its lease, report progress, record verdicts, key releases and
share transfers, be charged, hand over the step's output or the result, fail; and, for an MPC
party's share inbox, whether the job's placement lets it store a delivery.

Through the site API every act names the signing site: a claim for a job or step not placed at
it is refused and changes nothing (`NotPlaced`); any other act on an attempt whose lease it does
not hold is refused (`LeaseLost`), so a site can only ever act on what it claimed."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction

from dataplane.mechanisms import Stage
from jobs.engines.base import EngineError
from jobs.engines.mpc.inbox import Delivery
from jobs.engines.orders import DeliveryOrder, Lease, StepOrder, WorkOrder
from jobs.engines.registry import site_engine_of, step_engine_of
from jobs.execution import leases, lifecycle, steps
from jobs.execution.leases import LeaseLost
from jobs.execution.recorder import JobRecorder
from jobs.execution.records import JobRefused, record
from jobs.models import Job, JobStep
from jobs.results.release import release_extract, release_result
from parties.models import Site


class NotPlaced(JobRefused):
    code = "not_placed"


# Claims -----------------------------------------------------------------------------------------


def claim_attempt(job_id: int, step_site: str, *, at: Site | None = None) -> WorkOrder | None:
    """Claim the job's next attempt (lifecycle.start_attempt) and return its work order; None
    when there is nothing to do. `at`: the claiming site (default: this worker's own)."""
    job = lifecycle.start_attempt(job_id, step_site, at=at)
    if job is None:
        return None
    engine = site_engine_of(job.mechanism)
    return engine.work_order(job, engine.Config.from_settings(settings))


def _refuse_claim(job: Job, site: Site, what: str, placed: Site | None) -> None:
    """Another site's claim: audited, and the job left as it was (in-process, a worker handed
    another site's work fails it: the platform misrouted it; through the API the claimant may
    be lying)."""
    with transaction.atomic():
        record(
            job,
            "access.refused",
            what="claim",
            site=site.name,
            reason=f"{site.name} claimed {what} placed at {placed.name if placed else 'no site'}",
        )


def claim(job_id: int, site: Site) -> WorkOrder | None:
    """A site's claim through the site API: only for a job placed at that site."""
    job = Job.objects.select_related("query", "site").filter(pk=job_id).first()
    if job is None or job.site_id != site.pk:
        if job is not None:
            _refuse_claim(job, site, "a job", job.site)
        raise NotPlaced(f"Job {job_id} is not placed at {site.name}.")
    return claim_attempt(job_id, site.name, at=site)


def _step_placed_at(step_id: int, site: Site) -> JobStep:
    step = JobStep.objects.select_related("job__query", "site").filter(pk=step_id).first()
    if step is None or step.site_id != site.pk:
        if step is not None:
            _refuse_claim(step.job, site, f"the step '{step.name}'", step.site)
        raise NotPlaced(f"Step {step_id} is not placed at {site.name}.")
    return step


def claim_step_attempt(step_id: int, step_site: str, *, at: Site | None = None) -> StepOrder | None:
    """Claim the step's next attempt (steps.start_step) and return its order; None when there
    is nothing to do. `at`: the claiming site (default: this worker's own)."""
    step = steps.start_step(step_id, step_site, at=at)
    if step is None:
        return None
    engine = step_engine_of(step.job.mechanism)
    try:
        return engine.step_order(step, engine.Config.from_settings(settings))
    except EngineError as exc:
        steps.fail_step(step.pk, str(exc))
        return None


def claim_step(step_id: int, site: Site) -> StepOrder | None:
    """A site's claim of a step through the site API: only for a step placed at that site."""
    _step_placed_at(step_id, site)
    return claim_step_attempt(step_id, site.name, at=site)


def claim_delivery(step_id: int, site: Site | None) -> DeliveryOrder | None:
    """The delivery of compute step `step_id`'s job, claimed by that step's site (`site` None:
    in-process, this worker's own), which charges the job: its order, or None when it is not
    due (too few noisy shares, another site's live claim, a step that computes nothing)."""
    step = (
        _step_placed_at(step_id, site)
        if site is not None
        else JobStep.objects.select_related("job").get(pk=step_id)
    )
    if step.kind != Stage.COMPUTE:
        return None
    outputs = steps.claim_delivery(step.job_id, at=site)
    if outputs is None:
        return None
    delivery = JobStep.objects.select_related("job__query").get(
        job_id=step.job_id, kind=Stage.DELIVER
    )
    engine = step_engine_of(delivery.job.mechanism)
    try:
        return engine.delivery_order(delivery, outputs, engine.Config.from_settings(settings))
    except EngineError as exc:
        steps.fail_step(delivery.pk, str(exc))
        return None


# Acts on a lease held ---------------------------------------------------------------------------


def held(lease: Lease, site: Site) -> int:
    """The job of the attempt `lease` names, if `site` holds its lease (the attempt running, its
    own); LeaseLost otherwise."""
    if lease.kind == "job":
        job_id = (
            Job.objects.filter(
                pk=lease.id, attempt=lease.attempt, lease_site=site, state=Job.State.RUNNING
            )
            .values_list("pk", flat=True)
            .first()
        )
    else:
        job_id = (
            JobStep.objects.filter(
                pk=lease.id,
                attempt=lease.attempt,
                lease_site=site,
                state=JobStep.State.RUNNING,
                job__state=Job.State.RUNNING,
            )
            .values_list("job_id", flat=True)
            .first()
        )
    if job_id is None:
        raise LeaseLost(
            f"{site.name} does not hold the lease of {lease.kind} {lease.id}, "
            f"attempt {lease.attempt}."
        )
    return job_id


def renew(lease: Lease, site: Site) -> datetime:
    return leases.renew(lease, site.name)


def progress(lease: Lease, site: Site, percent: int, message: str) -> bool:
    return JobRecorder().progress(held(lease, site), percent, message)


def attestation(
    lease: Lease,
    site: Site,
    verdict: dict[str, Any],
    *,
    accepted: bool,
    reason: str,
    evidence: bytes | None,
) -> None:
    JobRecorder().attestation(
        _job_lease(lease, site), verdict, accepted=accepted, reason=reason, evidence=evidence
    )


def charge_at_key_release(lease: Lease, site: Site) -> None:
    JobRecorder().charge_at_key_release(_job_lease(lease, site))


def key_released(lease: Lease, site: Site, *, dataset: int, reason: str) -> None:
    JobRecorder().key_released(held(lease, site), dataset=dataset, site=site.name, reason=reason)


def shares_may_move(lease: Lease, site: Site, party: int) -> bool:
    """Residency's decision for the shares of the input step `site` holds, to `party`."""
    if lease.kind != "step":
        raise LeaseLost(f"{site.name} holds no input step as {lease.kind} {lease.id}.")
    held(lease, site)
    return JobRecorder().shares_may_move(lease.id, party)


def complete(lease: Lease, site: Site | None, output: dict[str, Any]) -> None:
    """Record an MPC input or compute step's output, for the attempt held (`site` None:
    in-process)."""
    if site is not None:
        held(lease, site)
    if not JobStep.objects.filter(pk=lease.id, kind__in=(Stage.INPUT, Stage.COMPUTE)).exists():
        raise EngineError(f"Step {lease.id} is not an input or compute step.")
    steps.complete_step(lease.id, output, attempt=lease.attempt)


def release(lease: Lease, site: Site | None, table: dict[str, Any]) -> None:
    """Store the result for its receivers and finish the job, once (`site` None: in-process):
    a TEE job's, or an MPC job's delivery's."""
    job_id = held(lease, site) if site is not None else _job_of(lease)
    if (
        lease.kind == "step"
        and not JobStep.objects.filter(pk=lease.id, kind=Stage.DELIVER).exists()
    ):
        raise EngineError(f"Step {lease.id} is not a delivery: it releases nothing.")
    if "extract" in table:
        release_extract(job_id, table["extract"], table["files"])
    else:
        release_result(job_id, table)


def fail(lease: Lease, site: Site | None, reason: str) -> None:
    if site is not None:
        held(lease, site)
    if lease.kind == "job":
        lifecycle.fail_job(lease.id, reason)
    else:
        steps.fail_step(lease.id, reason)


def _job_lease(lease: Lease, site: Site) -> int:
    if lease.kind != "job":
        raise LeaseLost(f"{site.name} holds no job as {lease.kind} {lease.id}.")
    return held(lease, site)


def _job_of(lease: Lease) -> int:
    if lease.kind == "job":
        return lease.id
    return JobStep.objects.values_list("job_id", flat=True).get(pk=lease.id)


# The share inbox's question ---------------------------------------------------------------------


def placement_refusal(delivery: Delivery, sender: str, own_site: str) -> str | None:
    """Why a party's inbox must refuse a delivery, from the job's steps as the platform placed
    them: only the running attempt of the job's input step for that dataset, from that step's
    site, for a party index the job places at this inbox's site."""
    step = (
        JobStep.objects.filter(pk=delivery.step, job_id=delivery.job, kind=Stage.INPUT)
        .select_related("site")
        .first()
    )
    if step is None:
        return f"job {delivery.job} has no input step {delivery.step}"
    if step.site is None or step.site.name != sender:
        return f"{sender} is not the site of input step {delivery.step} of job {delivery.job}"
    if step.dataset_id != delivery.dataset:
        return f"input step {delivery.step} does not read dataset {delivery.dataset}"
    if step.state != JobStep.State.RUNNING or step.attempt != delivery.attempt:
        return f"attempt {delivery.attempt} of input step {delivery.step} is not running"
    placed = JobStep.objects.filter(
        job_id=delivery.job, kind=Stage.COMPUTE, party=delivery.party, site__name=own_site
    )
    if not placed.exists():
        return f"job {delivery.job} places no party {delivery.party} at {own_site}"
    return None


def encode_files(files: dict[str, bytes]) -> dict[str, str]:
    return {name: base64.b64encode(content).decode() for name, content in files.items()}


def decode_files(files: dict[str, str]) -> dict[str, bytes]:
    try:
        return {name: base64.b64decode(content, validate=True) for name, content in files.items()}
    except ValueError:
        raise EngineError("An extract file is not base64.") from None

"""The steps of a job that runs at several sites (MPC): claims, outputs, failure, and delivery.

One input step per dataset at a worker site in its jurisdiction, one compute step per MPC party,
and the delivery. Input steps are dispatched with the job; the compute steps together once every
input step has succeeded; the compute step that stores the (t + 1)-th noisy output share claims
the delivery. Each claim takes the job's row lock, so redelivered steps and concurrent parties
change nothing twice."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from dataplane.mechanisms import Stage
from jobs.engines.base import party_of
from jobs.engines.registry import step_engine_of
from jobs.execution import leases, outbox
from jobs.execution.finish import finish
from jobs.execution.lifecycle import MAX_ATTEMPTS, reserve_budget
from jobs.execution.records import locked_job, record, record_step, record_step_residency
from jobs.execution.sites import own_site
from jobs.models import Job, JobStep
from jobs.queries.services import QueryRefused, check_runnable
from parties.models import Site


def _begin_job(job: Job) -> bool:
    """The first step of an MPC job to start moves it to running and reserves its budget, in
    the step's transaction. False (and the job failed) when the budget refuses."""
    if job.state != Job.State.QUEUED:
        return True
    job.state = Job.State.RUNNING
    job.attempt = 1
    job.started_at = timezone.now()
    job.progress, job.progress_message = 5, "Reading each owner's data at its own site"
    job.save()
    if not reserve_budget(job):
        return False
    record(job, "job.started", attempt=job.attempt, site=None)
    return True


def start_step(step_id: int, step_site: str, *, at: Site | None = None) -> JobStep | None:
    """Claim the next attempt of an MPC job's step at this worker's site (`at`: the site
    claiming through the site API); None when there is nothing to do (the step is done, the job
    finished, or the claim was refused and the job failed, with the reason)."""
    site = at or own_site()
    with transaction.atomic():
        job = locked_job(JobStep.objects.values_list("job_id", flat=True).get(pk=step_id))
        step = JobStep.objects.select_related("site", "dataset").get(pk=step_id)
        if job.finished or step.state in (JobStep.State.SUCCEEDED, JobStep.State.FAILED):
            return None
        if site.name != step_site or site.pk != step.site_id:
            intended = step.site.name if step.site else "no site"
            record(
                job,
                "access.refused",
                what="step",
                step=step.name,
                site=site.name,
                reason=f"worker at {site.name} received a step for {intended}",
            )
            _fail_step(
                job,
                step,
                f"A worker at {site.name} received the step '{step.name}' for {intended}.",
            )
            return None
        if leases.live(step):
            return None  # a copy delivered again, as for a job (start_attempt)
        if job.cancel_requested:
            finish(job, Job.State.CANCELLED, "Cancelled while its steps were queued.")
            return None
        if not record_step_residency(job, step, checked_by="worker"):
            _fail_step(job, step, f"Residency refused the step '{step.name}' at the worker.")
            return None
        if step.kind == Stage.COMPUTE and step.attempt > 0:
            # Its lease ran out (the sweep has not come yet). The parties of an MPC round run
            # together; a new process cannot join a round whose other parties have moved on
            # or stopped.
            _fail_step(
                job,
                step,
                f"The compute party at {site.name} was lost mid-computation; an MPC round "
                "cannot resume with a new party process.",
            )
            return None
        if step.attempt >= MAX_ATTEMPTS:
            _fail_step(job, step, f"Gave up after {step.attempt} attempts.")
            return None
        if (
            step.kind == Stage.COMPUTE
            and job.steps.filter(kind=Stage.INPUT).exclude(state=JobStep.State.SUCCEEDED).exists()
        ):
            _fail_step(job, step, "A compute step arrived before every input step succeeded.")
            return None
        try:
            check_runnable(job.query, running=True)
        except QueryRefused as exc:
            _fail_step(job, step, str(exc))
            return None
        if not _begin_job(job):
            return None
        step.attempt += 1
        step.state = JobStep.State.RUNNING
        step.started_at = timezone.now()
        leases.grant(step, site)
        step.save(
            update_fields=["attempt", "state", "started_at", "lease_site", "lease_expires_at"]
        )
        record_step(job, "job.step.started", step)
    return step


def _progress(job: Job) -> None:
    steps = list(job.steps.all())
    done = sum(s.state == JobStep.State.SUCCEEDED for s in steps)
    job.progress = max(job.progress, 5 + 85 * done // len(steps))


def complete_step(step_id: int, output: dict[str, Any], *, attempt: int) -> bool:
    """Record the output of a step's `attempt`. Once every input step has succeeded the
    compute steps are dispatched, together, after this commits. Returns False when the job
    had finished, or the attempt was replaced (its lease ran out): its output is not used."""
    with transaction.atomic():
        job = locked_job(JobStep.objects.values_list("job_id", flat=True).get(pk=step_id))
        step = JobStep.objects.select_related("site").get(pk=step_id)
        if step.state != JobStep.State.RUNNING or step.attempt != attempt:
            return False
        step.state = JobStep.State.SUCCEEDED
        step.output = output
        step.finished_at = timezone.now()
        step.save(update_fields=["state", "output", "finished_at"])
        if step.kind == Stage.INPUT:
            shares = [
                {"party": int(party), "site": ref["site"], "sha256": ref["sha256"]}
                for party, ref in sorted(output["shares"].items())
            ]
            record_step(job, "job.step.succeeded", step, shares=shares)
        else:
            record_step(
                job,
                "job.step.succeeded",
                step,
                output_sha256=output["share"]["sha256"],
                bytes_sent=output.get("bytes_sent"),
                bytes_received=output.get("bytes_received"),
            )
        if job.finished:
            # A party that finished after the job was released or failed: its share is unused.
            return False
        _progress(job)
        pending = job.steps.filter(kind=Stage.INPUT).exclude(state=JobStep.State.SUCCEEDED)
        if step.kind == Stage.INPUT and not pending.exists():
            job.progress_message = "Shares sent; the compute parties start"
            transaction.on_commit(lambda: outbox.dispatch(job.pk))
        elif step.kind == Stage.COMPUTE:
            job.progress_message = f"Compute party {party_of(step) + 1} stored its noisy share"
        job.save(update_fields=["progress", "progress_message"])
    return True


def recombination_threshold(job: Job) -> int:
    computing = job.steps.filter(kind=Stage.COMPUTE).count()
    return step_engine_of(job.mechanism).outputs_needed(computing)


def claim_delivery(job_id: int, *, at: Site | None = None) -> list[JobStep] | None:
    """When t + 1 compute steps stored their noisy output shares and the job is not finished,
    claim the delivery at this worker's site (`at`: the site claiming through the site API):
    from now a noisy value can be opened, so a
    failure spends the budget. Returns the compute steps whose shares to recombine, or None.
    A delivery another step claimed is taken over only once its lease ran out (a compute
    step's task delivered again, whose first delivery was lost with its worker): it opens the
    same stored noisy shares, so no fresh noise is drawn for the charge."""
    with transaction.atomic():
        job = locked_job(job_id)
        if job.finished:
            return None
        outputs = list(
            job.steps.filter(kind=Stage.COMPUTE, state=JobStep.State.SUCCEEDED).order_by("party")
        )
        if len(outputs) < recombination_threshold(job):
            return None
        if job.cancel_requested and job.charged_at is None:
            finish(job, Job.State.CANCELLED, "Cancelled before the noisy result was opened.")
            return None
        delivery = job.steps.get(kind=Stage.DELIVER)
        if leases.live(delivery):
            return None
        if delivery.attempt >= MAX_ATTEMPTS:
            _fail_step(job, delivery, f"Gave up after {delivery.attempt} attempts.")
            return None
        delivery.attempt += 1
        delivery.state = JobStep.State.RUNNING
        delivery.started_at = delivery.started_at or timezone.now()
        leases.grant(delivery, at or own_site())
        delivery.save(
            update_fields=["attempt", "state", "started_at", "lease_site", "lease_expires_at"]
        )
        if job.charged_at is None:
            # The delivery key is unwrapped next, and opens the noisy result: charged first.
            job.charged_at = timezone.now()
            record(job, "job.charged", released="delivery key")
        job.progress_message = "Recombining the noisy output shares"
        job.save(update_fields=["charged_at", "progress_message"])
        record_step(
            job, "job.step.started", delivery, shares_from=[f"party:{s.party}" for s in outputs]
        )
    return outputs


def fail_step(step_id: int, reason: str) -> None:
    with transaction.atomic():
        job = locked_job(JobStep.objects.values_list("job_id", flat=True).get(pk=step_id))
        step = JobStep.objects.select_related("site").get(pk=step_id)
        if step.state in (JobStep.State.SUCCEEDED, JobStep.State.FAILED):
            return
        _fail_step(job, step, reason)


def _fail_step(job: Job, step: JobStep, reason: str) -> None:
    """A failed step fails its job, unless enough noisy output shares are stored to deliver
    without it (a compute party lost after its peers finished)."""
    step.state = JobStep.State.FAILED
    step.error = reason
    step.finished_at = timezone.now()
    step.save(update_fields=["state", "error", "finished_at"])
    record_step(job, "job.step.failed", step, reason=reason)
    if job.finished:
        return
    if step.kind == Stage.COMPUTE and (
        job.steps.filter(kind=Stage.COMPUTE, state=JobStep.State.SUCCEEDED).count()
        >= recombination_threshold(job)
    ):
        return
    state = Job.State.CANCELLED if job.cancel_requested else Job.State.FAILED
    finish(job, state, reason)


def complete_delivery(job: Job) -> None:
    """The delivery step of an MPC job succeeds with its release (in release_result's
    transaction)."""
    delivery = job.steps.filter(kind=Stage.DELIVER).first()
    if delivery is None:
        return
    delivery.state = JobStep.State.SUCCEEDED
    delivery.finished_at = timezone.now()
    delivery.save(update_fields=["state", "finished_at"])
    record_step(job, "job.step.succeeded", delivery)

"""The sweep: what a lease that ran out means (`expire_leases`, run by beat every
JOB_LEASE_SWEEP_SECONDS). Its site stopped renewing it: the site's worker died, or lost the
platform. So a job whose site died is sent again or ended within JOB_LEASE_SECONDS +
JOB_LEASE_SWEEP_SECONDS, whatever the broker does with the task it had.

- A job of one site (the TEE's) is sent again, its reservation kept, while that is safe: no
  key left the key service and it has attempts left (the outbox sends it, and its site's
  worker claims the next attempt). Once charged it fails and stays spent (a new enclave would
  draw fresh noise for the same charge); out of attempts it fails and is refunded.
- An MPC input step is sent again as well (it draws no noise; the job is charged only at the
  delivery); a compute step fails its job (an MPC round cannot resume with a new party
  process), unless enough noisy output shares are stored without it; the delivery fails its
  charged job, spent.
- A job the analyst cancelled ends cancelled once nothing of it runs: a lease ran out, or
  (MPC) its steps wait for sites that are not taking them.

Each expiry is audited (`job.lease_expired`), then the job's or step's usual events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from dataplane.mechanisms import Stage
from jobs.engines.registry import ENGINES
from jobs.execution import leases, outbox
from jobs.execution.finish import finish
from jobs.execution.lifecycle import MAX_ATTEMPTS
from jobs.execution.records import locked_job, record
from jobs.execution.steps import fail_step
from jobs.models import Job, JobStep


@dataclass(frozen=True)
class Expired:
    """What the sweep did: `retried`, `failed` or `cancelled`."""

    job: int
    step: str | None
    outcome: str


def expire_leases(now: datetime | None = None) -> list[Expired]:
    """Expire every lease that ran out by `now` (default: the time now), and end every
    cancelled job of steps that nothing runs."""
    now = now or timezone.now()
    ran_out = Q(lease_expires_at__lt=now) | Q(lease_expires_at__isnull=True)
    in_steps = [mechanism for mechanism, engine in ENGINES.items() if engine.in_steps]
    jobs = Job.objects.filter(ran_out, state=Job.State.RUNNING).exclude(mechanism__in=in_steps)
    steps = JobStep.objects.filter(
        ran_out, state=JobStep.State.RUNNING, job__state=Job.State.RUNNING
    )
    cancelled = (
        Job.objects.filter(state=Job.State.RUNNING, cancel_requested=True, mechanism__in=in_steps)
        .exclude(steps__state=JobStep.State.RUNNING)
        .distinct()
    )
    done = [_expire_job(pk, now) for pk in jobs.values_list("pk", flat=True)]
    done += [_expire_step(pk, now) for pk in steps.values_list("pk", flat=True)]
    done += [_cancel_idle(pk) for pk in cancelled.values_list("pk", flat=True)]
    return [expired for expired in done if expired]


def _site(held: Job | JobStep) -> str:
    return held.lease_site.name if held.lease_site else "its site"


def _audit(job: Job, held: Job | JobStep, outcome: str) -> None:
    step = {"step": held.name, "kind": held.kind} if isinstance(held, JobStep) else {}
    record(
        job,
        "job.lease_expired",
        None,
        **step,
        site=held.lease_site.name if held.lease_site else None,
        attempt=held.attempt,
        expired_at=held.lease_expires_at.isoformat() if held.lease_expires_at else None,
        outcome=outcome,
    )


def _expire_job(job_id: int, now: datetime) -> Expired | None:
    with transaction.atomic():
        job = locked_job(job_id)
        if job.state != Job.State.RUNNING or leases.live(job, now):
            return None  # it ended, or its site renewed the lease meanwhile
        lost = f"its host at {_site(job)} stopped renewing the job's lease"
        if job.cancel_requested:
            state, reason = Job.State.CANCELLED, f"Cancelled; {lost}."
        elif job.charged_at is not None:
            state, reason = (
                Job.State.FAILED,
                f"The keys were released to its enclave, then {lost}: the job is charged and "
                "does not run again with fresh noise.",
            )
        elif job.attempt >= MAX_ATTEMPTS:
            state, reason = Job.State.FAILED, f"Gave up after {job.attempt} attempts: {lost}."
        else:
            _audit(job, job, "retried")
            job.state = Job.State.QUEUED
            job.dispatched_at = None
            job.progress_message = f"Sent again: {lost} (attempt {job.attempt})"
            job.save(update_fields=["state", "dispatched_at", "progress_message"])
            transaction.on_commit(lambda: outbox.dispatch(job_id))
            return Expired(job_id, None, "retried")
        _audit(job, job, state)
        finish(job, state, reason)
    return Expired(job_id, None, state)


def _expire_step(step_id: int, now: datetime) -> Expired | None:
    with transaction.atomic():
        job = locked_job(JobStep.objects.values_list("job_id", flat=True).get(pk=step_id))
        step = (
            JobStep.objects.select_for_update(of=("self",)).select_related("site").get(pk=step_id)
        )
        if job.finished or step.state != JobStep.State.RUNNING or leases.live(step, now):
            return None
        lost = f"step '{step.name}' at {_site(step)} stopped renewing its lease"
        if step.kind == Stage.INPUT and not job.cancel_requested and step.attempt < MAX_ATTEMPTS:
            # An input step draws no noise (the job is charged only at the delivery).
            _audit(job, step, "retried")
            step.state = JobStep.State.QUEUED
            step.dispatched_at = None
            step.save(update_fields=["state", "dispatched_at"])
            transaction.on_commit(lambda: outbox.dispatch(job.pk))
            return Expired(job.pk, step.name, "retried")
        if job.cancel_requested:
            reason = f"Cancelled; the {lost}."
        elif step.kind == Stage.INPUT:
            reason = f"Gave up after {step.attempt} attempts: the {lost}."
        elif step.kind == Stage.COMPUTE:
            reason = f"The {lost}: an MPC round cannot resume with a new party process."
        else:
            reason = f"The {lost} after the job was charged."
        outcome = "cancelled" if job.cancel_requested else "failed"
        _audit(job, step, outcome)
        fail_step(step.pk, reason)
    return Expired(job.pk, step.name, outcome)


def _cancel_idle(job_id: int) -> Expired | None:
    with transaction.atomic():
        job = locked_job(job_id)
        if job.finished or job.steps.filter(state=JobStep.State.RUNNING).exists():
            return None
        finish(job, Job.State.CANCELLED, "Cancelled while its steps waited for their sites.")
    return Expired(job_id, None, Job.State.CANCELLED)

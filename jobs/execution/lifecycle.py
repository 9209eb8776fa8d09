"""Running approved queries: creation, attempts, cancellation, failure, each exactly once.

The web tier creates the job and hands it to the outbox after the transaction commits. The worker
at the job's site claims an attempt under the job's row lock, so a re-delivered task or a retry
after a killed worker never charges budget or releases a result twice. Budget is reserved in the
transaction that starts the first attempt. The job is charged when its keys leave the key service
(`charge_at_key_release`: the enclave's data keys, or the MPC delivery key), not on anything a
host reports: from then a noisy value may exist, so the reservation is spent however the job
ends, and the job never runs again with fresh noise. A job that ends before that is refunded."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.utils import timezone

from cleanroom.residency import StepKind, decide
from jobs.budget.ledger import BudgetExceeded, charge_of, reserve
from jobs.engines.registry import engine_of
from jobs.execution import leases, outbox
from jobs.execution.finish import finish
from jobs.execution.records import (
    JobRefused,
    locked_job,
    record,
    record_residency,
    record_step_residency,
)
from jobs.execution.sites import job_site, own_site
from jobs.models import BudgetEntry, Job, Query
from jobs.permissions import Permission, acting_organization
from jobs.queries.services import QueryRefused, check_runnable
from parties.models import Site

MAX_ATTEMPTS = 3


def run_query(*, query: Query, by: User) -> Job:
    """Start an approved query: checks every condition again, creates its one job, and hands
    the job to its site's queue once the transaction has committed."""
    with transaction.atomic():
        query = (
            Query.objects.select_for_update(of=("self",)).select_related("room").get(pk=query.pk)
        )
        if acting_organization(by, query.room, Permission.PROPOSE_QUERY) is None:
            raise PermissionDenied("Only analysts of a member organisation run queries.")
        if Job.objects.filter(query=query).exists():
            raise JobRefused(
                "This version has already run; a new run needs a new version and new approvals.",
                code="already_ran",
                conflict=True,
            )
        plan = check_runnable(query)
        if plan.mechanism is None:
            raise JobRefused("The plan chose no mechanism to run this query.", code="no_mechanism")
        engine = engine_of(plan.mechanism)
        site = None if engine.in_steps else Site.objects.get(name=plan.steps[0].site)
        try:
            job = Job.objects.create(
                query=query, mechanism=plan.mechanism, site=site, created_by=by
            )
        except IntegrityError:
            raise JobRefused(
                "This version has already run.", code="already_ran", conflict=True
            ) from None
        query.status = Query.Status.RUNNING
        query.save(update_fields=["status"])
        record(
            job,
            "job.dispatched",
            by,
            query=f"query:{query.pk}",
            digest=query.digest,
            steps=[
                {"step": s.name, "site": s.site, "jurisdiction": s.jurisdiction}
                for s in plan.steps
                if s.site
            ],
        )
        if engine.in_steps:
            allowed = all(
                record_step_residency(job, step, checked_by="dispatcher")
                for step in engine.create_steps(
                    job, plan.steps, engine.Config.from_settings(settings)
                )
                if step.site_id
            )
        else:
            allowed = record_residency(job, "enclave", job_site(job), checked_by="dispatcher")
        if not allowed:
            raise JobRefused("Residency refuses this step at its site.", code="residency")
        transaction.on_commit(lambda: outbox.dispatch(job.pk))
    return job


def start_attempt(job_id: int, step_site: str, *, at: Site | None = None) -> Job | None:
    """Claim the next attempt of a job at this worker's site (`at`: the site claiming through
    the site API); None when there is nothing to do."""
    site = at or own_site()
    with transaction.atomic():
        job = (
            Job.objects.select_for_update(of=("self",))
            .select_related("query__room", "site")
            .get(pk=job_id)
        )
        if job.finished:
            return None
        if site.name != step_site or site.pk != job.site_id:
            intended = job.site.name if job.site else "no site"
            record(
                job,
                "access.refused",
                what="step",
                site=site.name,
                reason=f"worker at {site.name} received a step for {intended}",
            )
            finish(
                job,
                Job.State.FAILED,
                f"A worker at {site.name} received this job's step for {intended}.",
            )
            return None
        if leases.live(job):
            # A copy of the task the broker delivered again: the attempt that holds the lease
            # runs. Should its worker have died, the sweep sends the job again once it runs out.
            return None
        if job.cancel_requested:
            finish(job, Job.State.CANCELLED, "Cancelled before it started.")
            return None
        if not record_residency(job, "enclave", site, checked_by="worker"):
            finish(job, Job.State.FAILED, "Residency refused the step at the worker.")
            return None
        if job.charged_at is not None:
            # An earlier attempt's enclave got the keys and may have drawn noise: a new enclave
            # would draw fresh noise for the same charge.
            finish(
                job,
                Job.State.FAILED,
                "The keys were released to an enclave in an earlier attempt that did not "
                "finish: the job is charged and does not run again with fresh noise.",
            )
            return None
        if job.attempt >= MAX_ATTEMPTS:
            finish(job, Job.State.FAILED, f"Gave up after {job.attempt} attempts.")
            return None
        try:
            check_runnable(job.query, running=True)
        except QueryRefused as exc:
            finish(job, Job.State.FAILED, str(exc))
            return None
        first = job.attempt == 0
        job.attempt += 1
        job.state = Job.State.RUNNING
        job.started_at = job.started_at or timezone.now()
        job.progress, job.progress_message = 5, "Starting the enclave"
        leases.grant(job, site)
        job.save()
        if first and not reserve_budget(job):
            return None
        record(job, "job.started", attempt=job.attempt, site=site.name)
    return job


def reserve_budget(job: Job) -> bool:
    """Reserve the job's charge on every dataset it reads, in the transaction that starts it;
    False (and the job failed, nothing reserved) when a dataset's budget refuses."""
    epsilon, delta = charge_of(job.query)
    try:
        reserve(query=job.query, room=job.query.room, epsilon=epsilon, delta=delta)
    except BudgetExceeded as exc:
        finish(job, Job.State.FAILED, str(exc))
        return False
    for entry in BudgetEntry.objects.filter(query=job.query):
        record(
            job,
            "budget.reserved",
            dataset=f"dataset:{entry.dataset_id}",
            epsilon=str(entry.epsilon),
            delta=str(entry.delta),
        )
    return True


def report_progress(job_id: int, percent: int, message: str) -> bool:
    """Record progress; returns False when the job was cancelled meanwhile."""
    Job.objects.filter(pk=job_id, state=Job.State.RUNNING).update(
        progress=percent, progress_message=message
    )
    return not Job.objects.filter(pk=job_id, cancel_requested=True).exists()


def charge_at_key_release(job_id: int) -> None:
    """Charge the job as its data keys are about to leave the key service for an enclave,
    committed before any key is unwrapped: from then a noisy value may exist, whatever the
    host reports or hides. Once per job, across attempts: a second enclave (asked for by a
    host that starts enclaves at will, or by a later attempt) is refused, and the refusal
    audited, so one charge buys one noisy release."""
    with transaction.atomic():
        job = locked_job(job_id)
        if job.state != Job.State.RUNNING:
            reason = "The job is not running; no keys are released."
        elif job.cancel_requested:
            reason = "The job was cancelled; no keys are released."
        elif job.charged_at is not None:
            reason = (
                "This job's keys were already released to an enclave: a second enclave would "
                "draw a second noisy release for one charge."
            )
        elif refusal := _residency_refusal(job):
            reason = refusal
        else:
            job.charged_at = timezone.now()
            job.save(update_fields=["charged_at"])
            record(job, "job.charged", released="data keys")
            return
        record(job, "key.refused", reason=reason)
    raise JobRefused(reason, code="keys_refused")


def _residency_refusal(job: Job) -> str:
    """Why residency, as the rules stand now, refuses a dataset of the job at its enclave's
    site ("" when none does): rules tightened after the claim refuse every key, uncharged."""
    site = job_site(job)
    for contribution in job.query.room.contributions.filter(
        dataset_id__in=job.query.dataset_ids
    ).select_related("dataset__jurisdiction", "dataset__organization"):
        decision = decide(
            StepKind.PROCESS_ROWS, data=contribution.dataset.jurisdiction.rules(), site=site.place()
        )
        if not decision.allowed:
            return (
                f"Residency refuses {contribution.dataset.qualified_name} at {site.name}: "
                f"{decision.reason}"
            )
    return ""


def fail_job(job_id: int, reason: str) -> None:
    with transaction.atomic():
        job = (
            Job.objects.select_for_update(of=("self",)).select_related("query__room").get(pk=job_id)
        )
        if not job.finished:
            # An attempt that stopped because the analyst cancelled it ends cancelled.
            state = Job.State.CANCELLED if job.cancel_requested else Job.State.FAILED
            finish(job, state, reason)


def cancel_job(*, job: Job, by: User) -> Job:
    with transaction.atomic():
        job = (
            Job.objects.select_for_update(of=("self",)).select_related("query__room").get(pk=job.pk)
        )
        if acting_organization(by, job.query.room, Permission.PROPOSE_QUERY) is None:
            raise PermissionDenied("Only analysts of a member organisation cancel jobs.")
        if job.finished:
            raise JobRefused(
                f"The job has already {job.get_state_display().lower()}.",
                code="already_finished",
                conflict=True,
            )
        if job.state == Job.State.QUEUED:
            finish(job, Job.State.CANCELLED, "Cancelled before it started.", by=by)
        else:
            job.cancel_requested = True
            job.save(update_fields=["cancel_requested"])
            record(job, "job.cancel_requested", by)
    return job

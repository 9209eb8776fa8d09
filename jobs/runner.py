"""Running approved queries: dispatch, attempts, release and failure, each exactly once.

The web tier creates the job and hands its step to the broker after the transaction commits;
a job the broker did not take (`dispatched_at` unset) is sent again by `dispatch_pending`.
The worker at the step's site claims an attempt under the job's row lock, so a re-delivered task
or a retry after a killed worker never charges budget or releases a result twice. Budget is
reserved in the transaction that starts the first attempt, spent when the result is released,
and refunded when the job ends without any noisy value having been drawn.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from decimal import Decimal
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from cleanroom.audit.log import record_room_event
from cleanroom.crypto.keys import key_service
from cleanroom.errors import DomainError
from cleanroom.residency import StepKind, decide
from jobs.models import BudgetEntry, Job, Query, Result, ResultKey
from jobs.permissions import Permission, has_permission
from jobs.privacy import ledger
from jobs.queries import QueryRefused, check_runnable
from parties.models import Organization, Site
from parties.selectors import organizations_of

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 3


class JobRefused(DomainError):
    code = "job_refused"


def _record(job: Job, type: str, by: User | None = None, **data: Any) -> None:
    record_room_event(
        job.query.room_id, type, by=by, subject=f"job:{job.pk}", job=f"job:{job.pk}", **data
    )


def _record_residency(job: Job, step: str, site: Site, checked_by: str) -> bool:
    """Decide and audit residency for every dataset the job reads at `site`."""
    allowed = True
    for contribution in job.query.room.contributions.filter(
        dataset_id__in=job.query.dataset_ids
    ).select_related("dataset__jurisdiction"):
        decision = decide(StepKind.PROCESS_ROWS, data=contribution.dataset.jurisdiction, site=site)
        _record(
            job,
            "residency.decided",
            step=step,
            site=site.name,
            site_jurisdiction=decision.destination_jurisdiction,
            data_jurisdiction=decision.data_jurisdiction,
            kind=decision.kind.value,
            allowed_jurisdictions=list(decision.allowed_jurisdictions),
            allowed=decision.allowed,
            reason=decision.reason,
            checked_by=checked_by,
            dataset=f"dataset:{contribution.dataset_id}",
        )
        allowed = allowed and decision.allowed
    return allowed


def run_query(*, query: Query, by: User) -> Job:
    """Start an approved query: checks every condition again, creates its one job, and hands
    the job to its site's queue once the transaction has committed."""
    with transaction.atomic():
        query = (
            Query.objects.select_for_update(of=("self",)).select_related("room").get(pk=query.pk)
        )
        if not any(
            has_permission(by, Permission.PROPOSE_QUERY, room=query.room, organization=org)
            for org in organizations_of(by)
        ):
            raise JobRefused(
                "Only analysts of a member organisation run queries.", code="forbidden"
            )
        if Job.objects.filter(query=query).exists():
            raise JobRefused(
                "This version has already run; a new run needs a new version and new approvals.",
                code="already_ran",
                conflict=True,
            )
        plan = check_runnable(query)
        if plan.mechanism != "tee":
            raise JobRefused(
                "The MPC engine is not available yet: revise the query with the "
                "TEE as its mechanism.",
                code="engine_unavailable",
            )
        site = Site.objects.get(name=plan.steps[0]["site"])
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
        _record(
            job,
            "job.dispatched",
            by,
            query=f"query:{query.pk}",
            digest=query.digest,
            steps=[
                {"step": s["step"], "site": s["site"], "jurisdiction": s["jurisdiction"]}
                for s in plan.steps
                if s["site"]
            ],
        )
        if not _record_residency(job, "enclave", site, checked_by="dispatcher"):
            raise JobRefused("Residency refuses this step at its site.", code="residency")
        transaction.on_commit(lambda: dispatch(job.pk))
    return job


def dispatch(job_id: int) -> bool:
    """Hand the job's step to its site's queue; on a broker outage it stays for the next try."""
    from jobs.tasks import run_tee_job

    job = Job.objects.select_related("site").get(pk=job_id)
    if job.dispatched_at or job.finished:
        return False
    try:
        run_tee_job.apply_async(args=[job.pk, job.site.name], queue=job.site.queue, retry=False)
    except Exception:
        log.warning("broker unavailable: job %s waits to be dispatched", job.pk, exc_info=True)
        return False
    Job.objects.filter(pk=job.pk, dispatched_at__isnull=True).update(dispatched_at=timezone.now())
    return True


def dispatch_pending() -> int:
    """The outbox: send every queued job the broker has not taken yet."""
    return sum(
        dispatch(pk)
        for pk in Job.objects.filter(
            state=Job.State.QUEUED, dispatched_at__isnull=True
        ).values_list("pk", flat=True)
    )


def own_site() -> Site:
    """The site this worker runs at, from its environment; a worker serves one site only."""
    name = os.environ.get("CLEANROOM_SITE") or settings.CLEANROOM_SITE
    if not name:
        raise JobRefused("This worker does not know its site (set CLEANROOM_SITE).")
    return Site.objects.select_related("jurisdiction").get(name=name)


def start_attempt(job_id: int, step_site: str) -> Job | None:
    """Claim the next attempt of a job at this worker's site; None when there is nothing to do."""
    site = own_site()
    with transaction.atomic():
        job = (
            Job.objects.select_for_update(of=("self",))
            .select_related("query__room", "site")
            .get(pk=job_id)
        )
        if job.finished:
            return None
        if site.name != step_site or site.pk != job.site_id:
            _record(
                job,
                "access.refused",
                what="step",
                site=site.name,
                reason=f"worker at {site.name} received a step for {job.site.name}",
            )
            _finish(
                job,
                Job.State.FAILED,
                f"A worker at {site.name} received this job's step for {job.site.name}.",
            )
            return None
        if job.cancel_requested:
            _finish(job, Job.State.CANCELLED, "Cancelled before it started.")
            return None
        if not _record_residency(job, "enclave", site, checked_by="worker"):
            _finish(job, Job.State.FAILED, "Residency refused the step at the worker.")
            return None
        if job.attempt >= MAX_ATTEMPTS:
            _finish(job, Job.State.FAILED, f"Gave up after {job.attempt} attempts.")
            return None
        try:
            check_runnable(job.query, running=True)
        except QueryRefused as exc:
            _finish(job, Job.State.FAILED, str(exc))
            return None
        first = job.attempt == 0
        job.attempt += 1
        job.state = Job.State.RUNNING
        job.started_at = job.started_at or timezone.now()
        job.progress, job.progress_message = 5, "Starting the enclave"
        job.save()
        if first:
            try:
                epsilon, delta = charge_of(job.query)
                ledger.reserve(query=job.query, room=job.query.room, epsilon=epsilon, delta=delta)
            except ledger.BudgetExceeded as exc:
                _finish(job, Job.State.FAILED, str(exc))
                return None
            for entry in BudgetEntry.objects.filter(query=job.query):
                _record(
                    job,
                    "budget.reserved",
                    dataset=f"dataset:{entry.dataset_id}",
                    epsilon=str(entry.epsilon),
                    delta=str(entry.delta),
                )
        _record(job, "job.started", attempt=job.attempt, site=site.name)
    return job


def charge_of(query: Query) -> tuple[Decimal, Decimal]:
    """What the ledger reserves on each dataset: the query's ε and δ, or for a synthetic
    extract the cost of its method as approved (part of the digest every owner signed)."""
    if query.output_kind == Query.OutputKind.SYNTHETIC:
        charge = query.canonical["synthetic"]["charge"]
        return Decimal(charge["epsilon"]), Decimal(charge["delta"])
    return query.epsilon, query.delta


def report_progress(job_id: int, percent: int, message: str) -> bool:
    """Record progress; returns False when the job was cancelled meanwhile."""
    Job.objects.filter(pk=job_id, state=Job.State.RUNNING).update(
        progress=percent, progress_message=message
    )
    return not Job.objects.filter(pk=job_id, cancel_requested=True).exists()


def mark_noise_drawn(job_id: int) -> None:
    Job.objects.filter(pk=job_id, noise_drawn_at__isnull=True).update(noise_drawn_at=timezone.now())


def record_attestation(
    job_id: int,
    attestation: dict[str, Any],
    *,
    accepted: bool,
    reason: str = "",
    evidence: bytes | None = None,
) -> None:
    with transaction.atomic():
        job = Job.objects.select_for_update(of=("self",)).select_related("query").get(pk=job_id)
        job.attestation = {**attestation, "accepted": accepted, "reason": reason}
        job.save(update_fields=["attestation"])
        _record(
            job,
            "attestation.verified" if accepted else "attestation.refused",
            **attestation,
            reason=reason,
            attach={"attestation.cbor": evidence} if evidence else None,
        )


def record_key_release(job_id: int, *, dataset: int, site: str, reason: str) -> None:
    with transaction.atomic():
        job = Job.objects.select_related("query").get(pk=job_id)
        _record(job, "key.released", dataset=f"dataset:{dataset}", site=site, reason=reason)


def release_result(job_id: int, table: dict[str, Any]) -> Result | None:
    """Store the differentially private result for its receivers, spend the budget, finish."""
    plaintext = json.dumps(table, sort_keys=True, separators=(",", ":")).encode()
    with transaction.atomic():
        job = (
            Job.objects.select_for_update(of=("self",)).select_related("query__room").get(pk=job_id)
        )
        if job.finished or Result.objects.filter(job=job).exists():
            return None
        query = job.query
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(12)
        context = f"cleanroom-result/v1:job:{job.pk}".encode()
        result = Result.objects.create(
            job=job,
            ciphertext=nonce + AESGCM(data_key).encrypt(nonce, plaintext, context),
            sha256=hashlib.sha256(plaintext).hexdigest(),
            mechanism=job.mechanism,
            epsilon=query.epsilon,
            simulated_tee=(job.attestation or {}).get("kind") == "simulated",
        )
        receivers = list(query.receivers.all())
        for org in receivers:
            ResultKey.objects.create(
                result=result,
                organization=org,
                wrapped_key=key_service().wrap(org.kek_id, data_key, context=_result_context(job)),
            )
        _record(
            job,
            "result.released",
            query=f"query:{query.pk}",
            receivers=sorted(f"org:{o.pk}" for o in receivers),
            result_sha256=result.sha256,
            mechanism=job.mechanism,
            epsilon=str(query.epsilon),
            tee=(job.attestation or {}).get("kind"),
        )
        _finish(job, Job.State.SUCCEEDED, "")
    return result


def _result_context(job: Job) -> dict[str, str]:
    return {"result_of_job": str(job.pk)}


def fail_job(job_id: int, reason: str) -> None:
    with transaction.atomic():
        job = (
            Job.objects.select_for_update(of=("self",)).select_related("query__room").get(pk=job_id)
        )
        if not job.finished:
            # An attempt that stopped because the analyst cancelled it ends cancelled.
            state = Job.State.CANCELLED if job.cancel_requested else Job.State.FAILED
            _finish(job, state, reason)


def cancel_job(*, job: Job, by: User) -> Job:
    with transaction.atomic():
        job = (
            Job.objects.select_for_update(of=("self",)).select_related("query__room").get(pk=job.pk)
        )
        if not any(
            has_permission(by, Permission.PROPOSE_QUERY, room=job.query.room, organization=org)
            for org in organizations_of(by)
        ):
            raise JobRefused(
                "Only analysts of a member organisation cancel jobs.", code="forbidden"
            )
        if job.finished:
            raise JobRefused(f"The job has already {job.get_state_display().lower()}.")
        if job.state == Job.State.QUEUED:
            _finish(job, Job.State.CANCELLED, "Cancelled before it started.", by=by)
        else:
            job.cancel_requested = True
            job.save(update_fields=["cancel_requested"])
            _record(job, "job.cancel_requested", by)
    return job


def _finish(job: Job, state: str, reason: str, by: User | None = None) -> None:
    """End a job and settle its budget: spend if a noisy value may exist, else refund."""
    job.state = state
    job.error = reason
    job.finished_at = timezone.now()
    job.progress = 100 if state == Job.State.SUCCEEDED else job.progress
    job.progress_message = {Job.State.SUCCEEDED: "Released to the receivers"}.get(state, reason)
    job.save()
    query = job.query
    query.status = Query.Status.DONE if state == Job.State.SUCCEEDED else Query.Status.FAILED
    query.save(update_fields=["status"])
    spend = state == Job.State.SUCCEEDED or job.noise_drawn_at is not None
    kind = BudgetEntry.Kind.SPEND if spend else BudgetEntry.Kind.REFUND
    for entry in ledger.settle(query=query, kind=kind):
        _record(
            job,
            f"budget.{'spent' if spend else 'refunded'}",
            dataset=f"dataset:{entry.dataset_id}",
            epsilon=str(entry.epsilon),
            delta=str(entry.delta),
        )
    _record(job, f"job.{state}", by, attempt=job.attempt, reason=reason)


def result_data_key(result: Result, organization: Organization) -> bytes:
    """A result's data key, unwrapped for a receiver organisation."""
    wrapped = result.keys.get(organization=organization).wrapped_key
    return key_service().unwrap(
        organization.kek_id, bytes(wrapped), context=_result_context(result.job)
    )


def read_result(result: Result, organization: Organization) -> dict[str, Any]:
    """Decrypt a result for a receiver organisation (the caller checked membership)."""
    data_key = result_data_key(result, organization)
    blob = bytes(result.ciphertext)
    context = f"cleanroom-result/v1:job:{result.job_id}".encode()
    return json.loads(AESGCM(data_key).decrypt(blob[:12], blob[12:], context))

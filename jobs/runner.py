"""Running approved queries: dispatch, attempts, release and failure, each exactly once.

The web tier creates the job and hands its step to the broker after the transaction commits;
a job the broker did not take (`dispatched_at` unset) is sent again by `dispatch_pending`.
The worker at the step's site claims an attempt under the job's row lock, so a re-delivered task
or a retry after a killed worker never charges budget or releases a result twice. Budget is
reserved in the transaction that starts the first attempt. The job is charged when its keys
leave the key service (`charge_at_key_release`: the enclave's data keys, or the MPC delivery
key), not on anything a host reports: from then a noisy value may exist, so the reservation is
spent however the job ends, and the job never runs again with fresh noise. A job that ends
before that is refunded.

An MPC job runs as steps at several sites (`JobStep`): one input step per dataset at a worker
site in its jurisdiction, one compute step per MPC party, and the delivery. Input steps are
dispatched with the job; the compute steps together once every input step has succeeded; the
compute step that stores the (t + 1)-th noisy output share claims the delivery. Each claim
takes the job's row lock, so redelivered steps and concurrent parties change nothing twice.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
from decimal import Decimal
from typing import Any, Protocol

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import Truncator

from cleanroom.audit.log import record_room_event
from cleanroom.errors import DomainError
from cleanroom.residency import StepKind, decide
from dataplane.mechanisms import Stage
from jobs import ledger, results
from jobs.engines.base import EngineError, canonical_of, dataset_of, party_of, site_of
from jobs.engines.mpc.engine import delivery_purpose
from jobs.engines.registry import ENGINES, engine_of, step_engine_of
from jobs.models import BudgetEntry, Job, JobStep, Query, Result
from jobs.permissions import Permission, acting_organization
from jobs.queries import QueryRefused, check_runnable
from keyservice.client import KeyServiceUnavailable
from keyservice.release import Refused
from parties.keys import KeyServiceAccess, owner_key_service
from parties.models import Organization, Site

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 3
_progress_message_length = Job._meta.get_field("progress_message").max_length
assert _progress_message_length is not None  # a CharField has one
PROGRESS_MESSAGE_LENGTH: int = _progress_message_length


class JobRefused(DomainError):
    code = "job_refused"


def _record(job: Job, type: str, by: User | None = None, **data: Any) -> None:
    record_room_event(
        job.query.room_id, type, by=by, subject=f"job:{job.pk}", job=f"job:{job.pk}", **data
    )


def _record_residency(
    job: Job,
    step: str,
    site: Site,
    checked_by: str,
    kind: StepKind = StepKind.PROCESS_ROWS,
    datasets: list[int] | None = None,
) -> bool:
    """Decide and audit residency for every dataset the step reads (or receives shares of) at
    `site`: by default every dataset the job reads."""
    allowed = True
    for contribution in job.query.room.contributions.filter(
        dataset_id__in=job.query.dataset_ids if datasets is None else datasets
    ).select_related("dataset__jurisdiction"):
        decision = decide(kind, data=contribution.dataset.jurisdiction.rules(), site=site.place())
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
        _record(
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
                _record_step_residency(job, step, checked_by="dispatcher")
                for step in engine.create_steps(
                    job, plan.steps, engine.Config.from_settings(settings)
                )
                if step.site_id
            )
        else:
            allowed = _record_residency(job, "enclave", _job_site(job), checked_by="dispatcher")
        if not allowed:
            raise JobRefused("Residency refuses this step at its site.", code="residency")
        transaction.on_commit(lambda: dispatch(job.pk))
    return job


def _record_step_residency(job: Job, step: JobStep, checked_by: str) -> bool:
    """An input step reads its own dataset's rows at its site; a compute step receives shares
    of every dataset the job reads."""
    site = site_of(step)
    if step.kind == Stage.INPUT:
        return _record_residency(job, step.name, site, checked_by, datasets=[dataset_of(step).pk])
    return _record_residency(job, step.name, site, checked_by, StepKind.RECEIVE_SHARES)


def _job_site(job: Job) -> Site:
    """The site of a job that is one step at one site (the TEE's enclave)."""
    if job.site is None:
        raise JobRefused(f"Job {job.pk} runs as steps, not at one site.", code="no_site")
    return job.site


class JobQueue(Protocol):
    """Where jobs and steps go to their sites' workers: the broker, plugged in by the task
    module when the app is ready (`use_queue`), so the lifecycle imports no task."""

    def send_job(self, job_id: int, site: Site) -> None: ...

    def send_step(self, step_id: int, site: Site) -> None: ...


_queue: list[JobQueue] = []


def use_queue(queue: JobQueue) -> None:
    _queue[:] = [queue]


def dispatch(job_id: int) -> bool:
    """Hand the job's step to its site's queue; on a broker outage it stays for the next try."""
    job = Job.objects.select_related("site").get(pk=job_id)
    if engine_of(job.mechanism).in_steps:
        return _dispatch_steps(job)
    if job.dispatched_at or job.finished:
        return False
    site = _job_site(job)
    try:
        _queue[0].send_job(job.pk, site)
    except Exception:
        log.warning("broker unavailable: job %s waits to be dispatched", job.pk, exc_info=True)
        return False
    Job.objects.filter(pk=job.pk, dispatched_at__isnull=True).update(dispatched_at=timezone.now())
    return True


def _ready_steps(job: Job) -> list[JobStep]:
    """The steps to send now: the input steps, then the compute steps together once every
    input step has succeeded; only those the broker has not taken yet."""
    steps = list(job.steps.select_related("site").exclude(kind=Stage.DELIVER))
    inputs = [s for s in steps if s.kind == Stage.INPUT]
    ready = [s for s in inputs if s.state == JobStep.State.QUEUED]
    if all(s.state == JobStep.State.SUCCEEDED for s in inputs):
        ready = [s for s in steps if s.kind == Stage.COMPUTE]
    return [s for s in ready if s.dispatched_at is None]


def _dispatch_steps(job: Job) -> bool:
    if job.finished:
        return False
    sent = False
    for step in _ready_steps(job):
        site = site_of(step)
        try:
            _queue[0].send_step(step.pk, site)
        except Exception:
            log.warning(
                "broker unavailable: step %s of job %s waits", step.name, job.pk, exc_info=True
            )
            return sent
        JobStep.objects.filter(pk=step.pk, dispatched_at__isnull=True).update(
            dispatched_at=timezone.now()
        )
        sent = True
    if sent:
        Job.objects.filter(pk=job.pk, dispatched_at__isnull=True).update(
            dispatched_at=timezone.now()
        )
    return sent


def dispatch_pending() -> int:
    """The outbox: send every queued job, and every ready step of an MPC job, that the broker
    has not taken yet."""
    in_steps = [mechanism for mechanism, engine in ENGINES.items() if engine.in_steps]
    one_site = Job.objects.filter(state=Job.State.QUEUED, dispatched_at__isnull=True).exclude(
        mechanism__in=in_steps
    )
    steps = Job.objects.filter(
        mechanism__in=in_steps,
        state__in=[Job.State.QUEUED, Job.State.RUNNING],
        steps__dispatched_at__isnull=True,
        steps__kind__in=[Stage.INPUT, Stage.COMPUTE],
    ).distinct()
    return sum(
        dispatch(pk)
        for pk in [*one_site.values_list("pk", flat=True), *steps.values_list("pk", flat=True)]
    )


_worker = threading.local()


def set_worker_site(name: str) -> None:
    """Name the site of the worker running in this thread. A production worker is a process
    of one site (CLEANROOM_SITE); tests run several sites' workers as threads of one process,
    each given its site through its Celery app's `cleanroom_site` setting."""
    _worker.site = name


def own_site() -> Site:
    """The site this worker runs at; a worker serves one site only."""
    name = (
        getattr(_worker, "site", None)
        or os.environ.get("CLEANROOM_SITE")
        or settings.CLEANROOM_SITE
    )
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
            intended = job.site.name if job.site else "no site"
            _record(
                job,
                "access.refused",
                what="step",
                site=site.name,
                reason=f"worker at {site.name} received a step for {intended}",
            )
            _finish(
                job,
                Job.State.FAILED,
                f"A worker at {site.name} received this job's step for {intended}.",
            )
            return None
        if job.cancel_requested:
            _finish(job, Job.State.CANCELLED, "Cancelled before it started.")
            return None
        if not _record_residency(job, "enclave", site, checked_by="worker"):
            _finish(job, Job.State.FAILED, "Residency refused the step at the worker.")
            return None
        if job.charged_at is not None:
            # An earlier attempt's enclave got the keys and may have drawn noise: a new enclave
            # would draw fresh noise for the same charge.
            _finish(
                job,
                Job.State.FAILED,
                "The keys were released to an enclave in an earlier attempt that did not "
                "finish: the job is charged and does not run again with fresh noise.",
            )
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
        if first and not _reserve_budget(job):
            return None
        _record(job, "job.started", attempt=job.attempt, site=site.name)
    return job


def _reserve_budget(job: Job) -> bool:
    """Reserve the job's charge on every dataset it reads, in the transaction that starts it;
    False (and the job failed, nothing reserved) when a dataset's budget refuses."""
    epsilon, delta = charge_of(job.query)
    try:
        ledger.reserve(query=job.query, room=job.query.room, epsilon=epsilon, delta=delta)
    except ledger.BudgetExceeded as exc:
        _finish(job, Job.State.FAILED, str(exc))
        return False
    for entry in BudgetEntry.objects.filter(query=job.query):
        _record(
            job,
            "budget.reserved",
            dataset=f"dataset:{entry.dataset_id}",
            epsilon=str(entry.epsilon),
            delta=str(entry.delta),
        )
    return True


def charge_of(query: Query) -> tuple[Decimal, Decimal]:
    """What the ledger reserves on each dataset: the query's ε and δ, or for a synthetic
    extract the cost of its method as approved (part of the digest every owner signed)."""
    if query.output_kind == Query.OutputKind.SYNTHETIC:
        charge = canonical_of(query)["synthetic"]["charge"]
        return Decimal(charge["epsilon"]), Decimal(charge["delta"])
    return query.epsilon, query.delta


# --- The steps of an MPC job --------------------------------------------------------------------


def _record_step(job: Job, type: str, step: JobStep, **data: Any) -> None:
    _record(
        job,
        type,
        step=step.name,
        kind=step.kind,
        site=step.site.name if step.site else None,
        attempt=step.attempt,
        **data,
    )


def _locked(job_id: int) -> Job:
    return Job.objects.select_for_update(of=("self",)).select_related("query__room").get(pk=job_id)


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
    if not _reserve_budget(job):
        return False
    _record(job, "job.started", attempt=job.attempt, site=None)
    return True


def start_step(step_id: int, step_site: str) -> JobStep | None:
    """Claim the next attempt of an MPC job's step at this worker's site; None when there is
    nothing to do (the step is done, the job finished, or the claim was refused and the job
    failed, with the reason)."""
    site = own_site()
    with transaction.atomic():
        job = _locked(JobStep.objects.values_list("job_id", flat=True).get(pk=step_id))
        step = JobStep.objects.select_related("site", "dataset").get(pk=step_id)
        if job.finished or step.state in (JobStep.State.SUCCEEDED, JobStep.State.FAILED):
            return None
        if site.name != step_site or site.pk != step.site_id:
            intended = step.site.name if step.site else "no site"
            _record(
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
        if job.cancel_requested:
            _finish(job, Job.State.CANCELLED, "Cancelled while its steps were queued.")
            return None
        if not _record_step_residency(job, step, checked_by="worker"):
            _fail_step(job, step, f"Residency refused the step '{step.name}' at the worker.")
            return None
        if step.kind == Stage.COMPUTE and step.attempt > 0:
            # The parties of an MPC round run together; a new process cannot join a round
            # whose other parties have moved on or stopped.
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
        step.save(update_fields=["attempt", "state", "started_at"])
        _record_step(job, "job.step.started", step)
    return step


def _progress(job: Job) -> None:
    steps = list(job.steps.all())
    done = sum(s.state == JobStep.State.SUCCEEDED for s in steps)
    job.progress = max(job.progress, 5 + 85 * done // len(steps))


def complete_step(step_id: int, output: dict[str, Any]) -> bool:
    """Record a step's output. Once every input step has succeeded the compute steps are
    dispatched, together, after this commits. Returns False when the job had finished."""
    with transaction.atomic():
        job = _locked(JobStep.objects.values_list("job_id", flat=True).get(pk=step_id))
        step = JobStep.objects.select_related("site").get(pk=step_id)
        if step.state != JobStep.State.RUNNING:
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
            _record_step(job, "job.step.succeeded", step, shares=shares)
        else:
            _record_step(
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
            transaction.on_commit(lambda: dispatch(job.pk))
        elif step.kind == Stage.COMPUTE:
            job.progress_message = f"Compute party {party_of(step) + 1} stored its noisy share"
        job.save(update_fields=["progress", "progress_message"])
    return True


def _recombination_threshold(job: Job) -> int:
    computing = job.steps.filter(kind=Stage.COMPUTE).count()
    return step_engine_of(job.mechanism).outputs_needed(computing)


def claim_delivery(job_id: int, *, retake: bool = False) -> list[JobStep] | None:
    """When t + 1 compute steps stored their noisy output shares and the job is not finished,
    claim the delivery: from now a noisy value can be opened, so a failure spends the budget.
    Returns the compute steps whose shares to recombine, or None. A delivery another step
    claimed is taken over only on `retake`: by a compute step's redelivered task, whose first
    delivery may have claimed it and been lost with its worker."""
    with transaction.atomic():
        job = _locked(job_id)
        if job.finished:
            return None
        outputs = list(
            job.steps.filter(kind=Stage.COMPUTE, state=JobStep.State.SUCCEEDED).order_by("party")
        )
        if len(outputs) < _recombination_threshold(job):
            return None
        if job.cancel_requested and job.charged_at is None:
            _finish(job, Job.State.CANCELLED, "Cancelled before the noisy result was opened.")
            return None
        delivery = job.steps.get(kind=Stage.DELIVER)
        if delivery.state == JobStep.State.RUNNING and not retake:
            return None
        if delivery.attempt >= MAX_ATTEMPTS:
            _fail_step(job, delivery, f"Gave up after {delivery.attempt} attempts.")
            return None
        delivery.attempt += 1
        delivery.state = JobStep.State.RUNNING
        delivery.started_at = delivery.started_at or timezone.now()
        delivery.save(update_fields=["attempt", "state", "started_at"])
        if job.charged_at is None:
            # The delivery key is unwrapped next, and opens the noisy result: charged first.
            job.charged_at = timezone.now()
            _record(job, "job.charged", released="delivery key")
        job.progress_message = "Recombining the noisy output shares"
        job.save(update_fields=["charged_at", "progress_message"])
        _record_step(
            job, "job.step.started", delivery, shares_from=[f"party:{s.party}" for s in outputs]
        )
    return outputs


def fail_step(step_id: int, reason: str) -> None:
    with transaction.atomic():
        job = _locked(JobStep.objects.values_list("job_id", flat=True).get(pk=step_id))
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
    _record_step(job, "job.step.failed", step, reason=reason)
    if job.finished:
        return
    if step.kind == Stage.COMPUTE and (
        job.steps.filter(kind=Stage.COMPUTE, state=JobStep.State.SUCCEEDED).count()
        >= _recombination_threshold(job)
    ):
        return
    state = Job.State.CANCELLED if job.cancel_requested else Job.State.FAILED
    _finish(job, state, reason)


def _shred_delivery_key(job: Job) -> None:
    """Once an MPC job has ended, its delivery key is destroyed in the receiver's token: no
    noisy output share stored by a party that finishes later can ever be opened, so a refund
    given when fewer than t + 1 shares existed stays sound."""
    for delivery in job.steps.filter(kind=Stage.DELIVER):
        if "receiver" in delivery.output and not delivery.output.get("shredded"):
            receiver: str = delivery.output["receiver"]
            transaction.on_commit(functools.partial(_destroy_delivery_key, job.pk, receiver))
        delivery.output = {**delivery.output, "shredded": True}
        delivery.save(update_fields=["output"])


def _destroy_delivery_key(job_id: int, receiver: str) -> None:
    service = owner_key_service(
        Organization.objects.get(slug=receiver), KeyServiceAccess.from_settings(settings)
    )
    try:
        service.destroy_receiving_key(delivery_purpose(job_id))
    except (Refused, KeyServiceUnavailable) as exc:
        # The delivery row stays marked shredded, so the platform never asks to open again.
        log.error("job %s: the delivery key was not destroyed: %s", job_id, exc)


def _complete_delivery(job: Job) -> None:
    """The delivery step of an MPC job succeeds with its release (in release_result's
    transaction)."""
    delivery = job.steps.filter(kind=Stage.DELIVER).first()
    if delivery is None:
        return
    delivery.state = JobStep.State.SUCCEEDED
    delivery.finished_at = timezone.now()
    delivery.save(update_fields=["state", "finished_at"])
    _record_step(job, "job.step.succeeded", delivery)


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
        job = _locked(job_id)
        if job.state != Job.State.RUNNING:
            reason = "The job is not running; no keys are released."
        elif job.cancel_requested:
            reason = "The job was cancelled; no keys are released."
        elif job.charged_at is not None:
            reason = (
                "This job's keys were already released to an enclave: a second enclave would "
                "draw a second noisy release for one charge."
            )
        else:
            job.charged_at = timezone.now()
            job.save(update_fields=["charged_at"])
            _record(job, "job.charged", released="data keys")
            return
        _record(job, "key.refused", reason=reason)
    raise JobRefused(reason, code="keys_refused")


def release_result(job_id: int, table: dict[str, Any]) -> Result | None:
    """Store the differentially private result for its receivers, spend the budget, finish."""
    plaintext = json.dumps(table, sort_keys=True, separators=(",", ":")).encode()
    receivers = results.receiving_keys(Job.objects.select_related("query").get(pk=job_id))
    with transaction.atomic():
        job = claim_release(job_id)
        if job is None:
            return None
        query = job.query
        stored = results.store_result(job, plaintext, receivers, epsilon=query.epsilon)
        _record(
            job,
            "result.released",
            query=f"query:{query.pk}",
            receivers=sorted(f"org:{o.pk}" for o in stored.receivers),
            result_commitment=stored.result.commitment,
            mechanism=job.mechanism,
            epsilon=str(query.epsilon),
            tee=(job.attestation or {}).get("kind"),
        )
        _complete_delivery(job)
        _finish(job, Job.State.SUCCEEDED, "")
    return stored.result


def release_extract(
    job_id: int, manifest: dict[str, Any], files: dict[str, bytes]
) -> Result | None:
    """Store a synthetic extract and its reports for the receivers, spend the budget, finish;
    once only (a redelivered step finds the job finished)."""
    plaintext = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    receivers = results.receiving_keys(Job.objects.select_related("query").get(pk=job_id))
    with transaction.atomic():
        job = claim_release(job_id)
        if job is None:
            return None
        query = job.query
        epsilon, delta = charge_of(query)
        private = bool(manifest["differentially_private"])
        stored = results.store_result(
            job,
            plaintext,
            receivers,
            epsilon=epsilon,
            delta=delta,
            output_kind=Query.OutputKind.SYNTHETIC,
            differentially_private=private,
        )
        released = [results.store_file(stored, name, files[name]) for name in sorted(files)]
        _record(
            job,
            "result.released",
            query=f"query:{query.pk}",
            receivers=sorted(f"org:{o.pk}" for o in stored.receivers),
            result_commitment=stored.result.commitment,
            files={f.name: f.commitment for f in released},
            output_kind=Query.OutputKind.SYNTHETIC,
            method=manifest["method"],
            rows=manifest["rows"],
            differentially_private=private,
            mechanism=job.mechanism,
            epsilon=str(epsilon),
            delta=str(delta),
            tee=(job.attestation or {}).get("kind"),
        )
        _finish(job, Job.State.SUCCEEDED, "")
    return stored.result


def claim_release(job_id: int) -> Job | None:
    """Lock the job for its release; None when it has ended or already released (a redelivered
    step). Call inside the release's transaction."""
    job = Job.objects.select_for_update(of=("self",)).select_related("query__room").get(pk=job_id)
    if job.finished or Result.objects.filter(job=job).exists():
        return None
    return job


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
        if acting_organization(by, job.query.room, Permission.PROPOSE_QUERY) is None:
            raise PermissionDenied("Only analysts of a member organisation cancel jobs.")
        if job.finished:
            raise JobRefused(
                f"The job has already {job.get_state_display().lower()}.",
                code="already_finished",
                conflict=True,
            )
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
    message = "Released to the receivers" if state == Job.State.SUCCEEDED else reason
    # The whole reason is in `error`; the progress line holds what fits.
    job.progress_message = Truncator(message).chars(PROGRESS_MESSAGE_LENGTH)
    job.save()
    _shred_delivery_key(job)
    query = job.query
    query.status = Query.Status.DONE if state == Job.State.SUCCEEDED else Query.Status.FAILED
    query.save(update_fields=["status"])
    spend = state == Job.State.SUCCEEDED or job.charged_at is not None
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


class JobRecorder:
    """The job lifecycle's side of the engines' port (jobs.engines.base.Recorder): each record
    in its own transaction, audited in the job's room."""

    def attestation(
        self,
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

    def charge_at_key_release(self, job_id: int) -> None:
        try:
            charge_at_key_release(job_id)
        except JobRefused as exc:
            raise EngineError(str(exc)) from None

    def key_released(self, job_id: int, *, dataset: int, site: str, reason: str) -> None:
        with transaction.atomic():
            job = Job.objects.select_related("query").get(pk=job_id)
            _record(job, "key.released", dataset=f"dataset:{dataset}", site=site, reason=reason)

    def shares_may_move(self, step: JobStep, party: JobStep) -> bool:
        """Decided and audited (`receive_shares`) before the share is written."""
        with transaction.atomic():
            job = Job.objects.select_related("query__room").get(pk=step.job_id)
            return _record_residency(
                job,
                step.name,
                site_of(party),
                checked_by=f"{step.name} sending shares",
                kind=StepKind.RECEIVE_SHARES,
                datasets=[dataset_of(step).pk],
            )

    def progress(self, job_id: int, percent: int, message: str) -> bool:
        return report_progress(job_id, percent, message)

"""What the job lifecycle writes in its room's audit trail: job and step events, and the
residency decision for every dataset a step reads or receives shares of, at its site."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth.models import User

from cleanroom.audit.log import record_room_event
from cleanroom.errors import DomainError
from cleanroom.residency import StepKind, decide
from dataplane.mechanisms import Stage
from jobs.engines.base import dataset_of, site_of
from jobs.models import Job, JobStep
from parties.models import Site

log = logging.getLogger(__name__)


class JobRefused(DomainError):
    code = "job_refused"


def record(job: Job, type: str, by: User | None = None, **data: Any) -> None:
    record_room_event(
        job.query.room_id, type, by=by, subject=f"job:{job.pk}", job=f"job:{job.pk}", **data
    )


def record_residency(
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
        record(
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


def record_step_residency(job: Job, step: JobStep, checked_by: str) -> bool:
    """An input step reads its own dataset's rows at its site; a compute step receives shares
    of every dataset the job reads."""
    site = site_of(step)
    if step.kind == Stage.INPUT:
        return record_residency(job, step.name, site, checked_by, datasets=[dataset_of(step).pk])
    return record_residency(job, step.name, site, checked_by, StepKind.RECEIVE_SHARES)


def record_step(job: Job, type: str, step: JobStep, **data: Any) -> None:
    record(
        job,
        type,
        step=step.name,
        kind=step.kind,
        site=step.site.name if step.site else None,
        attempt=step.attempt,
        **data,
    )


def locked_job(job_id: int) -> Job:
    return Job.objects.select_for_update(of=("self",)).select_related("query__room").get(pk=job_id)

"""Handing jobs and steps to their sites' queues, after the transaction that created them commits.

A job or step the broker did not take (`dispatched_at` unset) is sent again by
`dispatch_pending`, so a broker outage delays a job and never loses it."""

from __future__ import annotations

import logging
from typing import Protocol

from django.utils import timezone

from dataplane.mechanisms import Stage
from jobs.engines.base import site_of
from jobs.engines.registry import ENGINES, engine_of
from jobs.execution.sites import job_site
from jobs.models import Job, JobStep
from parties.models import Site


class JobQueue(Protocol):
    """Where jobs and steps go to their sites' workers: the broker, plugged in by the task
    module when the app is ready (`use_queue`), so the lifecycle imports no task."""

    def send_job(self, job_id: int, site: Site) -> None: ...

    def send_step(self, step_id: int, site: Site) -> None: ...


_queue: list[JobQueue] = []

log = logging.getLogger(__name__)


def use_queue(queue: JobQueue) -> None:
    _queue[:] = [queue]


def dispatch(job_id: int) -> bool:
    """Hand the job's step to its site's queue; on a broker outage it stays for the next try."""
    job = Job.objects.select_related("site").get(pk=job_id)
    if engine_of(job.mechanism).in_steps:
        return _dispatch_steps(job)
    if job.dispatched_at or job.finished:
        return False
    site = job_site(job)
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

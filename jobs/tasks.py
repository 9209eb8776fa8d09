"""Celery tasks: thin, idempotent, taking ids; the work is in the services."""

from celery import shared_task
from django.conf import settings

from dataplane.mechanisms import Stage
from jobs.engines.base import ControlPlane, EngineError, StepEngine
from jobs.engines.orders import Lease
from jobs.engines.registry import build, site_engine_of, step_engine_of
from jobs.execution import expiry, outbox
from jobs.execution.leases import Heartbeat, LeaseLost
from jobs.execution.recorder import JobRecorder
from jobs.execution.steps import claim_delivery, complete_step, fail_step, start_step
from jobs.models import JobStep
from jobs.queries import services as query_services
from jobs.results.release import release_result
from jobs.sites.client import SiteApiClient
from jobs.sites.inprocess import InProcessControlPlane
from parties.models import Site


def _step_engine(mechanism: str) -> StepEngine:
    return build(step_engine_of(mechanism), settings=settings, recorder=JobRecorder())


@shared_task(name="jobs.expire_queries", acks_late=True)
def expire_queries() -> int:
    """Mark pending and approved queries past their expiry as expired (idempotent)."""
    return query_services.expire_queries()


@shared_task(name="jobs.dispatch_pending")
def dispatch_pending() -> int:
    """The outbox: hand queued jobs to their sites' queues once the broker is back."""
    return outbox.dispatch_pending()


@shared_task(name="jobs.expire_leases")
def expire_leases() -> int:
    """The sweep: send again or end the jobs and steps whose site stopped renewing its lease."""
    return len(expiry.expire_leases())


def _control_plane(site: str) -> ControlPlane:
    """How this worker reaches the control plane: a site process (CLEANROOM_ROLE=site) over the
    signed site API, with no database; any other over the services, in its own process."""
    if settings.CLEANROOM_ROLE == "site":
        return SiteApiClient.from_settings(settings, site)
    return InProcessControlPlane(site)


# Routed only by an explicit queue (`site.<name>`): there is no default queue for this task.
# acks_late with reject_on_worker_lost: a broker that can hands a killed worker's task back, and
# the job's row lock, attempt counter and lease make a copy harmless. Whatever the broker does,
# the attempt's lease runs out once its worker stops renewing it, and the sweep takes over.
# Everything it asks of the control plane goes through its port, so at a site it needs no
# database.
@shared_task(name="jobs.run_job", acks_late=True, reject_on_worker_lost=True)
def run_job(job_id: int, site: str) -> str:
    plane = _control_plane(site)
    order = plane.claim(job_id)
    if order is None:
        return "nothing to do"
    lease = Lease("job", order.job, order.attempt)
    recorder = plane.recorder(lease)
    engine = build(site_engine_of(order.mechanism), settings=settings, recorder=recorder)
    try:
        with Heartbeat(lease, site, plane.renew) as beat:
            try:
                table = engine.run(
                    order,
                    # A lost lease stops the engine at its next report, as a cancellation does.
                    lambda percent, message: (
                        not beat.lost and recorder.progress(order.job, percent, message)
                    ),
                )
            except EngineError as exc:
                if beat.lost:
                    return "lease lost"  # the job is the sweep's, or a later attempt's, now
                plane.fail(lease, str(exc))
                return "failed"
            except LeaseLost:
                raise
            except Exception as exc:
                # Anything unforeseen still ends the job (refunded unless it was charged): a job
                # left running would hold its reservation until its lease ran out.
                if not beat.lost:
                    plane.fail(lease, f"Unexpected failure: {type(exc).__name__}")
                raise
            plane.release(lease, table)
    except LeaseLost:
        return "lease lost"  # the site API refused an act on an attempt no longer this site's
    return "released"


# One task per step of a job of steps (MPC), on its site's queue, with run_job's guarantees:
# each delivery claims the step's next attempt under the job's row lock (start_step), and holds
# its lease while it runs.
@shared_task(name="jobs.run_step", acks_late=True, reject_on_worker_lost=True)
def run_step(step_id: int, site: str) -> str:
    step = start_step(step_id, site)
    if step is not None:
        with Heartbeat(Lease.of(step), site) as beat:
            try:
                output = _step_engine(step.job.mechanism).run_step(step)
            except EngineError as exc:
                if beat.lost:
                    return "lease lost"
                fail_step(step_id, str(exc))
                return "failed"
            except Exception as exc:
                if not beat.lost:
                    fail_step(step_id, f"Unexpected failure: {type(exc).__name__}")
                raise
            complete_step(step_id, output, attempt=step.attempt)
        if step.kind == Stage.INPUT:
            return "shared"
    job_id = JobStep.objects.values_list("job_id", flat=True).get(pk=step_id)
    # A compute step's task delivered again may find a delivery whose lease ran out: it takes
    # it over.
    outputs = claim_delivery(job_id)
    if outputs is None:
        return "computed" if step is not None else "nothing to do"
    delivery = JobStep.objects.get(job_id=job_id, kind=Stage.DELIVER)
    with Heartbeat(Lease.of(delivery), site) as beat:
        try:
            table = _step_engine(delivery.job.mechanism).deliver(delivery.job, outputs)
        except EngineError as exc:
            if beat.lost:
                return "lease lost"
            fail_step(delivery.pk, str(exc))
            return "failed"
        except Exception as exc:
            if not beat.lost:
                fail_step(delivery.pk, f"Unexpected failure: {type(exc).__name__}")
            raise
        release_result(job_id, table)
    return "released"


class CeleryJobQueue:
    """The broker as the job lifecycle's queue (use_queue): each job or step goes to its
    site's queue only; nothing is retried here, the outbox sends it again."""

    def send_job(self, job_id: int, site: Site) -> None:
        run_job.apply_async(args=[job_id, site.name], queue=site.queue, retry=False)

    def send_step(self, step_id: int, site: Site) -> None:
        run_step.apply_async(args=[step_id, site.name], queue=site.queue, retry=False)

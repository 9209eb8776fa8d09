"""Celery tasks: thin, idempotent, taking ids; the work is in the services."""

from collections.abc import Callable
from typing import Any

from celery import shared_task
from django.conf import settings

from dataplane.mechanisms import Stage
from jobs.engines.base import ControlPlane, EngineError, StepEngine
from jobs.engines.orders import DeliveryOrder, Lease, StepOrder
from jobs.engines.registry import build, site_engine_of, step_engine_of
from jobs.execution import expiry, outbox
from jobs.execution.leases import Heartbeat, LeaseLost
from jobs.queries import services as query_services
from jobs.sites.ports import control_plane
from parties.models import Site


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


# Routed only by an explicit queue (`site.<name>`): there is no default queue for this task.
# acks_late with reject_on_worker_lost: a broker that can hands a killed worker's task back, and
# the job's row lock, attempt counter and lease make a copy harmless. Whatever the broker does,
# the attempt's lease runs out once its worker stops renewing it, and the sweep takes over.
# Everything it asks of the control plane goes through its port, so at a site it needs no
# database.
@shared_task(name="jobs.run_job", acks_late=True, reject_on_worker_lost=True)
def run_job(job_id: int, site: str) -> str:
    plane = control_plane(site)
    order = plane.claim(job_id)
    if order is None:
        return "nothing to do"
    lease = Lease("job", order.job, order.attempt)
    recorder = plane.recorder(lease, order.job)
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
# its lease while it runs. Its site may be a process without a database, as run_job's.
@shared_task(name="jobs.run_step", acks_late=True, reject_on_worker_lost=True)
def run_step(step_id: int, site: str) -> str:
    plane = control_plane(site)
    order = plane.claim_step(step_id)
    if order is not None:
        stopped = _hold(plane, site, order, lambda e: e.run_step(order), plane.complete)
        if stopped:
            return stopped
        if order.kind == Stage.INPUT:
            return "shared"
    # A compute step's task delivered again may find a delivery whose lease ran out: it takes
    # it over.
    delivery = plane.claim_delivery(step_id)
    if delivery is None:
        return "computed" if order is not None else "nothing to do"
    return _hold(plane, site, delivery, lambda e: e.deliver(delivery), plane.release) or "released"


def _hold(
    plane: ControlPlane,
    site: str,
    order: StepOrder | DeliveryOrder,
    work: Callable[[StepEngine], dict[str, Any]],
    hand_over: Callable[[Lease, dict[str, Any]], None],
) -> str | None:
    """Do a step's work with its engine while holding the step's lease, and hand its output
    over; None once handed over, else why not ("failed": the step failed with the reason;
    "lease lost": the step is no longer this site's to end)."""
    lease = Lease("step", order.step, order.attempt)
    engine = build(
        step_engine_of(order.mechanism),
        settings=settings,
        recorder=plane.recorder(lease, order.job),
    )
    try:
        with Heartbeat(lease, site, plane.renew) as beat:
            try:
                output = work(engine)
            except EngineError as exc:
                if beat.lost:
                    return "lease lost"
                plane.fail(lease, str(exc))
                return "failed"
            except LeaseLost:
                raise
            except Exception as exc:
                if not beat.lost:
                    plane.fail(lease, f"Unexpected failure: {type(exc).__name__}")
                raise
        hand_over(lease, output)
    except LeaseLost:
        return "lease lost"
    return None


class CeleryJobQueue:
    """The broker as the job lifecycle's queue (use_queue): each job or step goes to its
    site's queue only; nothing is retried here, the outbox sends it again."""

    def send_job(self, job_id: int, site: Site) -> None:
        run_job.apply_async(args=[job_id, site.name], queue=site.queue, retry=False)

    def send_step(self, step_id: int, site: Site) -> None:
        run_step.apply_async(args=[step_id, site.name], queue=site.queue, retry=False)

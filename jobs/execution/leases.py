"""Leases: a running attempt of a job (one site's engine, the TEE's) or of a step (MPC's input,
compute and delivery steps) is held by the site that claimed it, for JOB_LEASE_SECONDS at a
time, renewed while it works.

The claim grants the lease (`grant`, in the claim's transaction); the worker renews it from a
thread while the engine runs (`Heartbeat`, every third of the length); the renewal names the
attempt, so a site that does not hold the lease, or an attempt a later one replaced, is
refused (`LeaseLost`) and leaves the job to whoever holds it now. While a lease is live, no
other delivery of the same job or step claims it (`live`): a copy of a task the broker delivers
again does nothing, and the sweep (`jobs.execution.expiry`) decides what a lease that ran out
means. `renew` is the whole of a site's side: the site API exposes it as it is."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from types import TracebackType

from django.conf import settings
from django.db import DatabaseError, connections
from django.utils import timezone

from jobs.engines.base import ControlPlaneUnreachable
from jobs.engines.orders import Lease
from jobs.execution.records import JobRefused
from jobs.models import Job, JobStep
from parties.models import Site

log = logging.getLogger(__name__)


class LeaseLost(JobRefused):
    code = "lease_lost"
    conflict = True


def length() -> timedelta:
    return timedelta(seconds=settings.JOB_LEASE_SECONDS)


def grant(held: Job | JobStep, site: Site) -> None:
    """Give the attempt being claimed its lease; the claim saves the row in its transaction."""
    held.lease_site = site
    held.lease_expires_at = timezone.now() + length()


def live(held: Job | JobStep, now: datetime | None = None) -> bool:
    """Whether a running attempt still holds its lease (its site renewed it in time)."""
    return (
        held.state == Job.State.RUNNING
        and held.lease_expires_at is not None
        and held.lease_expires_at >= (now or timezone.now())
    )


def renew(lease: Lease, site: str) -> datetime:
    """Extend the lease by its length from now, for the site that holds it; returns the new
    expiry. LeaseLost when `site` does not hold it: another site's, an attempt a later one
    replaced, a job or step no longer running (the sweep expired it, or it ended), or a job
    the analyst cancelled (a host that ignores the cancellation cannot keep the job: its lease
    runs out and the sweep ends it). A lease that ran out but that the sweep has not expired
    yet is renewed: its holder lives."""
    expires = timezone.now() + length()
    held = (
        Job.objects.filter(pk=lease.id, state=Job.State.RUNNING, cancel_requested=False)
        if lease.kind == "job"
        else JobStep.objects.filter(
            pk=lease.id,
            state=JobStep.State.RUNNING,
            job__state=Job.State.RUNNING,
            job__cancel_requested=False,
        )
    )
    if not held.filter(attempt=lease.attempt, lease_site__name=site).update(
        lease_expires_at=expires
    ):
        raise LeaseLost(
            f"{site} does not hold the lease of {lease.kind} {lease.id}, attempt {lease.attempt}."
        )
    return expires


class Heartbeat:
    """Renews a lease from a thread of the worker while the engine runs. `lost` once the lease
    is refused: the task then stops and records nothing more. A renewal that fails otherwise
    (the database out of reach) is tried again at the next beat; the lease runs out only if
    that lasts (the control plane out of reach, for a site that asks it over the site API)."""

    def __init__(self, lease: Lease, site: str, renewal: Callable[[Lease], object] | None = None):
        self.lease = lease
        self.site = site
        # The site's port renews (a site process asks the site API); by default, directly.
        self._renew = renewal or functools.partial(renew, site=site)
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"lease of {lease.kind} {lease.id}", daemon=True
        )

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        try:
            while not self._stop.wait(settings.JOB_LEASE_SECONDS / 3):
                try:
                    self._renew(self.lease)
                except LeaseLost as exc:
                    log.warning("%s: stopping", exc)
                    self.lost = True
                    return
                except (DatabaseError, ControlPlaneUnreachable):
                    log.warning("the lease of %s was not renewed", self.lease, exc_info=True)
        finally:
            connections.close_all()  # this thread's own connections

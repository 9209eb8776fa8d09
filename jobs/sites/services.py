"""What a site has the control plane do for an attempt it holds, as the site API and the
in-process port ask it: claim the attempt and get its work order, renew its lease, report
progress, record verdicts and key releases, be charged, hand over the result, fail.

Through the site API every act names the signing site: a claim for a job not placed at it is
refused and changes nothing (`NotPlaced`); any other act on an attempt whose lease it does not
hold is refused (`LeaseLost`), so a site can only ever act on what it claimed."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction

from jobs.engines.base import EngineError
from jobs.engines.orders import Lease, WorkOrder
from jobs.engines.registry import site_engine_of
from jobs.execution import leases, lifecycle
from jobs.execution.leases import LeaseLost
from jobs.execution.recorder import JobRecorder
from jobs.execution.records import JobRefused, record
from jobs.models import Job
from jobs.results.release import release_extract, release_result
from parties.models import Site


class NotPlaced(JobRefused):
    code = "not_placed"


def claim_attempt(job_id: int, step_site: str, *, at: Site | None = None) -> WorkOrder | None:
    """Claim the job's next attempt (lifecycle.start_attempt) and return its work order; None
    when there is nothing to do. `at`: the claiming site (default: this worker's own)."""
    job = lifecycle.start_attempt(job_id, step_site, at=at)
    if job is None:
        return None
    engine = site_engine_of(job.mechanism)
    return engine.work_order(job, engine.Config.from_settings(settings))


def claim(job_id: int, site: Site) -> WorkOrder | None:
    """A site's claim through the site API: only for a job placed at that site. Another site's
    claim is refused and audited, and leaves the job as it was (in-process, a worker handed a
    job of another site fails it: the platform misrouted it; through the API the claimant may be
    lying)."""
    job = Job.objects.select_related("query", "site").filter(pk=job_id).first()
    if job is None or job.site_id != site.pk:
        if job is not None:
            with transaction.atomic():
                record(
                    job,
                    "access.refused",
                    what="claim",
                    site=site.name,
                    reason=f"{site.name} claimed a job placed at "
                    f"{job.site.name if job.site else 'no site'}",
                )
        raise NotPlaced(f"Job {job_id} is not placed at {site.name}.")
    return claim_attempt(job_id, site.name, at=site)


def held(lease: Lease, site: Site) -> None:
    """LeaseLost unless `site` holds the job attempt's lease: the attempt running, its own."""
    if (
        lease.kind != "job"
        or not Job.objects.filter(
            pk=lease.id, attempt=lease.attempt, lease_site=site, state=Job.State.RUNNING
        ).exists()
    ):
        raise LeaseLost(
            f"{site.name} does not hold the lease of {lease.kind} {lease.id}, "
            f"attempt {lease.attempt}."
        )


def renew(lease: Lease, site: Site) -> datetime:
    return leases.renew(lease, site.name)


def progress(lease: Lease, site: Site, percent: int, message: str) -> bool:
    held(lease, site)
    return JobRecorder().progress(lease.id, percent, message)


def attestation(
    lease: Lease,
    site: Site,
    verdict: dict[str, Any],
    *,
    accepted: bool,
    reason: str,
    evidence: bytes | None,
) -> None:
    held(lease, site)
    JobRecorder().attestation(
        lease.id, verdict, accepted=accepted, reason=reason, evidence=evidence
    )


def charge_at_key_release(lease: Lease, site: Site) -> None:
    held(lease, site)
    JobRecorder().charge_at_key_release(lease.id)


def key_released(lease: Lease, site: Site, *, dataset: int, reason: str) -> None:
    held(lease, site)
    JobRecorder().key_released(lease.id, dataset=dataset, site=site.name, reason=reason)


def release(lease: Lease, site: Site | None, table: dict[str, Any]) -> None:
    """Store the result for its receivers and finish the job, once (`site` None: in-process)."""
    if site is not None:
        held(lease, site)
    if "extract" in table:
        release_extract(lease.id, table["extract"], table["files"])
    else:
        release_result(lease.id, table)


def fail(lease: Lease, site: Site | None, reason: str) -> None:
    if site is not None:
        held(lease, site)
    lifecycle.fail_job(lease.id, reason)


def encode_files(files: dict[str, bytes]) -> dict[str, str]:
    return {name: base64.b64encode(content).decode() for name, content in files.items()}


def decode_files(files: dict[str, str]) -> dict[str, bytes]:
    try:
        return {name: base64.b64decode(content, validate=True) for name, content in files.items()}
    except ValueError:
        raise EngineError("An extract file is not base64.") from None

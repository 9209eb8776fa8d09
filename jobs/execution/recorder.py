"""The job lifecycle's side of the engines' port (jobs.engines.base.Recorder)."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from cleanroom.residency import StepKind
from jobs.engines.base import EngineError, dataset_of, site_of
from jobs.execution import lifecycle
from jobs.execution.records import JobRefused, record, record_residency
from jobs.models import Job, JobStep


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
            record(
                job,
                "attestation.verified" if accepted else "attestation.refused",
                **attestation,
                reason=reason,
                attach={"attestation.cbor": evidence} if evidence else None,
            )

    def charge_at_key_release(self, job_id: int) -> None:
        try:
            lifecycle.charge_at_key_release(job_id)
        except JobRefused as exc:
            raise EngineError(str(exc)) from None

    def key_released(self, job_id: int, *, dataset: int, site: str, reason: str) -> None:
        with transaction.atomic():
            job = Job.objects.select_related("query").get(pk=job_id)
            record(job, "key.released", dataset=f"dataset:{dataset}", site=site, reason=reason)

    def shares_may_move(self, step: JobStep, party: JobStep) -> bool:
        """Decided and audited (`receive_shares`) before the share is written."""
        with transaction.atomic():
            job = Job.objects.select_related("query__room").get(pk=step.job_id)
            return record_residency(
                job,
                step.name,
                site_of(party),
                checked_by=f"{step.name} sending shares",
                kind=StepKind.RECEIVE_SHARES,
                datasets=[dataset_of(step).pk],
            )

    def progress(self, job_id: int, percent: int, message: str) -> bool:
        return lifecycle.report_progress(job_id, percent, message)

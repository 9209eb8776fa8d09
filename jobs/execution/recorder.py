"""The job lifecycle's side of the engines' port (jobs.engines.base.Recorder)."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from cleanroom.residency import StepKind
from dataplane.mechanisms import Stage
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

    def shares_may_move(self, step: int, party: int) -> bool:
        """Decided and audited (`receive_shares`) before the share is sent."""
        with transaction.atomic():
            source = JobStep.objects.select_related("job__query__room", "dataset").get(
                pk=step, kind=Stage.INPUT
            )
            receiver = JobStep.objects.select_related("site__jurisdiction").get(
                job_id=source.job_id, kind=Stage.COMPUTE, party=party
            )
            return record_residency(
                source.job,
                source.name,
                site_of(receiver),
                checked_by=f"{source.name} sending shares",
                kind=StepKind.RECEIVE_SHARES,
                datasets=[dataset_of(source).pk],
            )

    def progress(self, job_id: int, percent: int, message: str) -> bool:
        return lifecycle.report_progress(job_id, percent, message)

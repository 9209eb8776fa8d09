"""Releasing a job's result to its receivers, once: the table or the synthetic extract is stored
sealed to each receiver's results key, the budget spent, the job finished."""

from __future__ import annotations

import json
from typing import Any

from django.db import transaction

from jobs.budget.ledger import charge_of
from jobs.execution.finish import finish
from jobs.execution.records import record
from jobs.execution.steps import complete_delivery
from jobs.models import Job, Query, Result
from jobs.results.storage import receiving_keys, store_file, store_result


def release_result(job_id: int, table: dict[str, Any]) -> Result | None:
    """Store the differentially private result for its receivers, spend the budget, finish."""
    plaintext = json.dumps(table, sort_keys=True, separators=(",", ":")).encode()
    receivers = receiving_keys(Job.objects.select_related("query").get(pk=job_id))
    with transaction.atomic():
        job = claim_release(job_id)
        if job is None:
            return None
        query = job.query
        stored = store_result(job, plaintext, receivers, epsilon=query.epsilon)
        record(
            job,
            "result.released",
            query=f"query:{query.pk}",
            receivers=sorted(f"org:{o.pk}" for o in stored.receivers),
            result_commitment=stored.result.commitment,
            mechanism=job.mechanism,
            epsilon=str(query.epsilon),
            tee=(job.attestation or {}).get("kind"),
        )
        complete_delivery(job)
        finish(job, Job.State.SUCCEEDED, "")
    return stored.result


def release_extract(
    job_id: int, manifest: dict[str, Any], files: dict[str, bytes]
) -> Result | None:
    """Store a synthetic extract and its reports for the receivers, spend the budget, finish;
    once only (a redelivered step finds the job finished)."""
    plaintext = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    receivers = receiving_keys(Job.objects.select_related("query").get(pk=job_id))
    with transaction.atomic():
        job = claim_release(job_id)
        if job is None:
            return None
        query = job.query
        epsilon, delta = charge_of(query)
        private = bool(manifest["differentially_private"])
        stored = store_result(
            job,
            plaintext,
            receivers,
            epsilon=epsilon,
            delta=delta,
            output_kind=Query.OutputKind.SYNTHETIC,
            differentially_private=private,
        )
        released = [store_file(stored, name, files[name]) for name in sorted(files)]
        record(
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
        finish(job, Job.State.SUCCEEDED, "")
    return stored.result


def claim_release(job_id: int) -> Job | None:
    """Lock the job for its release; None when it has ended or already released (a redelivered
    step). Call inside the release's transaction."""
    job = Job.objects.select_for_update(of=("self",)).select_related("query__room").get(pk=job_id)
    if job.finished or Result.objects.filter(job=job).exists():
        return None
    return job

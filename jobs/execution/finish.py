"""Ending a job: its state, its budget settled (spent if a noisy value may exist, else refunded),
and an MPC job's delivery key destroyed in the receiver's token."""

from __future__ import annotations

import functools
import logging

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone
from django.utils.text import Truncator

from dataplane.mechanisms import Stage
from jobs.budget.ledger import settle
from jobs.engines.mpc.engine import delivery_purpose
from jobs.execution.records import record
from jobs.models import BudgetEntry, Job, Query
from keyservice.client import KeyServiceUnavailable
from keyservice.release import Refused
from parties.keys import KeyServiceAccess, owner_key_service
from parties.models import Organization

_progress_message_length = Job._meta.get_field("progress_message").max_length
assert _progress_message_length is not None  # a CharField has one


PROGRESS_MESSAGE_LENGTH: int = _progress_message_length

log = logging.getLogger(__name__)


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


def finish(job: Job, state: str, reason: str, by: User | None = None) -> None:
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
    for entry in settle(query=query, kind=kind):
        record(
            job,
            f"budget.{'spent' if spend else 'refunded'}",
            dataset=f"dataset:{entry.dataset_id}",
            epsilon=str(entry.epsilon),
            delta=str(entry.delta),
        )
    record(job, f"job.{state}", by, attempt=job.attempt, reason=reason)

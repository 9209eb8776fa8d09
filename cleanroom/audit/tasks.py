"""Celery tasks of the audit worker (queue `audit`): thin, idempotent, taking names not objects."""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from cleanroom.audit import checkpoints
from cleanroom.crypto.keys import KeyServiceError


@shared_task(
    name="cleanroom.audit.tasks.sign_checkpoint",
    bind=True,
    acks_late=True,
    max_retries=5,
    default_retry_delay=2,
    soft_time_limit=120,
    time_limit=150,
)
def sign_checkpoint_task(self, log_name: str) -> dict | None:
    """Sign a checkpoint of `log_name` at its current size (nothing if it has not grown)."""
    try:
        checkpoint = checkpoints.sign_checkpoint(log_name)
    except (OperationalError, KeyServiceError) as exc:
        raise self.retry(exc=exc) from exc
    if checkpoint is None:
        return None
    return {"log": log_name, "size": checkpoint.size, "root": checkpoint.root_hash.hex()}

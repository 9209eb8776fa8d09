"""Celery tasks of the audit worker (queue `audit`): thin, idempotent, taking names not objects."""

from __future__ import annotations

from celery import shared_task
from django.contrib.auth import get_user_model
from django.db import OperationalError

from cleanroom.audit import bundles, checkpoints
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


@shared_task(
    name="cleanroom.audit.tasks.export_bundle",
    bind=True,
    acks_late=True,
    max_retries=3,
    default_retry_delay=5,
    soft_time_limit=600,
    time_limit=660,
)
def export_bundle_task(self, room_id: int, room_slug: str, requested_by: int | None = None) -> dict:
    """Build, sign and keep the bundle of a room for the web tier to serve."""
    room = bundles.RoomRef(pk=room_id, slug=room_slug)
    user = get_user_model().objects.filter(pk=requested_by).first() if requested_by else None
    try:
        bundle = bundles.build_bundle(room=room, by=user)
    except (OperationalError, KeyServiceError) as exc:
        raise self.retry(exc=exc) from exc
    return {"room": room.slug, "tree_size": bundle.tree_size, "sha256": bundle.sha256}


class CeleryAuditQueue:
    """The audit kernel's queue (checkpoints.AuditQueue), on the Celery queue `audit`."""

    def sign_checkpoint(self, log_name: str) -> None:
        sign_checkpoint_task.delay(log_name)

    def export_bundle(self, room_id: int, room_slug: str, requested_by: int | None) -> None:
        export_bundle_task.delay(room_id, room_slug, requested_by)

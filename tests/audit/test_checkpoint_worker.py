"""The checkpoint task through a real Celery worker on the `audit` queue, over Redis."""

from __future__ import annotations

import socket
import threading

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun
from django.db import connections, transaction

from cleanroom.audit import tasks as audit_tasks
from cleanroom.audit.log import record_event
from cleanroom.audit.models import Checkpoint
from cleanroom.celery import app as project_app

REDIS = ("127.0.0.1", 6379)


def redis_is_up() -> bool:
    try:
        socket.create_connection(REDIS, timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture
def audit_worker(settings):
    """A worker consuming only the `audit` queue, with the project's Celery configuration but
    Redis as the broker; the web side's `delay` goes through the same app."""
    if not redis_is_up():
        pytest.skip("needs Redis at 127.0.0.1:6379 (the broker of this test)")
    settings.AUDIT_CHECKPOINT_SIGNING = "task"
    app = Celery("cleanroom-audit-test", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.update(
        broker_url=f"redis://{REDIS[0]}:{REDIS[1]}/15",
        broker_transport_options={},
        broker_connection_retry_on_startup=True,
        task_default_queue="celery",
    )
    app.set_current()
    try:
        with app.connection() as conn:  # no tasks left from an earlier run
            conn.default_channel.queue_purge("audit")
        with start_worker(app, pool="solo", perform_ping_check=False, queues=["audit"]) as worker:
            yield worker
    finally:
        project_app.set_current()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_appends_committed_by_the_web_tier_are_signed_by_the_audit_worker(audit_worker) -> None:
    done = threading.Event()
    results: list = []

    def finished(sender=None, retval=None, state=None, **kwargs) -> None:
        if sender is not None and sender.name == audit_tasks.sign_checkpoint_task.name:
            results.append((state, retval))
            connections.close_all()  # the worker thread's own connection
            done.set()

    task_postrun.connect(finished, weak=False)
    try:
        with transaction.atomic():
            for i in range(3):
                record_event(log="room/31", type="test.event", actor=None, subject=f"job:{i}")
        assert done.wait(timeout=30), "the audit worker did not run the checkpoint task"
    finally:
        task_postrun.disconnect(finished)
    [(state, retval)] = results
    assert state == "SUCCESS"
    assert retval["size"] == 3
    checkpoint = Checkpoint.objects.get(log__name="room/31")
    assert checkpoint.size == 3
    assert checkpoint.root_hash.hex() == retval["root"]

"""A real Celery worker for a site, over Redis, in this process (its own thread and database
connection), so tests run jobs the way production does: published by the web side after
commit, consumed from the site's queue only."""

from __future__ import annotations

import os
import socket
import threading

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun
from django.db import connections

from cleanroom.celery import app as project_app
from jobs import tasks  # noqa: F401 - registers the shared tasks before the worker's app exists

REDIS = ("127.0.0.1", 6379)


@pytest.fixture
def site_worker(monkeypatch):
    """Start a worker for `site` and return a function that waits for its next finished task."""
    try:
        socket.create_connection(REDIS, timeout=1).close()
    except OSError:
        pytest.fail("the job tests need Redis at 127.0.0.1:6379, their broker")
    finished = threading.Event()
    outcomes: list = []

    def on_finished(sender=None, retval=None, state=None, **kwargs) -> None:
        outcomes.append((sender.name, state, retval))
        connections.close_all()  # the worker thread's own connection
        finished.set()

    task_postrun.connect(on_finished, weak=False)
    started = []

    def start(site: str):
        monkeypatch.setenv("CLEANROOM_SITE", site)
        app = Celery("cleanroom-site-test", set_as_current=False)
        app.config_from_object("django.conf:settings", namespace="CELERY")
        app.conf.update(
            broker_url=f"redis://{REDIS[0]}:{REDIS[1]}/14",
            # Keys of their own per test process: concurrent test runs never share a queue.
            broker_transport_options={"global_keyprefix": f"cleanroom-test-{os.getpid()}:"},
            broker_connection_retry_on_startup=True,
        )
        app.set_current()
        with app.connection() as connection:
            connection.default_channel.queue_purge(f"site.{site}")
        context = start_worker(app, pool="solo", perform_ping_check=False, queues=[f"site.{site}"])
        context.__enter__()
        started.append(context)

        def wait(timeout: float = 120):
            assert finished.wait(timeout), f"the worker at {site} finished no task in {timeout} s"
            finished.clear()
            return outcomes.pop(0)

        return wait

    yield start
    for context in started:
        context.__exit__(None, None, None)
    task_postrun.disconnect(on_finished)
    project_app.set_current()

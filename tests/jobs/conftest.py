"""A real Celery worker for a site, over Redis, in this process (its own thread and database
connection), so tests run jobs the way production does: published by the web side after
commit, consumed from the site's queue only. Site workers as processes of their own, on the
embedded broker or RabbitMQ: tests/jobs/site_processes.py. And every change to a job as it is
committed, to wait on without sleeping."""

from __future__ import annotations

import os
import queue
import socket

import pytest
from celery import Celery
from celery.contrib.testing.worker import TestWorkController, start_worker
from celery.signals import task_postrun
from django.db import connection, connections

from cleanroom.celery import app as project_app
from jobs import tasks  # noqa: F401 - registers the shared tasks before the worker's app exists
from jobs.execution.sites import set_worker_site
from tests.jobs.mpc_support import share_inboxes  # noqa: F401 - a fixture
from tests.jobs.site_processes import site_broker, site_processes  # noqa: F401 - fixtures

REDIS = ("127.0.0.1", 6379)


class ThreadedSiteWorker(TestWorkController):
    """A site's worker in a thread of the test process, knowing its site from its app's
    `cleanroom_site` setting (set_worker_site, for this thread). kombu's event loop
    (hub) is one per process, so several workers in threads would poll each other's queues
    through it: each drains its own connection instead."""

    def should_use_eventloop(self) -> bool:
        return False

    def start(self):
        set_worker_site(self.app.conf.cleanroom_site)
        return super().start()


@pytest.fixture
def site_worker(monkeypatch):
    """Start a worker for `site` and return a function that waits for its next finished task."""
    try:
        socket.create_connection(REDIS, timeout=1).close()
    except OSError:
        pytest.fail("the job tests need Redis at 127.0.0.1:6379, their broker")
    # Several sites' workers may finish tasks at once: a queue loses none of their outcomes.
    outcomes: queue.Queue = queue.Queue()

    def on_finished(sender=None, retval=None, state=None, **kwargs) -> None:
        connections.close_all()  # the worker thread's own connection
        outcomes.put((sender.name, state, retval))

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
            # The worker's own site: several sites' workers share this process.
            cleanroom_site=site,
        )
        app.set_current()
        with app.connection() as connection:
            connection.default_channel.queue_purge(f"site.{site}")
        context = start_worker(
            app,
            pool="solo",
            perform_ping_check=False,
            queues=[f"site.{site}"],
            WorkController=ThreadedSiteWorker,
        )
        context.__enter__()
        started.append(context)

        def wait(timeout: float = 120):
            try:
                return outcomes.get(timeout=timeout)
            except queue.Empty:
                pytest.fail(f"no worker finished a task in {timeout} s (started at {site})")

        return wait

    yield start
    for context in started:
        context.__exit__(None, None, None)
    task_postrun.disconnect(on_finished)
    project_app.set_current()


JOB_NOTIFY = """
CREATE OR REPLACE FUNCTION test_faults_job_notify() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('test_faults_job', json_build_object(
    'id', NEW.id, 'state', NEW.state, 'attempt', NEW.attempt, 'progress', NEW.progress)::text);
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER test_faults_job_notify AFTER UPDATE ON jobs_job
  FOR EACH ROW EXECUTE FUNCTION test_faults_job_notify();
"""


@pytest.fixture
def job_changes(transactional_db):
    """Every committed change to a job, as PostgreSQL notifications: the test waits on these
    instead of sleeping. The trigger is the test's own and is dropped afterwards."""
    if connection.vendor != "postgresql":
        pytest.skip(
            "the test waits for the moment to kill the worker through PostgreSQL's "
            "LISTEN/NOTIFY; SQLite cannot signal another process"
        )
    import psycopg

    with connection.cursor() as cursor:
        cursor.execute(JOB_NOTIFY)
    params = connection.get_connection_params()
    listener = psycopg.connect(
        **{k: v for k, v in params.items() if k not in ("cursor_factory", "context")},
        autocommit=True,
    )
    listener.execute("LISTEN test_faults_job")
    try:
        yield listener
    finally:
        listener.close()
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER test_faults_job_notify ON jobs_job")
            cursor.execute("DROP FUNCTION test_faults_job_notify()")

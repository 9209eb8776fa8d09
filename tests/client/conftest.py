"""A live server with the study room (two hospitals' patients, pharma's analyst bob), and a
site worker that runs each dispatched job in its own thread of this process, as a Celery
worker of that site would (the job's code is the worker's; only the broker is left out)."""

from __future__ import annotations

import threading

import pytest
from django.db import connections

from jobs import tasks
from jobs.execution import outbox
from jobs.execution.sites import set_worker_site

TEE_SITE = "eu-frankfurt-tee"
PASSWORD = "correct-horse-battery"  # tests.factories.user's


class ThreadWorkerQueue:
    """The job lifecycle's queue (use_queue), each job run at once in a worker thread."""

    def __init__(self):
        self.threads: list[threading.Thread] = []

    def send_job(self, job_id: int, site) -> None:
        def work() -> None:
            set_worker_site(site.name)
            try:
                tasks.run_job(job_id, site.name)
            finally:
                connections.close_all()

        thread = threading.Thread(target=work, name=f"worker-{site.name}")
        self.threads.append(thread)
        thread.start()

    def send_step(self, step_id: int, site) -> None:
        raise AssertionError("these tests run TEE jobs only")


@pytest.fixture
def site_worker(monkeypatch):
    queue = ThreadWorkerQueue()
    monkeypatch.setattr(outbox, "_queue", [queue])
    yield queue
    for thread in queue.threads:
        thread.join()


@pytest.fixture
def study(world, tmp_path):
    return world.study(tmp_path)


@pytest.fixture
def unused_port() -> int:
    """A port nothing listens on: bound, then closed."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]

"""Local site workers for the embedded default: one Celery worker process per site, each
consuming only its site's queue and knowing its own site (CLEANROOM_SITE): worker sites run the
owners' MPC input steps, MPC party sites their compute steps, TEE sites the enclave."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from django.conf import settings

from parties.models import Site

# Celery discourages running a worker as root (it accepts only JSON here, so it only warns).
# Where the demo runs as root, as in a container, it says so once itself (`runs_as_root`)
# rather than have each of its workers warn; production runs them as their own user
# (deploy/systemd).
ROOT_WARNING = "ignore:You're running the worker with superuser privileges"


def runs_as_root() -> bool:
    return os.geteuid() == 0


def start_worker(site: Site) -> subprocess.Popen:
    env = {**os.environ, "CLEANROOM_SITE": site.name, "CLEANROOM_BOOTSTRAP": "0"}
    if runs_as_root():
        env["PYTHONWARNINGS"] = ROOT_WARNING
    return subprocess.Popen(  # noqa: S603 - our own worker, fixed arguments
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "cleanroom",
            "--quiet",  # no banner per worker: the demo starts one per site
            "worker",
            "-Q",
            site.queue,
            "--pool",
            "solo",
            "--hostname",
            f"{site.name}@%h",
            # Each worker is a process of its own: no cluster chatter between them at start.
            "--without-mingle",
            "--without-gossip",
            "--loglevel",
            "WARNING",
        ],
        cwd=settings.BASE_DIR,
        env=env,
    )


@contextmanager
def site_workers(sites: Iterable[Site]) -> Iterator[list[subprocess.Popen]]:
    workers = [start_worker(site) for site in sites]
    try:
        yield workers
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)

"""Which site a worker is, and which site a job runs at. A worker serves one site only."""

from __future__ import annotations

import os
import threading

from django.conf import settings

from jobs.execution.records import JobRefused
from jobs.models import Job
from parties.models import Site


def job_site(job: Job) -> Site:
    """The site of a job that is one step at one site (the TEE's enclave)."""
    if job.site is None:
        raise JobRefused(f"Job {job.pk} runs as steps, not at one site.", code="no_site")
    return job.site


_worker = threading.local()


def set_worker_site(name: str) -> None:
    """Name the site of the worker running in this thread. A production worker is a process
    of one site (CLEANROOM_SITE); tests run several sites' workers as threads of one process,
    each given its site through its Celery app's `cleanroom_site` setting."""
    _worker.site = name


def own_site() -> Site:
    """The site this worker runs at; a worker serves one site only."""
    name = (
        getattr(_worker, "site", None)
        or os.environ.get("CLEANROOM_SITE")
        or settings.CLEANROOM_SITE
    )
    if not name:
        raise JobRefused("This worker does not know its site (set CLEANROOM_SITE).")
    return Site.objects.select_related("jurisdiction").get(name=name)

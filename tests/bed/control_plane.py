"""The control plane's side of a run across the bed, for the bench that loads it and breaks it
(tests/benchmarks/bench_sites.py), beside the site API this process serves
(tests/jobs/site_api_worker.py's SiteApiServer): publishing to the bed's virtual host, the
outbox and the lease sweep run as beat would, and TEE hosts' workers (CLEANROOM_ROLE=site,
no database) in their hosts' namespaces under the deployment's supervisor, optionally held at a
point of each job until the bench lets them go on."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.db import connections

from jobs.demo.workers import Supervised
from jobs.execution import expiry, outbox
from tests.bed.sites import CONTROL_USER, RABBITMQ, Bed
from tests.jobs.site_api_worker import site_environment, site_host
from tests.jobs.site_processes import use_broker

log = logging.getLogger(__name__)


@contextlib.contextmanager
def publishing_to(bed: Bed) -> Iterator[str]:
    """This process publishes to the bed's virtual host as the control plane."""
    control = f"amqp://{CONTROL_USER}:guest@127.0.0.1:{RABBITMQ}/{bed.vhost}"
    previous = settings.CELERY_BROKER_URL, settings.CELERY_BROKER_TRANSPORT_OPTIONS
    use_broker(control, {})
    try:
        yield control
    finally:
        use_broker(*previous)


@contextlib.contextmanager
def beat(every: float = 0.5) -> Iterator[None]:
    """The outbox every `every` seconds and the lease sweep every JOB_LEASE_SWEEP_SECONDS, from a
    thread of this process, as beat runs them in a deployment; a failing round (the broker or
    the database away) is tried again at the next."""
    stop = threading.Event()

    def loop() -> None:
        swept = 0.0
        try:
            while not stop.wait(every):
                try:
                    outbox.dispatch_pending()
                    if time.monotonic() - swept >= settings.JOB_LEASE_SWEEP_SECONDS:
                        expiry.expire_leases()
                        swept = time.monotonic()
                except Exception:
                    log.warning("beat: a round failed", exc_info=True)
        finally:
            connections.close_all()

    thread = threading.Thread(target=loop, name="beat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# A TEE host's worker: as tests/jobs/site_api_worker.py's, and, given a folder, held at a
# progress point of a job, once per job, while the folder has a file `hold` naming the point:
# there it writes `held-<job>` (its pid) and waits until `go-<job>` exists.
WORKER = """
import os, sys, time
from pathlib import Path
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cleanroom.settings")
import django
django.setup()
folder = sys.argv[1]
if folder:
    from jobs.sites import client
    progress = client.SiteApiRecorder.progress

    def held(self, job_id, at, message):
        hold, mark = Path(folder) / "hold", Path(folder) / f"held-{job_id}"
        point = hold.read_text() if hold.exists() else ""
        if point == str(at) and not mark.exists():
            mark.write_text(str(os.getpid()))
            while not (Path(folder) / f"go-{job_id}").exists():
                time.sleep(0.02)
        return progress(self, job_id, at, message)

    client.SiteApiRecorder.progress = held
from cleanroom.celery import app
app.worker_main(sys.argv[2:])
"""


class TeeWorkers:
    """Each TEE site's worker in its host's namespace, under the deployment's supervisor
    (restarted when it dies)."""

    def __init__(self, bed: Bed, credentials: Path, folder: Path, hold: Path | None = None):
        self.bed = bed
        self.credentials = credentials
        self.folder = folder
        self.hold = hold
        self.supervised: dict[str, Supervised] = {}
        self.said: list[str] = []

    def log(self, site: str) -> Path:
        return self.folder / f"{site}.log"

    def start(self, site: str) -> Supervised:
        environment = site_environment(
            site_host(self.credentials, self.folder / f"{site}-host", site),
            site,
            f"http://{self.bed.control}:{self.bed.api_port}/site-api",
            self.folder / "var",
            self.bed.broker_url(site),
        )
        environment["CLEANROOM_KEY_SERVICES"] = ",".join(
            f"{s}={u}" for s, u in settings.KEY_SERVICES.items()
        )
        environment["JOB_LEASE_SECONDS"] = str(settings.JOB_LEASE_SECONDS)
        launcher = self.bed.site_host(site).command()

        def one():
            import subprocess

            with self.log(site).open("a") as output:
                return subprocess.Popen(
                    [*launcher, sys.executable, "-c", WORKER, str(self.hold or ""),
                     "worker", "-Q", f"site.{site}", "--pool", "solo",
                     "--hostname", f"{site}@{os.getpid()}.%h", "--without-mingle",
                     "--without-gossip", "--without-heartbeat", "--loglevel", "INFO"],
                    cwd=settings.BASE_DIR,
                    env=environment,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )  # fmt: skip

        self.supervised[site] = made = Supervised(site, one, self.said.append)
        return made

    def stop(self) -> None:
        from jobs.demo.workers import stop_all

        stop_all(list(self.supervised.values()), timeout=10)
        self.supervised.clear()

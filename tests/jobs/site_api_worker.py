"""A TEE site's worker as issue #17 wants it, shared by the tests that start one: a process of
its own with CLEANROOM_ROLE=site, whose environment has no database URL and no key folder,
given of the site API's material only the CA's certificate and its own certificate and key. It
first tries the ORM and writes down what it was told, then serves its queue."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.test.testcases import LiveServerThread, QuietWSGIRequestHandler, _StaticFilesHandler

# The site's worker: first it tries the ORM, and writes down what it was told; then it serves.
WORKER = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cleanroom.settings")
import django
django.setup()
from jobs.models import Job
try:
    Job.objects.count()
    tried = "the database answered"
except Exception as exc:
    tried = f"{type(exc).__name__}: {exc}"
with open(sys.argv[1], "w") as out:
    out.write(tried)
from cleanroom.celery import app
app.worker_main(sys.argv[2:])
"""

# What the control plane's processes have and a site's must not.
PLATFORM_SECRETS = ("DATABASE_URL", "CLEANROOM_KEY_ROOT")

# What the worker writes when its ORM refused, as a site process's must.
NO_DATABASE = "NoDatabase: This is a site process (CLEANROOM_ROLE=site): it has no database."


def site_host(root: Path, folder: Path, site: str) -> Path:
    """What the TEE host is given of the site API's material: the CA's certificate and its own
    certificate and key, nothing else."""
    folder.mkdir()
    shutil.copy(root / "ca.crt", folder / "ca.crt")
    shutil.copytree(root / "sites" / site, folder / site)
    return folder


def site_environment(
    host: Path, site: str, url: str, var_dir: Path, broker_url: str
) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if k not in PLATFORM_SECRETS}
    environment.update(
        CLEANROOM_BOOTSTRAP="0",
        CLEANROOM_ROLE="site",
        CLEANROOM_SITE=site,
        CLEANROOM_SITE_API_URL=url,
        CLEANROOM_SITE_API_CA=str(host / "ca.crt"),
        CLEANROOM_SITE_API_CERTIFICATE=str(host / site / "tls.crt"),
        CLEANROOM_SITE_API_KEY=str(host / site / "tls.key"),
        CELERY_BROKER_URL=broker_url,
        CLEANROOM_VAR_DIR=str(var_dir),
        # The encrypted dataset files of its jurisdiction, and its (simulated) enclave hardware.
        CLEANROOM_STORAGE_ROOT=str(settings.STORAGE_ROOT),
        TEE_SIMULATED_ROOT_DIR=str(settings.TEE_SIMULATED_ROOT_DIR),
        # Its own key for asking the owners' key services (CLEANROOM_KEY_SERVICES names them).
        CLEANROOM_KEY_SERVICE_CALLER_KEYS=str(settings.KEY_SERVICE_CALLER_KEYS),
    )
    return environment


def start_worker(
    launcher: list[str], site: str, environment: dict[str, str], tried: Path, log: Path
) -> subprocess.Popen[bytes]:
    """The worker for `site`'s queue, run through `launcher` (nothing, or a bed host's), writing
    what its ORM answered to `tried` and its log to `log`."""
    with log.open("w") as output:
        return subprocess.Popen(
            [*launcher, sys.executable, "-c", WORKER, str(tried), "worker", "-Q", f"site.{site}",
             "--pool", "solo", "--hostname", f"{site}@{os.getpid()}.%h", "--without-mingle",
             "--without-gossip", "--without-heartbeat", "--loglevel", "INFO"],
            cwd=settings.BASE_DIR,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


def environment_names(pid: int, timeout: float = 10) -> set[str]:
    """The names in the running process's own environment, as the kernel holds it. Right after
    an exec the kernel shows it empty until the new program's stack is set up: polled until
    the process shows one, with a deadline."""
    deadline = time.monotonic() + timeout
    while not (seen := Path(f"/proc/{pid}/environ").read_bytes()):
        assert time.monotonic() < deadline, f"process {pid} shows no environment"
        time.sleep(0.01)
    return {entry.split(b"=", 1)[0].decode() for entry in seen.split(b"\0") if entry}


class _Server(LiveServerThread):
    def _create_server(self, connections_override=None):
        # Restarted on the same port at once: the connections of the one before may linger.
        return self.server_class(
            (self.host, self.port),
            QuietWSGIRequestHandler,
            allow_reuse_address=True,
            connections_override=connections_override,
        )


class SiteApiServer:
    """The site API (with the rest of the control plane's web tier), served by a thread of
    this process at 127.0.0.1 on `port`, stopped and started again at will, as a restart of
    the control plane does."""

    def __init__(self, port: int):
        self.port = port
        self._thread: _Server | None = None

    def start(self) -> None:
        thread = _Server("127.0.0.1", _StaticFilesHandler, port=self.port)
        thread.daemon = True
        thread.start()
        thread.is_ready.wait()
        if thread.error:
            raise thread.error
        self._thread = thread

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.terminate()
            self._thread = None

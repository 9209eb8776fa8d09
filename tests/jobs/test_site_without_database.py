"""A TEE site as issue #17 wants it: its Celery worker is a process of its own whose environment
has no database URL and no key folder (CLEANROOM_ROLE=site), on the embedded broker and on
RabbitMQ, talking to a live control plane only through the signed site API, with each owner's
key service its own process. The job runs end to end; the worker's ORM refuses, as tried in that
process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from jobs.demo.key_services import owner_key_services
from jobs.execution.lifecycle import run_query
from jobs.models import Job, Result
from jobs.results.storage import read_result
from parties.site_certificates import ensure_site_certificates
from tests import factories
from tests.factories import JOIN_SQL, propose
from tests.jobs.site_processes import kill_and_reap, tail

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SITE = "eu-frankfurt-tee"

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


def site_host(root: Path, folder: Path) -> Path:
    """What the TEE host is given of the site API's material: the CA's certificate and its own
    certificate and key, nothing else."""
    folder.mkdir()
    shutil.copy(root / "ca.crt", folder / "ca.crt")
    shutil.copytree(root / "sites" / SITE, folder / SITE)
    return folder


def site_environment(host: Path, url: str, var_dir: Path, broker_url: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if k not in PLATFORM_SECRETS}
    environment.update(
        CLEANROOM_BOOTSTRAP="0",
        CLEANROOM_ROLE="site",
        CLEANROOM_SITE=SITE,
        CLEANROOM_SITE_API_URL=url,
        CLEANROOM_SITE_API_CA=str(host / "ca.crt"),
        CLEANROOM_SITE_API_CERTIFICATE=str(host / SITE / "tls.crt"),
        CLEANROOM_SITE_API_KEY=str(host / SITE / "tls.key"),
        CELERY_BROKER_URL=broker_url,
        CLEANROOM_VAR_DIR=str(var_dir),
        # The encrypted dataset files of its jurisdiction, and its (simulated) enclave hardware.
        CLEANROOM_STORAGE_ROOT=str(django_settings.STORAGE_ROOT),
        TEE_SIMULATED_ROOT_DIR=str(django_settings.TEE_SIMULATED_ROOT_DIR),
        # Its own key for asking the owners' key services (CLEANROOM_KEY_SERVICES names them).
        CLEANROOM_KEY_SERVICE_CALLER_KEYS=str(django_settings.KEY_SERVICE_CALLER_KEYS),
    )
    return environment


def test_a_tee_job_runs_end_to_end_at_a_site_that_has_no_database_and_no_key_folder(
    world, tmp_path, settings, live_server, site_broker
):
    settings.VAR_DIR = tmp_path / "control"
    settings.KEY_SERVICE_CALLER_KEY = tmp_path / "control" / "web.key"
    settings.KEY_SERVICE_CALLER_KEYS = tmp_path / "callers"
    credentials = tmp_path / "site-api"
    ensure_site_certificates(credentials, [SITE], ["localhost"])
    settings.SITE_API_CA = credentials / "ca.crt"
    factories.register_passkey(world.alice, world.charite)
    factories.register_passkey(world.carol, world.zurich)

    with owner_key_services([world.charite, world.zurich, world.pharma]):
        room = world.study(tmp_path)
        query = propose(room, world.bob, world.pharma, sql=JOIN_SQL)
        for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
            factories.decide(query=query, organization=org, by=owner, approve=True)

        environment = site_environment(
            site_host(credentials, tmp_path / "tee-host"),
            f"{live_server.url}/site-api",
            site_broker.var_dir,
            site_broker.url,
        )
        tried, log = tmp_path / "orm.txt", tmp_path / "site.log"
        with log.open("w") as output:
            worker = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    WORKER,
                    str(tried),
                    "worker",
                    "-Q",
                    f"site.{SITE}",
                    "--pool",
                    "solo",
                    "--hostname",
                    f"{SITE}-{os.getpid()}@%h",
                    "--without-mingle",
                    "--without-gossip",
                    "--without-heartbeat",
                    "--loglevel",
                    "INFO",
                ],
                cwd=django_settings.BASE_DIR,
                env=environment,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            # Asked of the running process itself: nothing of the platform's in its environment.
            seen = Path(f"/proc/{worker.pid}/environ").read_bytes().split(b"\0")
            names = {entry.split(b"=", 1)[0].decode() for entry in seen if entry}
            assert not names & set(PLATFORM_SECRETS)
            assert "CLEANROOM_ROLE" in names

            job = run_query(query=query, by=world.bob)
            deadline = time.monotonic() + 300
            while not Job.objects.get(pk=job.pk).finished:
                if time.monotonic() > deadline or worker.poll() is not None:
                    pytest.fail(f"the site's job did not finish:\n{tail(log)}")
                time.sleep(0.2)  # polling the job's row, with a deadline
            job.refresh_from_db()
            assert job.state == Job.State.SUCCEEDED, f"{job.error}\n{tail(log)}"
        finally:
            kill_and_reap(worker.pid)
            worker.wait()
        # Only the receiver opens it, through its own key service.
        table = read_result(Result.objects.get(job=job), world.pharma, world.bob)
        assert table["rows"]

    assert tried.read_text().startswith(
        "NoDatabase: This is a site process (CLEANROOM_ROLE=site): it has no database."
    )
    assert job.attestation["accepted"] is True and job.attestation["kind"] == "simulated"
    assert job.charged_at is not None and job.lease_site.name == SITE

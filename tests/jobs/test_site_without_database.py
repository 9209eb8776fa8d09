"""A TEE site as issue #17 wants it: its Celery worker is a process of its own whose environment
has no database URL and no key folder (CLEANROOM_ROLE=site), on the embedded broker and on
RabbitMQ, talking to a live control plane only through the signed site API, with each owner's
key service its own process. The job runs end to end; the worker's ORM refuses, as tried in that
process."""

from __future__ import annotations

import time

import pytest

from jobs.demo.key_services import owner_key_services
from jobs.execution.lifecycle import run_query
from jobs.models import Job, Result
from jobs.results.storage import read_result
from parties.site_certificates import ensure_site_certificates
from tests import factories
from tests.factories import JOIN_SQL, propose
from tests.jobs.site_api_worker import (
    NO_DATABASE,
    PLATFORM_SECRETS,
    environment_names,
    site_environment,
    site_host,
    start_worker,
)
from tests.jobs.site_processes import kill_and_reap, tail

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SITE = "eu-frankfurt-tee"


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
            site_host(credentials, tmp_path / "tee-host", SITE),
            SITE,
            f"{live_server.url}/site-api",
            site_broker.var_dir,
            site_broker.url,
        )
        tried, log = tmp_path / "orm.txt", tmp_path / "site.log"
        worker = start_worker([], SITE, environment, tried, log)
        try:
            # Asked of the running process itself: nothing of the platform's in its environment.
            names = environment_names(worker.pid)
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

    assert tried.read_text().startswith(NO_DATABASE)
    assert job.attestation["accepted"] is True and job.attestation["kind"] == "simulated"
    assert job.charged_at is not None and job.lease_site.name == SITE

"""Both engines end to end across the multi-host test bed (tests/bed/sites.py): each site's
Celery worker a process in its site's namespace, on RabbitMQ with its own broker user; the
TEE host in the EU site, each MPC compute party (its worker and its MPyC party processes) in
a namespace of its own, reaching the other parties over the bed's network. This process is
the control plane: it dispatches, and sends what sites cannot (the outbox, as beat does).

Until site workers report through the site API they still read and write job state in
PostgreSQL: this module's bed has the one allowance, `site_reaches_database=True`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from jobs.execution import outbox
from jobs.execution.lifecycle import run_query
from jobs.models import BudgetEntry, Job, Result
from tests import factories
from tests.bed.sites import CONTROL_USER, PARTIES, POSTGRES, RABBITMQ, Bed, site_bed
from tests.factories import JOIN_SQL, propose
from tests.jobs.mpc_support import INPUT_SITES, approved_union, three_hospitals
from tests.jobs.site_processes import Broker, SiteProcesses, tail, use_broker

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TEE_SITE = "eu-frankfurt-tee"
ENDED = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    with site_bed(mpc_port_base=settings.MPC_PORT_BASE, site_reaches_database=True) as made:
        yield made


@pytest.fixture
def sites(bed, tmp_path, settings) -> Iterator[SiteProcesses]:
    """Site workers placed in the bed; this process publishes as the control plane."""
    control = f"amqp://{CONTROL_USER}:guest@127.0.0.1:{RABBITMQ}/{bed.vhost}"
    previous = settings.CELERY_BROKER_URL, settings.CELERY_BROKER_TRANSPORT_OPTIONS
    use_broker(control, {})
    addresses = {site: bed.site_host(site).address for site in PARTIES}
    settings.MPC_PARTY_ADDRESSES = addresses
    settings.MPC_INBOX_ADDRESSES = {site: bed.inbox_address(site) for site in PARTIES}
    database = connection.settings_dict

    def place(site: str) -> tuple[list[str], dict[str, str]]:
        return bed.site_host(site).command(), {
            "DATABASE_URL": (
                f"postgres://{database['USER']}:{database['PASSWORD']}@{bed.control}:"
                f"{POSTGRES}/{database['NAME']}"
            ),
            "CELERY_BROKER_URL": bed.broker_url(site),
            "MPC_PARTY_ADDRESSES": ",".join(f"{s}={a}" for s, a in addresses.items()),
            "MPC_INBOX_ADDRESSES": ",".join(
                f"{s}={a}" for s, a in settings.MPC_INBOX_ADDRESSES.items()
            ),
        }

    processes = SiteProcesses(Broker("amqp", control, tmp_path / "var"), tmp_path, place)
    try:
        yield processes
    finally:
        processes.stop()
        use_broker(*previous)


def until_ended(listener, job: Job, logs: list[Path], timeout: float = 240) -> dict:
    """The job's last state, once ended; meanwhile the control plane's outbox sends what the
    sites' workers could not (their broker users publish nothing)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        for notice in listener.notifies(timeout=min(left, 1), stop_after=1):
            change = json.loads(notice.payload)
            if change["id"] == job.pk and change["state"] in ENDED:
                return change
        outbox.dispatch_pending()
    pytest.fail(f"job {job.pk} did not end in {timeout} s:\n" + "\n".join(map(tail, logs)))


def connected_as(bed: Bed, site: str, log: Path) -> bool:
    line = f"Connected to amqp://{bed.users[site]}:**@{bed.control}:{RABBITMQ}/{bed.vhost}"
    return line in log.read_text()


def test_a_tee_job_runs_with_its_tee_host_in_the_eu_site(bed, sites, world, tmp_path, job_changes):
    host = sites.start(TEE_SITE)
    query = propose(
        world.study(tmp_path), world.bob, world.pharma, sql=JOIN_SQL, epsilon=Decimal(1)
    )
    for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
        factories.decide(query=query, organization=org, by=owner, approve=True)

    job = run_query(query=query, by=world.bob)
    done = until_ended(job_changes, job, [host.log])

    job.refresh_from_db()
    assert done["state"] == "succeeded", (job.error, tail(host.log))
    assert job.attestation["kind"] == "simulated" and job.attestation["accepted"]
    assert Result.objects.filter(job=job).count() == 1
    kinds = sorted(BudgetEntry.objects.filter(query=query).values_list("kind", flat=True))
    assert kinds == ["reserve", "reserve", "spend", "spend"]
    assert connected_as(bed, TEE_SITE, host.log)


def test_an_mpc_job_runs_with_each_party_on_its_own_host(
    bed, sites, share_inboxes, world, tmp_path, job_changes
):
    room = three_hospitals(world, tmp_path)
    share_inboxes.start(*PARTIES, place=sites.place)
    started = {site: sites.start(site) for site in (*INPUT_SITES, *PARTIES)}

    job = run_query(query=approved_union(world, room), by=world.bob)
    done = until_ended(job_changes, job, [p.log for p in started.values()])

    job.refresh_from_db()
    logs = "\n".join(tail(p.log) for p in started.values())
    assert done["state"] == "succeeded", (job.error, logs)
    assert Result.objects.filter(job=job).count() == 1
    kinds = sorted(BudgetEntry.objects.filter(query=job.query).values_list("kind", flat=True))
    assert kinds == ["reserve"] * 3 + ["spend"] * 3
    for site in PARTIES:
        assert connected_as(bed, site, started[site].log)
        # Each party's shares came to its inbox on its own host, over the bed's network.
        assert any((settings.MPC_INBOX_DIR / site).rglob("*")), site
        step = job.steps.get(kind="compute", site__name=site)
        assert step.state == "succeeded"

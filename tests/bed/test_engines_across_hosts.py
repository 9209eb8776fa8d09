"""Both engines end to end across the multi-host test bed (tests/bed/sites.py): each site's
Celery worker a process in its site's namespace, on RabbitMQ with its own broker user; the
TEE host in the EU site, each MPC compute party (its worker and its MPyC party processes) in
a namespace of its own, reaching the other parties over the bed's network. This process is
the control plane: it dispatches, serves the site API and sends what sites cannot (the outbox,
as beat does).

Every site process runs as issue #17 wants it (CLEANROOM_ROLE=site: no database URL, no key
folder), reporting through the site API: the TEE host, the owners' input workers, the compute
parties' workers and their share inboxes. Each reaches the site API, RabbitMQ, its MPC peers
and, while its test runs, the key services it asks, and nothing else: PostgreSQL is out of
every site's reach."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from jobs.demo.key_services import owner_key_services
from jobs.execution import outbox
from jobs.execution.lifecycle import run_query
from jobs.models import BudgetEntry, Job, Result
from parties.site_certificates import ensure_site_certificates
from tests import factories
from tests.bed.control_plane import publishing_to
from tests.bed.sites import (
    CONNECT,
    PARTIES,
    POSTGRES,
    RABBITMQ,
    SITE_HOSTS,
    Bed,
    site_bed,
)
from tests.factories import JOIN_SQL, propose
from tests.jobs.mpc_support import (
    INPUT_SITES,
    approved_union,
    london_hospital,
    per_site_credentials,
    three_hospitals,
)
from tests.jobs.site_api_worker import (
    NO_DATABASE,
    PLATFORM_SECRETS,
    SiteApiServer,
    environment_names,
    site_environment,
    site_host,
    start_worker,
)
from tests.jobs.site_processes import Broker, SiteProcesses, kill_and_reap, tail

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TEE_SITE = "eu-frankfurt-tee"
ENDED = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    """The bed as #17 wants it: no site reaches PostgreSQL."""
    with site_bed(mpc_port_base=settings.MPC_PORT_BASE) as made:
        yield made


@pytest.fixture
def site_api(bed, settings, tmp_path) -> Iterator[Path]:
    """The site API, served by a live server of this process at 127.0.0.1, on the bed's site
    API port, where the bed's relay brings the sites; yields the folder of its certificates,
    whose server certificate names the control plane's address on the bed."""
    credentials = tmp_path / "site-api"
    ensure_site_certificates(credentials, [TEE_SITE, *INPUT_SITES, *PARTIES], [bed.control])
    settings.SITE_API_CA = credentials / "ca.crt"
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, bed.control]
    server = SiteApiServer(bed.api_port)
    server.start()
    try:
        yield credentials
    finally:
        server.stop()


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


def test_a_tee_job_runs_with_its_tee_host_in_the_eu_site(
    bed, site_api, world, tmp_path, settings, job_changes
):
    settings.VAR_DIR = tmp_path / "control"
    settings.KEY_SERVICE_CALLER_KEY = tmp_path / "control" / "web.key"
    settings.KEY_SERVICE_CALLER_KEYS = tmp_path / "callers"
    factories.register_passkey(world.alice, world.charite)
    factories.register_passkey(world.carol, world.zurich)
    eu = bed.site_host(TEE_SITE)

    # The TEE host, through the launcher its worker runs by, cannot connect to PostgreSQL.
    tried_database = bed.run(eu, sys.executable, "-c", CONNECT, bed.control, str(POSTGRES))
    assert tried_database.stdout.strip() == "No route to host", tried_database

    with (
        publishing_to(bed),
        owner_key_services([world.charite, world.zurich, world.pharma]) as services,
    ):
        ports = {slug: urlsplit(url).port or 80 for slug, url in services.items()}
        # Until the bed opens them to it, the TEE host cannot reach the key services either.
        closed = bed.run(eu, sys.executable, "-c", CONNECT, bed.control, str(ports["charite"]))
        assert closed.stdout.strip() == "No route to host", closed
        with bed.open_to_control(["eu"], list(ports.values())):
            # The owners' key services as the TEE host reaches them, and the work orders say.
            settings.KEY_SERVICES = {s: f"http://{bed.control}:{p}" for s, p in ports.items()}
            query = propose(
                world.study(tmp_path), world.bob, world.pharma, sql=JOIN_SQL, epsilon=Decimal(1)
            )
            for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
                factories.decide(query=query, organization=org, by=owner, approve=True)

            environment = site_environment(
                site_host(site_api, tmp_path / "tee-host", TEE_SITE),
                TEE_SITE,
                f"http://{bed.control}:{bed.api_port}/site-api",
                tmp_path / "var",
                bed.broker_url(TEE_SITE),
            )
            environment["CLEANROOM_KEY_SERVICES"] = ",".join(
                f"{s}={u}" for s, u in settings.KEY_SERVICES.items()
            )
            tried, log = tmp_path / "orm.txt", tmp_path / "site.log"
            worker = start_worker(eu.command(), TEE_SITE, environment, tried, log)
            try:
                job = run_query(query=query, by=world.bob)
                done = until_ended(job_changes, job, [log])
                # Asked of the process that ran it (past `ip netns exec`'s own exec of it):
                # nothing of the platform's in its environment.
                names = environment_names(worker.pid)
                assert not names & set(PLATFORM_SECRETS)
                assert "CLEANROOM_ROLE" in names
            finally:
                kill_and_reap(worker.pid)
                worker.wait()

    job.refresh_from_db()
    assert done["state"] == "succeeded", (job.error, tail(log))
    assert tried.read_text().startswith(NO_DATABASE)
    assert job.attestation["kind"] == "simulated" and job.attestation["accepted"]
    assert job.lease_site.name == TEE_SITE
    assert Result.objects.filter(job=job).count() == 1
    kinds = sorted(BudgetEntry.objects.filter(query=query).values_list("kind", flat=True))
    assert kinds == ["reserve", "reserve", "spend", "spend"]
    assert connected_as(bed, TEE_SITE, log)


@pytest.fixture
def mpc_sites(bed, site_api, tmp_path, settings) -> Iterator[SiteProcesses]:
    """The MPC job's site processes, each placed on its host as a site process: no database
    URL, no key folder; its own site API certificate, MPC credentials and broker user."""
    addresses = {site: bed.site_host(site).address for site in PARTIES}
    settings.MPC_PARTY_ADDRESSES = addresses
    settings.MPC_INBOX_ADDRESSES = {site: bed.inbox_address(site) for site in PARTIES}
    mpc = per_site_credentials(tmp_path / "mpc-ca", tmp_path / "mpc")
    (tmp_path / "hosts").mkdir()

    def place(site: str) -> tuple[list[str], dict[str, str | None]]:
        folder = tmp_path / "hosts" / site
        if not folder.exists():
            site_host(site_api, folder, site)
        environment: dict[str, str | None] = {
            **site_environment(
                folder,
                site,
                f"http://{bed.control}:{bed.api_port}/site-api",
                tmp_path / "var",
                bed.broker_url(site),
            ),
            "MPC_CREDENTIALS_DIR": str(mpc[site]),
            "MPC_PARTY_ADDRESSES": ",".join(f"{s}={a}" for s, a in addresses.items()),
            "MPC_INBOX_ADDRESSES": ",".join(
                f"{s}={a}" for s, a in settings.MPC_INBOX_ADDRESSES.items()
            ),
            "CLEANROOM_KEY_SERVICES": ",".join(
                f"{s}={u}" for s, u in settings.KEY_SERVICES.items()
            ),
        }
        environment.update(dict.fromkeys(PLATFORM_SECRETS))
        return bed.site_host(site).command(), environment

    with publishing_to(bed) as control:
        processes = SiteProcesses(Broker("amqp", control, tmp_path / "var"), tmp_path, place)
        try:
            yield processes
        finally:
            processes.stop()


@pytest.fixture
def owners_services(bed, world, tmp_path, settings) -> Iterator[None]:
    """The owners' and the receiver's key services, as the sites reach them at the control
    plane's address on the bed; pinned to the owners' passkeys, registered first."""
    settings.VAR_DIR = tmp_path / "control"
    settings.KEY_SERVICE_CALLER_KEY = tmp_path / "control" / "web.key"
    settings.KEY_SERVICE_CALLER_KEYS = tmp_path / "callers"
    barts = london_hospital()
    for user, org in ((world.alice, world.charite), (world.carol, world.zurich)):
        factories.register_passkey(user, org)
    factories.register_passkey(User.objects.get(username="uma"), barts)
    with owner_key_services([world.charite, world.zurich, barts, world.pharma]) as services:
        ports = {slug: urlsplit(url).port or 80 for slug, url in services.items()}
        # The owners' sites ask for their datasets' keys; the parties open the delivery.
        with bed.open_to_control([*SITE_HOSTS, *PARTIES], list(ports.values())):
            settings.KEY_SERVICES = {s: f"http://{bed.control}:{p}" for s, p in ports.items()}
            yield


def test_an_mpc_job_runs_with_each_party_on_its_own_host(
    bed, owners_services, mpc_sites, share_inboxes, world, tmp_path, job_changes
):
    room = three_hospitals(world, tmp_path)
    share_inboxes.start(*PARTIES, place=mpc_sites.place)
    started = {site: mpc_sites.start(site) for site in (*INPUT_SITES, *PARTIES)}
    processes = [
        *(p.supervised.process.pid for p in started.values()),
        *(p.pid for p in share_inboxes.processes.values()),
    ]

    job = run_query(query=approved_union(world, room), by=world.bob)
    done = until_ended(job_changes, job, [p.log for p in started.values()])
    # Asked of each process that took part: nothing of the platform's in its environment.
    for pid in processes:
        names = environment_names(pid)
        assert not names & set(PLATFORM_SECRETS) and "CLEANROOM_ROLE" in names, pid

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
    # Every step's lease was held by its own site, through the site API.
    for step in job.steps.exclude(kind="deliver").select_related("site", "lease_site"):
        assert step.lease_site == step.site, step.name
    assert job.steps.get(kind="deliver").lease_site.name in PARTIES

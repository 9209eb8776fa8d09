"""A study of three hospitals in three jurisdictions (EU, CH, UK) for the MPC job tests: each
owner's dataset is read only at a worker site of its own jurisdiction, and the shares go to the
MPC parties in Paris, Geneva and Manchester."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection

from jobs.engines.mpc.certificates import ensure_credentials, ensure_sender_credentials
from jobs.models import Query, Room
from jobs.rooms.services import contribute_dataset, invite_organization, respond_to_invitation
from parties import services
from parties.models import Organization
from tests import factories
from tests.factories import World, propose
from tests.jobs.site_processes import Placement, placed_environment

THREE_WAY_SQL = """SELECT u.age_band, COUNT(*) AS n, SUM(u.length_of_stay) AS stay,
       AVG(u.cost) AS mean_cost
FROM (SELECT age_band, length_of_stay, cost FROM charite.patients
      UNION ALL SELECT age_band, length_of_stay, cost FROM usz.patients
      UNION ALL SELECT age_band, length_of_stay, cost FROM barts.patients) AS u
GROUP BY u.age_band"""

INPUT_SITES = ["ch-zurich", "eu-frankfurt", "uk-london"]
PARTY_SITES = ["ch-geneva-mpc", "eu-paris-mpc", "uk-manchester-mpc"]


def london_hospital() -> Organization:
    """Barts, in the UK, owner uma: made first where its key service must pin uma's passkey."""
    return factories.organization("barts", "Barts Health", "UK", uma="owner")


def three_hospitals(world: World, tmp_path: Path) -> Room:
    """`world.study` (Berlin, Zurich) and a London hospital (owner uma) with its own dataset
    pinned to the UK."""
    room = world.study(tmp_path)
    barts = Organization.objects.filter(slug="barts").first() or london_hospital()
    uma = User.objects.get(username="uma")
    membership = invite_organization(
        room=room, organization=barts, acting_for=world.pharma, by=world.bob
    )
    respond_to_invitation(membership=membership, accept=True, by=uma)
    path = factories.patients_csv(tmp_path / "barts.csv", rows=200, seed=3, id_offset=10_000)
    version = factories.dataset(barts, uma, path, jurisdiction="UK")
    services.update_policy(
        dataset=version.dataset,
        by=uma,
        allowed_dimensions=["age_band", "sex", "diagnosis"],
        allowed_measures=["length_of_stay", "cost"],
        allowed_filters=["age_band", "sex", "diagnosis"],
        allowed_aggregates=["count", "sum", "avg"],
        allowed_mechanisms=["mpc", "tee"],
        allowed_receivers=[world.pharma, barts],
        max_epsilon_per_query=Decimal("1"),
        total_epsilon=Decimal("3"),
    )
    contribute_dataset(room=room, dataset=version.dataset, by=uma)
    return room


def approved_union(world: World, room: Room, **values) -> Query:
    query = propose(room, world.bob, world.pharma, sql=THREE_WAY_SQL, **values)
    barts = (Organization.objects.get(slug="barts"), User.objects.get(username="uma"))
    for org, owner in ((world.charite, world.alice), (world.zurich, world.carol), barts):
        factories.decide(query=query, organization=org, by=owner, approve=True)
    query.refresh_from_db()
    return query


def plain_answer(tmp_path: Path) -> dict[str, dict[str, float]]:
    """The exact answer, from the test's own files: no bound or clamp binds on this data."""
    rows = pl.concat(
        [pl.read_csv(tmp_path / f"{name}.csv") for name in ("charite", "usz", "barts")]
    )
    totals = rows.group_by("age_band").agg(
        pl.len().alias("n"),
        pl.col("length_of_stay").sum().alias("stay"),
        pl.col("cost").mean().alias("mean_cost"),
    )
    return {row["age_band"]: row for row in totals.iter_rows(named=True)}


def per_site_credentials(deployment: Path, folder: Path) -> dict[str, Path]:
    """Make the deployment's MPC credentials in `deployment` (the CA's folder), then hand each
    site only what the layout of jobs/engines/mpc/certificates.py gives it, in a folder of its
    own under `folder`: a party site the CA's certificate and its own certificate and keys; an
    input site the CA's certificate, every party's certificate and its own sender certificate
    and key, no party's key. No site gets ca.key."""
    ensure_credentials(deployment, PARTY_SITES)
    ensure_sender_credentials(deployment, INPUT_SITES)
    roots = {}
    for site in PARTY_SITES + INPUT_SITES:
        root = folder / site
        root.mkdir(parents=True, mode=0o700)
        shutil.copy2(deployment / "ca.crt", root / "ca.crt")
        if site in PARTY_SITES:
            given = {site: ["tls.crt", "tls.key", "share.key"]}
        else:
            given = {party: ["tls.crt"] for party in PARTY_SITES}
        for party, names in given.items():
            (root / "parties" / party).mkdir(parents=True, mode=0o700)
            for name in names:
                shutil.copy2(deployment / "parties" / party / name, root / "parties" / party / name)
        if site in INPUT_SITES:
            shutil.copytree(deployment / "senders" / site, root / "senders" / site)
        roots[site] = root
    return roots


# --- The parties' share inboxes, as processes of their own ------------------------------------


def database_url() -> str:
    """This test's database, for a process of its own."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    return (
        f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:"
        f"{db['PORT'] or 5432}/{db['NAME']}"
    )


@dataclass
class Inboxes:
    """The share inbox processes this test started, by site."""

    folder: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(
        self,
        *sites: str,
        credentials: dict[str, Path] | None = None,
        place: Placement | None = None,
    ) -> None:
        """Start the inboxes of `sites` (`manage.py mpc_inbox`), each with its own credentials
        folder (default MPC_CREDENTIALS_DIR), and wait, up to a deadline, until each says it
        listens. `place(site)` gives the command prefix that runs it on the site's host and
        what changes in its environment there (the multi-host test bed)."""
        folders = credentials or {}
        for site in sites:
            prefix, changes = place(site) if place else ([], {})
            environment = placed_environment(
                {
                    **os.environ,
                    "CLEANROOM_BOOTSTRAP": "0",
                    "CLEANROOM_SITE": site,
                    "DATABASE_URL": database_url(),
                    "MPC_CREDENTIALS_DIR": str(folders.get(site, settings.MPC_CREDENTIALS_DIR)),
                    "MPC_INBOX_DIR": str(settings.MPC_INBOX_DIR),
                    "MPC_PORT_BASE": str(settings.MPC_PORT_BASE),
                },
                changes,
            )
            with (self.folder / f"inbox-{site}.log").open("w") as errors:
                self.processes[site] = subprocess.Popen(
                    [*prefix, sys.executable, "manage.py", "mpc_inbox"],
                    cwd=settings.BASE_DIR,
                    env=environment,
                    stdout=subprocess.PIPE,
                    stderr=errors,
                )
        for site in sites:
            process = self.processes[site]
            assert process.stdout
            ready, _, _ = select.select([process.stdout], [], [], 60)
            line = process.stdout.readline().decode() if ready else ""
            if "listening" not in line:
                log = (self.folder / f"inbox-{site}.log").read_text()
                pytest.fail(f"the share inbox of {site} did not start: {line}{log}")

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout:
                process.stdout.close()


@pytest.fixture
def share_inboxes(tmp_path) -> Iterator[Inboxes]:
    """Start share inboxes for MPC party sites (each a process of its own, over real TLS)."""
    inboxes = Inboxes(tmp_path)
    try:
        yield inboxes
    finally:
        inboxes.stop()

"""The MPC engine's parts against plain NumPy doing the same group-by.

Three data owners with 10^4, 10^5 and then 10^6 rows each: a key out of 50 public groups and an
integer amount in [0, 1000]. The query: per group, COUNT(*) and SUM(amount), ε = 1 split evenly,
scales from OpenDP's calibration (dataplane/privacy/calibration.py), three compute parties over TLS
with this deployment's kind of credentials (a scratch MPC CA). Per size:

- owner side: each owner pre-aggregates its rows into the 50 groups (clamped amounts), splits
  the 100 cells into Shamir shares and seals one share vector to each party (all three owners);
- the MPC part alone, from input shares to output shares (the slowest party's), and within it
  the noise sampling alone; bytes the parties' MPyC messages carried (sent, all parties);
- the party processes' wall time (start, TLS connection, MPC, exit);
- plain NumPy: the three owners' bincounts and their sum, in the clear, without noise; the
  ratio of the MPC part and of owner side + parties to it.

Peak memory: the largest party process (its VmHWM) and this process (owners' data included).

End to end, per size: the same query in the joint query language (a UNION ALL of the three
owners' datasets, COUNT(*) and SUM(amount) by a dimension of 50 public values), uploaded as
datasets, approved by the three owners and run through the whole product on a database and
state folder of its own: `run_query`, dispatch after commit, real Celery worker processes at
three input sites and three MPC party sites (embedded broker), the owners' input steps
(decrypt, bound, pre-aggregate, share, seal), the party processes over TLS, the delivery, and
the receiver reading the decrypted result through the API. The workers are started and
answering before the clock starts; the job's end is noticed by polling its row every 20 ms.
At 10^4 rows, jobs run in pairs: the same people in two sets of organisations, the one with
every organisation's own key service running as its own process (SoftHSM2 tokens, signed
requests, as the demo does: the owners' services release each input step's key, the
receiver's holds the delivery key and opens the result), the other with the embedded one, one
job of each next to the other (the workers started afresh for each, with the services named or
not); what the key services add is read from the pairs' differences and from the steps they
take part in (the job's start with its delivery key, the slowest input step's wait for its
key, the delivery, the result's read), where a change of the machine's load does not reach it.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl
from django.test.utils import override_settings

from dataplane.mpc import sharing
from dataplane.privacy.calibration import laplace_scale
from jobs.engines.mpc.certificates import ensure_credentials, party_private_key, party_public_key
from jobs.engines.mpc.parties import PartyOutput, PartySpec, party_addresses, start_party
from tests import factories
from tests.engines.support import mpc_config

SIZES = (10**4, 10**5, 10**6)
OWNERS = 3
GROUPS = 50
UPPER = 1000
EPSILON = 1.0
SITES = ["eu-paris-mpc", "ch-geneva-mpc", "uk-manchester-mpc"]
INPUT_SITES = ["eu-frankfurt", "ch-zurich", "uk-london"]
MEASURES = ["count", "sum(amount)"]
TIMEOUT = 300
# Jobs at the smallest size end to end, with and without the key services (the best counts).
E2E_JOBS = 3


@dataclass
class MpcPartFigures:
    owner_seconds: float  # pre-aggregation + sharing + sealing, all owners
    mpc_seconds: float  # input shares to output shares, slowest party
    noise_seconds: float  # the noise sampling alone, slowest party
    parties_wall_seconds: float  # party processes from start to exit
    bytes_exchanged: int  # sent by all parties
    plain_seconds: float  # NumPy in the clear
    party_peak_bytes: int  # the largest party process's peak resident memory
    released: list[int]
    plain: list[int]


def owner_rows(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, GROUPS, size=rows), rng.integers(-50, UPPER + 50, size=rows)


def pre_aggregate(keys: np.ndarray, amounts: np.ndarray) -> list[int]:
    """The owner's vector, measure-major: COUNT per group, then the clamped SUM per group."""
    counts = np.bincount(keys, minlength=GROUPS)
    sums = np.bincount(keys, weights=np.clip(amounts, 0, UPPER), minlength=GROUPS)
    return [int(v) for v in counts] + [int(v) for v in sums]


def _plain(owners: list[tuple[np.ndarray, np.ndarray]]) -> list[int]:
    total = np.zeros(2 * GROUPS, dtype=np.int64)
    for keys, amounts in owners:
        total[:GROUPS] += np.bincount(keys, minlength=GROUPS)
        total[GROUPS:] += np.bincount(
            keys, weights=np.clip(amounts, 0, UPPER), minlength=GROUPS
        ).astype(np.int64)
    return total.tolist()


def measure_mpc_part(rows: int, *, job: int = 1) -> MpcPartFigures:
    """Owners' input side and the three compute parties for `rows` rows per owner; the MPC
    credentials come from settings.MPC_CREDENTIALS_DIR (made there if missing)."""
    ensure_credentials(mpc_config().credentials, SITES)
    owners = [owner_rows(rows, seed) for seed in range(OWNERS)]
    start = time.perf_counter()
    plain = _plain(owners)
    plain_seconds = time.perf_counter() - start

    start = time.perf_counter()
    sealed = []  # sealed[owner][party]
    for number, (keys, amounts) in enumerate(owners):
        shares = sharing.split(pre_aggregate(keys, amounts), len(SITES))
        sealed.append(
            [
                sharing.seal_for_party(
                    shares[i],
                    party_public_key(mpc_config().credentials, site),
                    f"{job}/{number}/{i}".encode(),
                )
                for i, site in enumerate(SITES)
            ]
        )
    owner_seconds = time.perf_counter() - start

    scales = [
        laplace_scale(1, EPSILON / 2, discrete=True),
        laplace_scale(UPPER, EPSILON / 2, discrete=True),
    ]
    addresses = party_addresses(job, SITES, mpc_config())
    specs = [
        PartySpec(
            job=job,
            index=i,
            sites=SITES,
            addresses=addresses,
            inputs=[
                sharing.open_for_party(
                    sealed[owner][i],
                    party_private_key(mpc_config().credentials, site),
                    f"{job}/{owner}/{i}".encode(),
                )
                for owner in range(OWNERS)
            ],
            layout={"groups": GROUPS, "measures": MEASURES},
            noise=[{"measure": m, "scale": s} for m, s in zip(MEASURES, scales, strict=True)],
        )
        for i, site in enumerate(SITES)
    ]
    start = time.perf_counter()
    running = [start_party(spec, mpc_config()) for spec in specs]
    with ThreadPoolExecutor(len(running)) as pool:
        outputs: list[PartyOutput] = list(pool.map(lambda party: party.wait(TIMEOUT), running))
    parties_wall = time.perf_counter() - start
    released = sharing.recombine({i: o.output for i, o in enumerate(outputs)})
    return MpcPartFigures(
        owner_seconds=owner_seconds,
        mpc_seconds=max(o.seconds["mpc"] for o in outputs),
        noise_seconds=max(o.seconds["noise"] for o in outputs),
        parties_wall_seconds=parties_wall,
        bytes_exchanged=sum(o.bytes_sent for o in outputs),
        plain_seconds=plain_seconds,
        party_peak_bytes=max(o.peak_memory_bytes for o in outputs),
        released=released,
        plain=plain,
    )


def _label(rows: int) -> str:
    return f"3x10^{len(str(rows)) - 1} rows"


def report_mpc_part(rows: int, figures: MpcPartFigures) -> None:
    label = _label(rows)
    plain = figures.plain_seconds
    owners_and_parties = figures.owner_seconds + figures.parties_wall_seconds
    largest = max(abs(a - b) for a, b in zip(figures.released, figures.plain, strict=True))
    lines = [
        ("owner-side pre-aggregation+sharing", f"{figures.owner_seconds:.3f} s"),
        ("part (input shares to output shares)", f"{figures.mpc_seconds:.2f} s"),
        ("noise sampling", f"{figures.noise_seconds:.2f} s"),
        ("party processes wall", f"{figures.parties_wall_seconds:.2f} s"),
        ("bytes exchanged", f"{figures.bytes_exchanged / 2**20:.1f} MB"),
        ("plain numpy", f"{plain:.4f} s"),
        ("part ratio to plain numpy", f"{figures.mpc_seconds / plain:.0f} x"),
        ("owners+parties ratio to plain numpy", f"{owners_and_parties / plain:.0f} x"),
        ("largest party process peak memory", f"{figures.party_peak_bytes / 2**20:.0f} MB"),
        ("largest noise drawn", f"{largest} units"),
    ]
    for name, value in lines:
        print(f"mpc {name} {label}: {value}", flush=True)


E2E_OWNERS = (("charite", "alice", "EU"), ("usz", "carol", "CH"), ("barts", "uma", "UK"))
E2E_RECEIVER = ("pharma", "bob", "US")
# The same people in organisations of their own, which run no key service (named with this).
EMBEDDED = "_embedded"


def _visits_csv(path: Path, rows: int, seed: int) -> Path:
    """`rows` visits: a unit id, one of 50 public clinics, an amount (some outside [0, 1000])."""
    keys, amounts = owner_rows(rows, seed)
    pl.DataFrame(
        {
            "visit_id": np.arange(rows, dtype=np.int64) + seed * rows,
            "clinic": [f"clinic-{k:02d}" for k in keys],
            "amount": amounts,
        }
    ).write_csv(path)
    return path


def _e2e_room(folder: Path, rows: int, jobs: int, suffix: str = ""):
    """A room of pharma (analyst bob) with each owner's `rows` visits, budget for `jobs` runs
    of the query, and `jobs` approved queries; the organisations' slugs end in `suffix`."""
    from django.contrib.auth.models import User

    from jobs.rooms.services import (
        contribute_dataset,
        create_room,
        invite_organization,
        respond_to_invitation,
    )
    from parties import services
    from parties.models import Organization
    from tests.factories import propose

    label = f"visits{len(str(rows)) - 1}"
    receiver = Organization.objects.get(slug=E2E_RECEIVER[0] + suffix)
    analyst = User.objects.get(username=E2E_RECEIVER[1])
    room = create_room(
        organization=receiver, slug=label + suffix, name=label, purpose="Benchmark", by=analyst
    )
    schema = [
        {"name": "visit_id", "type": "integer", "role": "unit"},
        {
            "name": "clinic",
            "type": "string",
            "role": "dimension",
            "domain": [f"clinic-{k:02d}" for k in range(GROUPS)],
        },
        {"name": "amount", "type": "integer", "role": "measure", "lower": 0, "upper": UPPER},
    ]
    owners = [
        (Organization.objects.get(slug=slug + suffix), User.objects.get(username=owner), home)
        for slug, owner, home in E2E_OWNERS
    ]
    for seed, (org, user, jurisdiction) in enumerate(owners):
        membership = invite_organization(
            room=room, organization=org, acting_for=receiver, by=analyst
        )
        respond_to_invitation(membership=membership, accept=True, by=user)
        path = _visits_csv(folder / f"{org.slug}-{label}.csv", rows, seed)
        version = services.register_dataset(
            organization=org,
            slug=label,
            name=label,
            jurisdiction=jurisdiction,
            upload=path,
            filename=path.name,
            schema=schema,
            by=user,
        )
        path.unlink()
        services.update_policy(
            dataset=version.dataset,
            by=user,
            allowed_dimensions=["clinic"],
            allowed_measures=["amount"],
            allowed_aggregates=["count", "sum"],
            allowed_mechanisms=["mpc"],
            allowed_receivers=[receiver],
            max_epsilon_per_query=Decimal(str(EPSILON)),
            total_epsilon=Decimal(str(EPSILON * jobs)),
        )
        contribute_dataset(room=room, dataset=version.dataset, by=user)
    # The joint query language, planned and approved like any query; no database runs it.
    branches = " UNION ALL ".join(
        f"SELECT clinic, amount FROM {org.slug}.{label}"  # noqa: S608
        for org, _, _ in owners
    )
    sql = f"SELECT u.clinic, COUNT(*) AS n, SUM(u.amount) AS total FROM ({branches}) AS u GROUP BY u.clinic"  # noqa: S608, E501
    queries = []
    for _ in range(jobs):
        query = propose(room, analyst, receiver, sql=sql, epsilon=Decimal(str(EPSILON)))
        for org, user, _ in owners:
            factories.decide(query=query, organization=org, by=user, approve=True)
        queries.append(query)
    return room, queries


def _e2e_organizations(suffix: str = "") -> list:
    """The owners and the receiver, with their people, their slugs ending in `suffix`."""
    from tests.factories import organization

    names = {
        "charite": "Charité Berlin",
        "usz": "University Hospital Zurich",
        "barts": "Barts Health",
    }
    owners = [
        organization(slug + suffix, names[slug], home, **{person: "owner"})
        for slug, person, home in E2E_OWNERS
    ]
    slug, person, home = E2E_RECEIVER
    return [*owners, organization(slug + suffix, "Pharma Research", home, **{person: "analyst"})]


# Django is set up before this module is imported: the engine's modules import models.
E2E_CHILD = (
    "import django; django.setup(); from tests.benchmarks import bench_mpc; bench_mpc.end_to_end()"
)


def end_to_end() -> None:
    """Run in a child process whose environment points at a state folder of its own. At the
    smallest size, E2E_JOBS pairs of jobs: the same people in two sets of organisations, the
    one with their own key services, the other with the embedded one, run alternately; then
    the larger sizes without the key services."""
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test.utils import setup_test_environment

    from jobs.demo.key_services import owner_key_services
    from tests.benchmarks.support import key_services_named, report_paired

    setup_test_environment()  # the API client's host name
    call_command("migrate", verbosity=0)
    folder = Path(os.environ["CLEANROOM_VAR_DIR"])
    ensure_credentials(mpc_config().credentials, SITES)
    served = _e2e_organizations()
    _e2e_organizations(EMBEDDED)
    # The owners register their passkeys first: each key service pins them as it starts.
    for org, (_, owner, _) in zip(served[: len(E2E_OWNERS)], E2E_OWNERS, strict=True):
        factories.register_passkey(User.objects.get(username=owner), org)
    rows, label = SIZES[0], _label(SIZES[0])
    with owner_key_services(served) as urls:
        sets = [(EMBEDDED, {}), ("", urls)]
        queries, runs = [], ([], [])
        for suffix, named in sets:
            start = time.perf_counter()
            with key_services_named(named):
                queries.append(_e2e_room(folder, rows, E2E_JOBS, suffix))
            also = " with key services" if named else ""
            print(
                f"mpc e2e setup {label}{also}: {time.perf_counter() - start:.1f} s (three uploads)"
            )
        for number in range(E2E_JOBS):
            for index in (0, 1) if number % 2 == 0 else (1, 0):
                room, approved = queries[index]
                with key_services_named(sets[index][1]), _site_workers():
                    runs[index].append(_one_job(room, approved[number]))
    report_paired(
        "mpc e2e", label, *runs, steps=["dispatch", "input step key", "delivery", "result read"]
    )
    with _site_workers():
        for rows in SIZES[1:]:
            start = time.perf_counter()
            room, [query] = _e2e_room(folder, rows, 1, EMBEDDED)
            label = _label(rows)
            print(f"mpc e2e setup {label}: {time.perf_counter() - start:.1f} s (three uploads)")
            for name, seconds in _one_job(room, query).items():
                print(f"mpc e2e {name} {label}: {seconds:.2f} s", flush=True)


@contextmanager
def _site_workers() -> Iterator[None]:
    """A worker per input site and MPC party site, and each party site's share inbox,
    answering before this goes on (the clock starts after their start-up), with the
    environment this process has now."""
    from cleanroom.celery import app
    from jobs.demo.workers import start_share_inbox, start_worker
    from parties.models import Site

    sites = Site.objects.filter(name__in=[*INPUT_SITES, *SITES]).order_by("name")
    workers = [start_share_inbox(site) for site in sites if site.name in SITES]
    workers += [start_worker(site) for site in sites]
    try:
        deadline = time.monotonic() + 180
        for site in sites:
            while not app.control.ping(destination=[f"{site.name}@{socket.gethostname()}"]):
                assert time.monotonic() < deadline, f"the worker at {site.name} did not start"
        yield
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)


def _one_job(room, query) -> dict[str, float]:
    """One approved query run through the product until its result is read through the API:
    the seconds to the visible result, of the steps the key services take part in (the job's
    start with its delivery key, the slowest input step's wait for its dataset's key, the
    delivery, the read), of the slowest step of each kind, and of the MPC part inside the
    parties."""
    from django.contrib.auth.models import User

    from jobs.execution.lifecycle import run_query
    from jobs.models import Job, JobStep, Query
    from tests.benchmarks.support import job_events
    from tests.factories import api

    analyst = User.objects.get(username=E2E_RECEIVER[1])
    start = time.perf_counter()
    job = run_query(query=Query.objects.get(pk=query.pk), by=analyst)
    dispatch = time.perf_counter() - start
    while not Job.objects.get(pk=job.pk).finished:
        time.sleep(0.02)
    job.refresh_from_db()
    reading = time.perf_counter()
    response = api(analyst).get(f"/api/rooms/{room.slug}/jobs/{job.pk}/result/")
    figures = {
        "run to visible result": time.perf_counter() - start,
        "dispatch": dispatch,
        "result read": time.perf_counter() - reading,
    }
    assert job.state == Job.State.SUCCEEDED, job.error
    assert response.status_code == 200 and len(response.json()["table"]["rows"]) == GROUPS
    released = {data["site"]: at for type, at, data in job_events(job.pk) if type == "key.released"}
    figures["input step key"] = max(
        (released[step.site.name] - step.started_at).total_seconds()
        for step in job.steps.filter(kind=JobStep.Kind.INPUT).select_related("site")
    )
    delivery = job.steps.get(kind=JobStep.Kind.DELIVER)
    figures["delivery"] = (delivery.finished_at - delivery.started_at).total_seconds()
    # A party that finished after the release may still be writing its share.
    for kind in (JobStep.Kind.INPUT, JobStep.Kind.COMPUTE):
        figures[f"slowest {kind} step"] = max(
            (step.finished_at - step.started_at).total_seconds()
            for step in job.steps.filter(kind=kind, finished_at__isnull=False)
        )
    parties = job.steps.filter(kind=JobStep.Kind.COMPUTE, state=JobStep.State.SUCCEEDED)
    figures["part inside the parties"] = max(step.output["seconds"]["mpc"] for step in parties)
    return figures


def _end_to_end_in_child(folder: Path) -> None:
    """The end-to-end runs on a state folder and the embedded SQLite database of their own, so
    the site workers and this benchmark share nothing with a running deployment."""
    env = {**os.environ, "CLEANROOM_VAR_DIR": str(folder), "CLEANROOM_BOOTSTRAP": "0"}
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "MPC_CREDENTIALS_DIR"):
        env.pop(name, None)
    env["DJANGO_SETTINGS_MODULE"] = "cleanroom.settings"
    done = subprocess.run(
        [sys.executable, "-c", E2E_CHILD],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    print(done.stdout, end="", flush=True)
    if done.returncode:
        print(done.stderr[-3000:], file=sys.stderr)


def run() -> None:
    with (
        tempfile.TemporaryDirectory(prefix="bench-mpc-") as folder,
        override_settings(MPC_CREDENTIALS_DIR=Path(folder) / "mpc"),
    ):
        for job, rows in enumerate(SIZES, start=1):
            report_mpc_part(rows, measure_mpc_part(rows, job=job))
    with tempfile.TemporaryDirectory(prefix="bench-mpc-e2e-") as folder:
        _end_to_end_in_child(Path(folder))
    own_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    print(f"mpc benchmark process peak memory: {own_peak:.0f} MB")


if __name__ == "__main__":
    run()

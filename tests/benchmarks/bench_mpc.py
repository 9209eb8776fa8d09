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
Then once more at 10^4 rows with every organisation's own key service running as its own
process (SoftHSM2 tokens, signed requests, as the demo does): the owners' services release each
input step's key and the receiver's holds the delivery key and opens the result; the
difference is what the key services' checks cost a job.
"""

from __future__ import annotations

import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
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


def _e2e_room(folder: Path, rows: int, jobs: int):
    """A room of pharma (analyst bob) with each owner's `rows` visits, budget for `jobs` runs
    of the query, and `jobs` approved queries."""
    from django.contrib.auth.models import User

    from jobs import services as room_services
    from parties import services
    from parties.models import Organization
    from tests.factories import propose

    label = f"visits{len(str(rows)) - 1}"
    world = _e2e_world()
    room = room_services.create_room(
        organization=world["pharma"], slug=label, name=label, purpose="Benchmark", by=world["bob"]
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
    for seed, (slug, owner, jurisdiction) in enumerate(E2E_OWNERS):
        org, user = Organization.objects.get(slug=slug), User.objects.get(username=owner)
        membership = room_services.invite_organization(
            room=room, organization=org, acting_for=world["pharma"], by=world["bob"]
        )
        room_services.respond_to_invitation(membership=membership, accept=True, by=user)
        path = _visits_csv(folder / f"{slug}-{label}.csv", rows, seed)
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
            allowed_receivers=[world["pharma"]],
            max_epsilon_per_query=Decimal(str(EPSILON)),
            total_epsilon=Decimal(str(EPSILON * jobs)),
        )
        room_services.contribute_dataset(room=room, dataset=version.dataset, by=user)
    # The joint query language, planned and approved like any query; no database runs it.
    branches = " UNION ALL ".join(
        f"SELECT clinic, amount FROM {slug}.{label}"  # noqa: S608
        for slug, _, _ in E2E_OWNERS
    )
    sql = f"SELECT u.clinic, COUNT(*) AS n, SUM(u.amount) AS total FROM ({branches}) AS u GROUP BY u.clinic"  # noqa: S608, E501
    queries = []
    for _ in range(jobs):
        query = propose(room, world["bob"], world["pharma"], sql=sql, epsilon=Decimal(str(EPSILON)))
        for slug, owner, _ in E2E_OWNERS:
            factories.decide(
                query=query,
                organization=Organization.objects.get(slug=slug),
                by=User.objects.get(username=owner),
                approve=True,
            )
        queries.append(query)
    return world, room, queries


def _e2e_world() -> dict:
    from django.contrib.auth.models import User

    from parties.models import Organization
    from tests.factories import organization

    if not Organization.objects.filter(slug="pharma").exists():
        organization("charite", "Charité Berlin", "EU", alice="owner")
        organization("usz", "University Hospital Zurich", "CH", carol="owner")
        organization("barts", "Barts Health", "UK", uma="owner")
        organization("pharma", "Pharma Research", "US", bob="analyst")
    return {
        "pharma": Organization.objects.get(slug="pharma"),
        "bob": User.objects.get(username="bob"),
    }


# Django is set up before this module is imported: the engine's modules import models.
E2E_CHILD = (
    "import django; django.setup(); from tests.benchmarks import bench_mpc; bench_mpc.end_to_end()"
)


def end_to_end() -> None:
    """Run in a child process whose environment points at a state folder of its own; with
    BENCH_KEY_SERVICES=1, at the smallest size with every organisation's own key service."""
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test.utils import setup_test_environment

    from jobs.owner_key_services import owner_key_services
    from parties.models import Organization

    setup_test_environment()  # the API client's host name
    call_command("migrate", verbosity=0)
    folder = Path(os.environ["CLEANROOM_VAR_DIR"])
    ensure_credentials(mpc_config().credentials, SITES)
    with ExitStack() as running:
        sizes, suffix = SIZES, ""
        if os.environ.get("BENCH_KEY_SERVICES") == "1":
            _e2e_world()
            # The owners register their passkeys first: each key service pins them as it starts.
            for slug, owner, _ in E2E_OWNERS:
                factories.register_passkey(
                    User.objects.get(username=owner), Organization.objects.get(slug=slug)
                )
            # Started before the workers, which take the services' addresses from the environment.
            running.enter_context(owner_key_services(Organization.objects.order_by("slug")))
            sizes, suffix = SIZES[:1], " with key services"
        _run_end_to_end(folder, sizes, suffix)


def _run_end_to_end(folder: Path, sizes: tuple[int, ...], suffix: str) -> None:
    from cleanroom.celery import app
    from jobs.models import Query
    from jobs.workers import start_worker
    from parties.models import Site

    sites = Site.objects.filter(name__in=[*INPUT_SITES, *SITES]).order_by("name")
    workers = [start_worker(site) for site in sites]
    try:
        deadline = time.monotonic() + 180
        for site in sites:
            while not app.control.ping(destination=[f"{site.name}@{socket.gethostname()}"]):
                assert time.monotonic() < deadline, f"the worker at {site.name} did not start"
        for rows in sizes:
            start = time.perf_counter()
            # The compared size runs a few jobs: one run moves by seconds with the machine's load.
            jobs = E2E_JOBS if rows == SIZES[0] else 1
            world, room, queries = _e2e_room(folder, rows, jobs)
            label = _label(rows) + suffix
            print(f"mpc e2e setup {label}: {time.perf_counter() - start:.1f} s (three uploads)")
            runs = [_one_job(world, room, Query.objects.get(pk=q.pk)) for q in queries]
            seconds = [run["run to visible result"] for run in runs]
            best = f"best of {len(runs)}; median {statistics.median(seconds):.2f} s"
            for name in runs[0]:
                value = min(run[name] for run in runs)
                also = f" ({best})" if jobs > 1 and name == "run to visible result" else ""
                print(f"mpc e2e {name} {label}: {value:.2f} s{also}", flush=True)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)


def _one_job(world, room, query) -> dict[str, float]:
    """One approved query run through the product until its result is read through the API:
    the seconds to the visible result, of the slowest step of each kind, and of the MPC part
    inside the parties."""
    from jobs import runner
    from jobs.models import Job, JobStep
    from tests.factories import api

    start = time.perf_counter()
    job = runner.run_query(query=query, by=world["bob"])
    while not Job.objects.get(pk=job.pk).finished:
        time.sleep(0.02)
    job.refresh_from_db()
    response = api(world["bob"]).get(f"/api/rooms/{room.slug}/jobs/{job.pk}/result/")
    figures = {"run to visible result": time.perf_counter() - start}
    assert job.state == Job.State.SUCCEEDED, job.error
    assert response.status_code == 200 and len(response.json()["table"]["rows"]) == GROUPS
    # A party that finished after the release may still be writing its share.
    for kind in (JobStep.Kind.INPUT, JobStep.Kind.COMPUTE):
        figures[f"slowest {kind} step"] = max(
            (step.finished_at - step.started_at).total_seconds()
            for step in job.steps.filter(kind=kind, finished_at__isnull=False)
        )
    parties = job.steps.filter(kind=JobStep.Kind.COMPUTE, state=JobStep.State.SUCCEEDED)
    figures["part inside the parties"] = max(step.output["seconds"]["mpc"] for step in parties)
    return figures


def _end_to_end_in_child(folder: Path, *, key_services: bool = False) -> float | None:
    """Run the end-to-end jobs in a child; returns the smallest size's best time to the visible
    result."""
    """The end-to-end runs on a state folder and the embedded SQLite database of their own, so
    the site workers and this benchmark share nothing with a running deployment."""
    env = {**os.environ, "CLEANROOM_VAR_DIR": str(folder), "CLEANROOM_BOOTSTRAP": "0"}
    env["BENCH_KEY_SERVICES"] = "1" if key_services else "0"
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
    label = re.escape(_label(SIZES[0]))
    best = re.search(
        rf"^mpc e2e run to visible result {label}[^:]*: ([0-9.]+) s", done.stdout, re.M
    )
    return float(best[1]) if best else None


def run() -> None:
    with (
        tempfile.TemporaryDirectory(prefix="bench-mpc-") as folder,
        override_settings(MPC_CREDENTIALS_DIR=Path(folder) / "mpc"),
    ):
        for job, rows in enumerate(SIZES, start=1):
            report_mpc_part(rows, measure_mpc_part(rows, job=job))
    with tempfile.TemporaryDirectory(prefix="bench-mpc-e2e-") as folder:
        alone = _end_to_end_in_child(Path(folder))
    with tempfile.TemporaryDirectory(prefix="bench-mpc-e2e-keys-") as folder:
        with_services = _end_to_end_in_child(Path(folder), key_services=True)
    if alone is not None and with_services is not None:
        added = with_services - alone
        print(f"mpc e2e added by the key services {_label(SIZES[0])}: {added:.2f} s per job")
    own_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    print(f"mpc benchmark process peak memory: {own_peak:.0f} MB")


if __name__ == "__main__":
    run()

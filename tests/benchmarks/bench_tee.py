"""The TEE's data-plane work against plain Polars doing the same join and group-by.

Two datasets of 10^6 and then 10^7 rows each, as Parquet: a bank's customers (unit, join key,
a region out of 50 public values) and a shop's purchases (unit, join key, an amount), with half
of the keys matching. Timed, best of a few runs each, from the Parquet files:

- plain Polars: join on the key, group by region, COUNT, SUM and AVG of the amount;
- the data plane, as the enclave runs it: decrypt each file (AES-256-GCM, the stored envelope
  format) with the enclave's own reader, then `release_aggregates` (contribution bounds, unique
  join keys, clamping, the public group domain, and OpenDP's noise).

Peak memory is each one's peak RSS in a fresh process of its own, next to the size of the two
datasets in memory; this process's own `ru_maxrss` (data generation and every run) too.

End to end, at 10^6 patients per hospital: the demo's join query through the whole product on a
database and state folder of its own (the configured kind of database): `run_query`, dispatch
after commit to the site's queue, a real Celery worker process at the enclave site (started for
each job, its start-up not timed), attestation, key release, the enclave process, release, and
the receiver reading the decrypted result through the API. The job's end is noticed by polling
its row every 20 ms. The same people in two sets of organisations: the one with every
organisation's own key service running as its own process (SoftHSM2 tokens, signed requests, as
the demo does: uploads wrap through the owners' services, each owner's service decides its key
release, the receiver's opens the result), the other with the embedded key service; their jobs
run in pairs, one of each next to the other, so that what the key services add is read from
the pairs' differences and from the steps they take part in (the key release, from the host's
verdict on the document to the last key relayed, and the result's read), where a change of the
machine's load does not reach it. Prints `name: value unit` lines.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import polars as pl

from cleanroom.crypto.envelope import encrypt_stream
from dataplane.enclave import read_dataset
from dataplane.privacy.calibration import measurements
from dataplane.privacy.release import release_aggregates
from dataplane.sql.parser import parse_query
from dataplane.sql.plan import AggregateKind, ColumnInfo, DatasetInfo, Use

SIZES = (10**6, 10**7)
RUNS = 3
# A fixed key for the benchmark's own files: the child processes that measure memory decrypt too.
DATA_KEY = bytes(range(32))
REGIONS = tuple(f"region-{i:02d}" for i in range(50))
SQL = (
    "SELECT c.region, COUNT(*) AS customers, SUM(p.amount) AS total, AVG(p.amount) AS mean "
    "FROM bank.customers AS c JOIN shop.purchases AS p ON c.email_hash = p.email_hash "
    "GROUP BY c.region"
)
UNITS = {"bank.customers": "customer_id", "shop.purchases": "buyer_id"}


def _catalog() -> dict[str, DatasetInfo]:
    every = frozenset(AggregateKind)
    customers = {
        "customer_id": ColumnInfo("customer_id", "integer", "unit"),
        "email_hash": ColumnInfo("email_hash", "string", "join_key"),
        "region": ColumnInfo("region", "string", "dimension", domain=REGIONS),
    }
    purchases = {
        "buyer_id": ColumnInfo("buyer_id", "integer", "unit"),
        "email_hash": ColumnInfo("email_hash", "string", "join_key"),
        "amount": ColumnInfo("amount", "float", "measure", lower=Decimal(0), upper=Decimal(1000)),
    }
    return {
        "bank.customers": DatasetInfo(
            "bank.customers",
            customers,
            {Use.JOIN_KEY: frozenset({"email_hash"}), Use.DIMENSION: frozenset({"region"})},
            every,
        ),
        "shop.purchases": DatasetInfo(
            "shop.purchases",
            purchases,
            {Use.JOIN_KEY: frozenset({"email_hash"}), Use.MEASURE: frozenset({"amount"})},
            every,
        ),
    }


def _email_hash(index: pl.Expr) -> pl.Expr:
    # About 30 characters, like a hashed address; distinct for distinct indexes.
    return pl.format("{}{}", index.hash(7).cast(pl.String), index.cast(pl.String)).str.pad_start(
        32, "0"
    )


def write_data(folder: Path, rows: int) -> tuple[Path, Path]:
    """Customers 0..rows-1 and purchases by customers rows/2..3·rows/2-1: half of each match."""
    index = pl.int_range(0, rows, dtype=pl.Int64)
    customers = pl.select(customer_id=index).with_columns(
        email_hash=_email_hash(pl.col("customer_id")),
        region=pl.format(
            "region-{}", (pl.col("customer_id").hash(1) % len(REGIONS)).cast(pl.String).str.zfill(2)
        ),
    )
    purchases = pl.select(buyer_id=index).with_columns(
        email_hash=_email_hash(pl.col("buyer_id") + rows // 2),
        amount=(pl.col("buyer_id").hash(2) % 120_000).cast(pl.Float64) / 100,  # some over 1000
    )
    paths = folder / f"customers-{rows}.parquet", folder / f"purchases-{rows}.parquet"
    customers.write_parquet(paths[0])
    purchases.write_parquet(paths[1])
    for path in paths:
        with path.open("rb") as plain_file, _sealed(path).open("wb") as sealed:
            encrypt_stream(plain_file, sealed, DATA_KEY)
    return paths


def _sealed(path: Path) -> Path:
    return path.with_suffix(".parquet.enc")


def plain(paths: tuple[Path, Path]) -> pl.DataFrame:
    customers, purchases = (pl.scan_parquet(path) for path in paths)
    return (
        customers.join(purchases, on="email_hash")
        .group_by("region")
        .agg(
            pl.len().alias("customers"),
            pl.col("amount").sum().alias("total"),
            pl.col("amount").mean().alias("mean"),
        )
        .collect()
    )


def data_plane(paths: tuple[Path, Path]):
    catalog = _catalog()
    parsed = parse_query(SQL, catalog)
    columns = {
        (name, col): info for name, ds in catalog.items() for col, info in ds.columns.items()
    }
    released = measurements(parsed, columns, epsilon=Decimal(1), rows_per_unit=1)
    frames = {
        name: read_dataset(str(_sealed(path)), DATA_KEY)
        for name, path in zip(catalog, paths, strict=True)
    }
    return release_aggregates(
        frames, parsed, columns, UNITS, released, rows_per_unit=1, min_group_size=10
    )


def _best(paths: tuple[Path, Path]) -> tuple[float, float]:
    """The best of a few runs of each, alternating, so that a busy moment hits both alike."""
    best = {data_plane: float("inf"), plain: float("inf")}
    for _ in range(RUNS):
        for function in best:
            gc.collect()
            start = time.perf_counter()
            function(paths)
            best[function] = min(best[function], time.perf_counter() - start)
    return best[data_plane], best[plain]


def _label(rows: int) -> str:
    return f"1e{len(str(rows)) - 1}"


def peak_memory(function: str, paths: tuple[Path, Path]) -> float:
    """`function` of this module run once on `paths` in a fresh interpreter: its peak RSS, MB.

    The child reads its high-water mark from /proc (VmHWM): Linux carries a parent's
    `ru_maxrss` over into a forked and exec'd child, so `resource.getrusage` there would report
    this process's peak instead."""
    root = Path(__file__).resolve().parents[2]
    code = (
        f"import sys, re; sys.path.insert(0, {str(root)!r}); "
        f"from tests.benchmarks import bench_tee as b; "
        f"b.{function}(tuple(map(b.Path, {[str(p) for p in paths]!r}))); "
        "print(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read())[1])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    return int(done.stdout.split()[-1]) / 1024


E2E_ROWS = 10**6
# Pairs of jobs end to end, one without and one with the organisations' own key services: the
# machine's load moves a single run by seconds, the pairs' median difference much less. Each
# job charges ε 1 of its datasets' 3.
E2E_JOBS = 3


def end_to_end(rows: int = E2E_ROWS) -> None:
    """Run in a child process whose environment points at a state folder of its own: the same
    people in two sets of organisations, the one with their own key services, the other with
    the embedded one; each set's join run E2E_JOBS times, alternately."""
    import django

    django.setup()
    from django.core.management import call_command
    from django.test.utils import setup_test_environment

    from jobs.demo.key_services import owner_key_services
    from tests import factories
    from tests.benchmarks.support import key_services_named, report_paired
    from tests.factories import World

    setup_test_environment()  # the API client's host name
    call_command("migrate", verbosity=0)
    served = World.build()
    alone = _embedded_world(served)
    # The owners register their passkeys first: each key service pins them as it starts.
    factories.register_passkey(served.alice, served.charite)
    factories.register_passkey(served.carol, served.zurich)
    folder = Path(os.environ["CLEANROOM_VAR_DIR"])
    label = _label(rows)
    with owner_key_services([served.charite, served.zurich, served.pharma]) as urls:
        # Without the key services, then with them: each world and what names its services.
        sets = [(alone, {}), (served, urls)]
        rooms, runs = [], ([], [])
        for world, named in sets:
            start = time.perf_counter()
            with key_services_named(named):
                rooms.append(world.study(folder, slug=world.charite.slug, rows=rows))
            suffix = " with key services" if named else ""
            print(
                f"tee e2e setup {label}{suffix}: {time.perf_counter() - start:.1f} s (two uploads)"
            )
        for number in range(E2E_JOBS):
            for index in (0, 1) if number % 2 == 0 else (1, 0):
                world, named = sets[index]
                with key_services_named(named):
                    runs[index].append(_one_job(world, rooms[index]))
    report_paired("tee e2e", label, *runs, steps=["key release", "result read"])


def _embedded_world(world):
    """The same people in organisations of their own, which run no key service."""
    from tests.factories import organization

    return dataclasses.replace(
        world,
        charite=organization("charite_embedded", "Charité (embedded keys)", alice="owner"),
        zurich=organization("usz_embedded", "USZ (embedded keys)", "CH", carol="owner"),
        pharma=organization("pharma_embedded", "Pharma (embedded keys)", "US", bob="analyst"),
    )


def _one_job(world, room) -> dict[str, float]:
    """The world's join run in the enclave by a site worker started for it (its start-up is not
    timed), until its result is read through the API: the seconds from `run_query` to the
    visible result, the worker's part of them, and the steps the key services take part in."""
    from cleanroom.celery import app
    from jobs.demo.workers import start_worker
    from jobs.execution.lifecycle import run_query
    from jobs.models import Job, Query
    from parties.models import Site
    from tests import factories
    from tests.benchmarks.support import job_events
    from tests.factories import JOIN_SQL, api, propose

    sql = JOIN_SQL.replace("charite.", f"{world.charite.slug}.").replace(
        "usz.", f"{world.zurich.slug}."
    )
    query = propose(room, world.bob, world.pharma, sql=sql, epsilon=Decimal("1"))
    for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
        factories.decide(query=query, organization=org, by=owner, approve=True)
    query = Query.objects.get(pk=query.pk)
    site = Site.objects.get(name=query.plan["steps"][0]["site"])
    worker = start_worker(site)
    try:
        deadline = time.monotonic() + 120
        while not app.control.ping(destination=[f"{site.name}@{socket.gethostname()}"]):
            assert time.monotonic() < deadline, "the site worker did not start"
        start = time.perf_counter()
        job = run_query(query=query, by=world.bob)
        while not Job.objects.get(pk=job.pk).finished:
            time.sleep(0.02)
        job.refresh_from_db()
        reading = time.perf_counter()
        response = api(world.bob).get(f"/api/rooms/{room.slug}/jobs/{job.pk}/result/")
        seconds, read = time.perf_counter() - start, time.perf_counter() - reading
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert job.state == Job.State.SUCCEEDED, job.error
    assert response.status_code == 200 and response.json()["table"]["rows"]
    times = {}
    for type, at, _ in job_events(job.pk):
        times.setdefault(type, []).append(at)
    return {
        "run to visible result": seconds,
        "worker part": (job.finished_at - job.started_at).total_seconds(),
        # From the host's verdict on the document to the last key relayed: the charge and each
        # owner's release decision.
        "key release": (
            times["key.released"][-1] - times["attestation.verified"][0]
        ).total_seconds(),
        "result read": read,
    }


def _end_to_end_in_child(folder: Path) -> None:
    from django.db import connection

    env = {**os.environ, "CLEANROOM_VAR_DIR": str(folder), "CLEANROOM_BOOTSTRAP": "0"}
    env.pop("DATABASE_URL", None)
    database = None
    if connection.vendor == "postgresql":
        database = f"bench_tee_e2e_{os.getpid()}"
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{database}"')
        settings = connection.settings_dict
        env["DATABASE_URL"] = (
            f"postgres://{settings['USER']}@{settings['HOST']}:{settings['PORT']}/{database}"
        )
    env["DJANGO_SETTINGS_MODULE"] = "cleanroom.settings"
    root = Path(__file__).resolve().parents[2]
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                "from tests.benchmarks import bench_tee; bench_tee.end_to_end()",
            ],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        if database:
            with connection.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    print(done.stdout, end="", flush=True)
    if done.returncode:
        print(done.stderr[-3000:], file=sys.stderr)


def run() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-tee-e2e-") as tmp:
        _end_to_end_in_child(Path(tmp))
    with tempfile.TemporaryDirectory(prefix="bench-tee-") as tmp:
        for rows in SIZES:
            paths = write_data(Path(tmp), rows)
            size = sum(pl.read_parquet(path).estimated_size() for path in paths) / 2**20
            gc.collect()
            dp_time, plain_time = _best(paths)
            label = _label(rows)
            print(f"tee data-plane {label}: {dp_time:.2f} s")
            print(f"tee plain polars {label}: {plain_time:.2f} s")
            print(f"tee data-plane ratio {label}: {dp_time / plain_time:.2f} x")
            print(f"tee data size {label}: {size:.0f} MB")
            if rows == SIZES[-1]:
                print(f"tee peak memory {label}: {peak_memory('data_plane', paths):.0f} MB")
                print(f"tee plain polars peak memory {label}: {peak_memory('plain', paths):.0f} MB")
    whole = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux
    print(f"tee benchmark process peak memory: {whole:.0f} MB")


if __name__ == "__main__":
    run()

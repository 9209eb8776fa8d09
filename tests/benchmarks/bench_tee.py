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
after commit to the site's queue, a real Celery worker process at the enclave site, attestation,
key release, the enclave process, release, and the receiver reading the decrypted result through
the API. The job's end is noticed by polling its row every 20 ms. Then again with every
organisation's own key service running as its own process (SoftHSM2 tokens, signed requests,
as the demo does): uploads wrap through the owners' services, each owner's service decides its
key release, and the receiver's opens the result; the difference is what the key services'
checks cost a job. Prints `name: value unit` lines.
"""

from __future__ import annotations

import gc
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
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
# Jobs per end-to-end run: the machine's load moves a single run by seconds, the best of a few
# much less. Each charges ε 1 of the study's 3.
E2E_JOBS = 3


def end_to_end(rows: int = E2E_ROWS) -> None:
    """Run in a child process whose environment points at a state folder of its own."""
    import django

    django.setup()
    from django.core.management import call_command
    from django.test.utils import setup_test_environment

    from jobs.owner_key_services import owner_key_services
    from tests import factories
    from tests.factories import World

    setup_test_environment()  # the API client's host name
    call_command("migrate", verbosity=0)
    with ExitStack() as running:
        world, suffix = World.build(), ""
        if os.environ.get("BENCH_KEY_SERVICES") == "1":
            # The owners register their passkeys first: each key service pins them as it starts.
            factories.register_passkey(world.alice, world.charite)
            factories.register_passkey(world.carol, world.zurich)
            organizations = [world.charite, world.zurich, world.pharma]
            running.enter_context(owner_key_services(organizations))
            suffix = " with key services"
        _run_end_to_end(world, rows, suffix)


def _run_end_to_end(world, rows: int, suffix: str) -> None:
    from cleanroom.celery import app
    from jobs.workers import start_worker
    from parties.models import Site

    folder = Path(os.environ["CLEANROOM_VAR_DIR"])
    label = _label(rows) + suffix
    start = time.perf_counter()
    room = world.study(folder, rows=rows)
    print(f"tee e2e setup {label}: {time.perf_counter() - start:.1f} s (two uploads)")
    site = Site.objects.get(name="eu-frankfurt-tee")
    worker = start_worker(site)
    try:
        # The clock starts once the worker answers: its start-up is not part of a run.
        deadline = time.monotonic() + 120
        while not app.control.ping(destination=[f"{site.name}@{socket.gethostname()}"]):
            assert time.monotonic() < deadline, "the site worker did not start"
        runs = [_one_job(world, room, site) for _ in range(E2E_JOBS)]
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    for name, seconds in (
        ("run to visible result", [run[0] for run in runs]),
        ("worker part", [run[1] for run in runs]),
    ):
        print(
            f"tee e2e {name} {label}: {min(seconds):.2f} s "
            f"(best of {len(seconds)}; median {statistics.median(seconds):.2f} s)"
        )


def _one_job(world, room, site) -> tuple[float, float]:
    """One approved join run at `site` until its result is read through the API: the seconds
    from `run_query` to the visible result, and the worker's part of them."""
    from jobs import runner
    from jobs.models import Job, Query
    from tests import factories
    from tests.factories import JOIN_SQL, api, propose

    query = propose(room, world.bob, world.pharma, sql=JOIN_SQL, epsilon=Decimal("1"))
    for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
        factories.decide(query=query, organization=org, by=owner, approve=True)
    query = Query.objects.get(pk=query.pk)
    assert query.plan["steps"][0]["site"] == site.name
    start = time.perf_counter()
    job = runner.run_query(query=query, by=world.bob)
    while not Job.objects.get(pk=job.pk).finished:
        time.sleep(0.02)
    job.refresh_from_db()
    response = api(world.bob).get(f"/api/rooms/{room.slug}/jobs/{job.pk}/result/")
    seconds = time.perf_counter() - start
    assert job.state == Job.State.SUCCEEDED, job.error
    assert response.status_code == 200 and response.json()["table"]["rows"]
    return seconds, (job.finished_at - job.started_at).total_seconds()


def _end_to_end_in_child(folder: Path, *, key_services: bool = False) -> float | None:
    """Run the end-to-end jobs in a child; returns their best time to the visible result."""
    from django.db import connection

    env = {**os.environ, "CLEANROOM_VAR_DIR": str(folder), "CLEANROOM_BOOTSTRAP": "0"}
    env["BENCH_KEY_SERVICES"] = "1" if key_services else "0"
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
    best = re.search(r"^tee e2e run to visible result [^:]*: ([0-9.]+) s", done.stdout, re.M)
    return float(best[1]) if best else None


def run() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-tee-e2e-") as tmp:
        alone = _end_to_end_in_child(Path(tmp))
    with tempfile.TemporaryDirectory(prefix="bench-tee-e2e-keys-") as tmp:
        with_services = _end_to_end_in_child(Path(tmp), key_services=True)
    if alone is not None and with_services is not None:
        added = with_services - alone
        print(f"tee e2e added by the key services {_label(E2E_ROWS)}: {added:.2f} s per job")
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

"""The sites under load and under faults, across the multi-host test bed (tests/bed/): each TEE
host's worker in its jurisdiction's namespace (eu, ch, uk), as a site process with no database
(CLEANROOM_ROLE=site) reporting over the signed site API, which this process serves as the
control plane; RabbitMQ in a virtual host of the bed's own; the owners' key services as
processes of their own; the outbox and the lease sweep run by a thread of this process, as beat
runs them. A scratch PostgreSQL database of its own. Needs root (namespaces) and nftables.

Load: JOBS TEE jobs from ROOMS rooms (each a pair of hospitals whose first dataset's home picks
the TEE site: Frankfurt, Zurich or London), all submitted at once. Prints the throughput, the
p50 and p95 time from submission to result, and whether every ledger is consistent: every job
ended; a succeeded job charged exactly once on each dataset it read; a failed or cancelled one
refunded, unless it was charged when its keys left (then spent once); no reservation left open;
each dataset's balance equal to what its jobs spent. It fails loudly if not.

Faults, each mid-job (the job held by its worker at a progress point until the fault is on),
each printing what it cost: the seconds from the fault's end to the job's end, how the job
ended, after how many attempts, and its charge; and whether the ledgers stayed consistent:

  link         the TEE host's link (its veth) down for OUTAGE seconds, then up again: while
               the job works quietly (its lease renewals fail meanwhile), and while it asks the
               control plane something, before its keys are released and after;
  rabbitmq     RabbitMQ stopped (`rabbitmqctl stop_app`) while a job runs and three more are
               submitted, then started: those wait in the outbox and are dispatched once it is
               back (disturbs every user of this machine's RabbitMQ);
  api          the site API stopped and started again, as `link`; and while a job is
               dispatched, its worker claiming it during the outage;
  kill         the TEE host's worker SIGKILLed and restarted by its supervisor, before the
               job's keys were released and after.

CLEANROOM_BENCH_SITES_FAULTS (comma-separated, default all) chooses the faults. Leases are
short for the bench (LEASE_SECONDS, swept every SWEEP_SECONDS), so a job whose site stopped is
sent again or ended within seconds.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import polars as pl
from django.conf import settings
from django.contrib.auth.models import User
from django.test.utils import override_settings

from jobs.budget.ledger import balance
from jobs.demo.key_services import owner_key_services
from jobs.execution.lifecycle import run_query
from jobs.models import BudgetEntry, Job, Query, Result, Room
from parties import services
from parties.models import Dataset, Organization
from parties.site_certificates import ensure_site_certificates
from tests import factories
from tests.bed.control_plane import TeeWorkers, beat, publishing_to
from tests.bed.sites import Bed, site_bed
from tests.benchmarks.support import report, scratch_database, timed
from tests.factories import JOIN_SQL
from tests.jobs.site_api_worker import SiteApiServer
from tests.jobs.site_processes import kill_and_reap, rabbitmqctl

JOBS, ROOMS = 50, 5
EPSILON = Decimal("0.1")
LEASE_SECONDS, SWEEP_SECONDS = 10.0, 1.0
TEE_SITES = {"eu": "eu-frankfurt-tee", "ch": "ch-zurich-tee", "uk": "uk-london-tee"}
# Each room's two hospitals, the first one's home picking the TEE site.
PAIRS = [("eu", "ch"), ("ch", "eu"), ("uk", "eu"), ("eu", "uk"), ("ch", "uk")]
FAULTS = ("link", "rabbitmq", "api", "kill")
ENDED = (Job.State.SUCCEEDED, Job.State.FAILED, Job.State.CANCELLED)
# Progress points of a TEE job (jobs/engines/tee/engine.py): attested, before any key is
# released; and the keys released, the job charged.
ATTESTED, CHARGED = 25, 40


class LedgerInconsistent(AssertionError):
    pass


@dataclass
class Hospitals:
    organizations: dict[str, Organization]  # by jurisdiction
    owners: dict[str, User]
    pharma: Organization
    bob: User


def _hospitals() -> Hospitals:
    owners = {"eu": "alice", "ch": "carol", "uk": "ursula"}
    organizations = {
        code: factories.organization(
            f"hospital_{code}", f"Hospital {code.upper()}", code.upper(), **{owners[code]: "owner"}
        )
        for code in owners
    }
    pharma = factories.organization("pharma", "Pharma Research", "US", bob="analyst")
    people = {code: User.objects.get(username=name) for code, name in owners.items()}
    for code, org in organizations.items():
        factories.register_passkey(people[code], org)
    return Hospitals(organizations, people, pharma, User.objects.get(username="bob"))


def _room(world: Hospitals, number: int, pair: tuple[str, str], folder: Path) -> tuple[Room, str]:
    """A room of pharma's with a dataset of each hospital of `pair` of its own; and the join
    query's SQL over them."""
    from jobs.rooms.services import (
        contribute_dataset,
        create_room,
        invite_organization,
        respond_to_invitation,
    )

    room = create_room(
        organization=world.pharma,
        slug=f"study{number}",
        name=f"Study {number}",
        purpose="Research",
        by=world.bob,
    )
    names = []
    for seed, code in enumerate(pair, start=1):
        org, owner = world.organizations[code], world.owners[code]
        if not room.memberships.filter(organization=org).exists():
            membership = invite_organization(
                room=room, organization=org, acting_for=world.pharma, by=world.bob
            )
            respond_to_invitation(membership=membership, accept=True, by=owner)
        slug = f"patients{number}"
        path = factories.patients_csv(folder / f"{org.slug}-{slug}.csv", seed=number * 10 + seed)
        version = factories.dataset(org, owner, path, slug=slug, jurisdiction=code.upper())
        services.update_policy(
            dataset=version.dataset,
            by=owner,
            allowed_join_keys=["person_hash"],
            allowed_dimensions=["age_band", "sex", "diagnosis"],
            allowed_measures=["length_of_stay", "cost"],
            allowed_filters=["age_band", "sex", "diagnosis"],
            allowed_aggregates=["count", "sum", "avg"],
            allowed_mechanisms=["tee"],
            allowed_receivers=[world.pharma, org],
            max_epsilon_per_query=Decimal("1"),
            total_epsilon=Decimal("3"),
        )
        contribute_dataset(room=room, dataset=version.dataset, by=owner)
        names.append(f"{org.slug}.{slug}")
    return room, JOIN_SQL.replace("charite.patients", names[0]).replace("usz.patients", names[1])


def _approved(world: Hospitals, room: Room, sql: str, pair: tuple[str, str]) -> Query:
    query = factories.propose(room, world.bob, world.pharma, sql=sql, epsilon=EPSILON)
    for code in dict.fromkeys(pair):
        factories.decide(query=query, organization=world.organizations[code], by=world.owners[code])
    return Query.objects.get(pk=query.pk)


def _wait(condition: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(every)


def _ended(jobs: list[int]) -> bool:
    return Job.objects.filter(pk__in=jobs, state__in=ENDED).count() == len(jobs)


# --- The ledger ---------------------------------------------------------------------------------


def ledger_problems(jobs: list[int]) -> list[str]:
    """What is wrong with the jobs' ledgers (nothing, if consistent): each job ended; each
    dataset it read reserved once, if it started; a succeeded job, or one charged when its keys
    left, spent once on each and refunded nothing; any other refunded once on each and spent
    nothing; one result for a succeeded job, none otherwise."""
    problems = []
    for job in Job.objects.filter(pk__in=jobs).select_related("query"):
        if job.state not in ENDED:
            problems.append(f"job {job.pk} did not end ({job.state})")
            continue
        entries = Counter(
            BudgetEntry.objects.filter(query=job.query).values_list("dataset_id", "kind")
        )
        datasets = set(job.query.dataset_ids)
        reserved = {d for (d, kind) in entries if kind == BudgetEntry.Kind.RESERVE}
        if reserved and reserved != datasets:
            problems.append(f"job {job.pk} reserved on {sorted(reserved)}, read {datasets}")
        charged = job.state == Job.State.SUCCEEDED or job.charged_at is not None
        settled, other = (
            (BudgetEntry.Kind.SPEND, BudgetEntry.Kind.REFUND)
            if charged
            else (BudgetEntry.Kind.REFUND, BudgetEntry.Kind.SPEND)
        )
        if job.state == Job.State.SUCCEEDED and job.charged_at is None:
            problems.append(f"job {job.pk} succeeded uncharged")
        for dataset in reserved:
            if entries[(dataset, BudgetEntry.Kind.RESERVE)] != 1:
                problems.append(f"job {job.pk} reserved dataset {dataset} more than once")
            if entries[(dataset, settled)] != 1 or entries[(dataset, other)]:
                problems.append(
                    f"job {job.pk} ({job.state}, charged: {charged}) on dataset {dataset}: "
                    f"{entries[(dataset, BudgetEntry.Kind.SPEND)]} spends, "
                    f"{entries[(dataset, BudgetEntry.Kind.REFUND)]} refunds"
                )
        results = Result.objects.filter(job=job).count()
        if results != (1 if job.state == Job.State.SUCCEEDED else 0):
            problems.append(f"job {job.pk} ({job.state}) has {results} results")
    for dataset in Dataset.objects.all():
        spent = sum(
            BudgetEntry.objects.filter(dataset=dataset, kind=BudgetEntry.Kind.SPEND).values_list(
                "epsilon", flat=True
            ),
            Decimal(0),
        )
        if balance(dataset).used_epsilon != spent:
            problems.append(
                f"dataset {dataset.pk} uses ε {balance(dataset).used_epsilon}, spent {spent}: "
                "a reservation is left open"
            )
    return problems


def check_ledgers(label: str, jobs: list[int]) -> None:
    problems = ledger_problems(jobs)
    print(f"sites {label} ledger consistent: {0 if problems else 1} bool", flush=True)
    if problems:
        raise LedgerInconsistent(f"{label}: " + "; ".join(problems))


def _charge(job: Job) -> str:
    kinds = Counter(BudgetEntry.objects.filter(query=job.query).values_list("kind", flat=True))
    if kinds[BudgetEntry.Kind.SPEND]:
        return f"charged ({kinds[BudgetEntry.Kind.SPEND]} spends)"
    if kinds[BudgetEntry.Kind.REFUND]:
        return f"refunded ({kinds[BudgetEntry.Kind.REFUND]} refunds)"
    return "nothing reserved" if not kinds else "reservation open"


# --- The run ------------------------------------------------------------------------------------


@dataclass
class Stage:
    """What the run has set up: the bed, the people and rooms, the site API and the workers."""

    bed: Bed
    world: Hospitals
    rooms: list[tuple[Room, str, tuple[str, str]]]
    server: SiteApiServer
    workers: TeeWorkers
    hold: Path
    plain: float  # seconds of the plain computation of one job's query on the same files

    def submit(self, room: int) -> int:
        built, sql, pair = self.rooms[room]
        return run_query(query=_approved(self.world, built, sql, pair), by=self.world.bob).pk

    def held(self, job: int, timeout: float = 60) -> int:
        """Wait until the job's worker holds it; its pid."""
        mark = self.hold / f"held-{job}"
        _wait(lambda: mark.exists() or _ended([job]), timeout, f"job {job} held")
        if not mark.exists():
            ended = Job.objects.get(pk=job)
            raise RuntimeError(f"job {job} {ended.state} before it was held: {ended.error}")
        _wait(lambda: mark.read_text() != "", 5, f"job {job}'s holder")
        return int(mark.read_text())

    def go(self, job: int) -> None:
        (self.hold / f"go-{job}").write_text("")


def run() -> None:
    if os.geteuid() != 0:
        print("sites: skipped (the bed's namespaces need root)", flush=True)
        return
    if not shutil.which("nft"):
        raise SystemExit("sites: nft is missing (apt-get install -y nftables)")
    chosen = os.environ.get("CLEANROOM_BENCH_SITES_FAULTS", ",".join(FAULTS))
    faults = [fault for fault in chosen.split(",") if fault]
    with (
        scratch_database("sites") as workdir,
        override_settings(
            VAR_DIR=workdir / "control",
            KEY_SERVICE_CALLER_KEY=workdir / "control" / "web.key",
            KEY_SERVICE_CALLER_KEYS=workdir / "callers",
            TEE_SIMULATED_ROOT_DIR=workdir / "tee",
            JOB_LEASE_SECONDS=LEASE_SECONDS,
            JOB_LEASE_SWEEP_SECONDS=SWEEP_SECONDS,
            PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        ),
        site_bed(mpc_port_base=settings.MPC_PORT_BASE) as bed,
    ):
        credentials = workdir / "site-api"
        ensure_site_certificates(credentials, list(TEE_SITES.values()), [bed.control])
        with override_settings(
            SITE_API_CA=credentials / "ca.crt", ALLOWED_HOSTS=[*settings.ALLOWED_HOSTS, bed.control]
        ):
            world = _hospitals()
            organizations = [*world.organizations.values(), world.pharma]
            with publishing_to(bed), owner_key_services(organizations) as urls:
                ports = [urlsplit(url).port or 80 for url in urls.values()]
                named = {s: f"http://{bed.control}:{urlsplit(u).port}" for s, u in urls.items()}
                with (
                    bed.open_to_control(list(TEE_SITES), ports),
                    override_settings(KEY_SERVICES=named),
                ):
                    _stage(bed, world, workdir, credentials, faults)


def _stage(bed: Bed, world: Hospitals, workdir: Path, credentials: Path, faults: list[str]):
    data = workdir / "data"
    data.mkdir()
    rooms = []
    for number, pair in enumerate(PAIRS, start=1):
        room, sql = _room(world, number, pair, data)
        rooms.append((room, sql, pair))
    hold = workdir / "hold"
    hold.mkdir()
    server = SiteApiServer(bed.api_port)
    server.start()
    workers = TeeWorkers(bed, credentials, workdir / "workers", hold)
    (workdir / "workers").mkdir()
    try:
        for site in TEE_SITES.values():
            workers.start(site)
        for site in TEE_SITES.values():
            _wait(lambda s=site: " ready." in workers.log(s).read_text(), 120, f"{site} started")
        stage = Stage(bed, world, rooms, server, workers, hold, plain_seconds(data, world))
        with beat():
            try:
                load(stage)
                for fault in faults:
                    FAULT_RUNS[fault](stage)
            except Exception:
                for site in TEE_SITES.values():
                    print(f"--- {site}\n{workers.log(site).read_text()[-3000:]}", flush=True)
                raise
            finally:
                peaks = [_peak(s.process.pid) for s in workers.supervised.values()]
        report("sites worker peak memory", max(peaks) / 1024, "MB", 0)
    finally:
        workers.stop()
        server.stop()
    report("sites benchmark process peak memory", _own_peak() / 1024, "MB", 0)


def _peak(pid: int) -> int:
    """A process's peak resident memory, kB (0 once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return 0
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))


def _own_peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def plain_join(first: Path, second: Path) -> pl.DataFrame:
    """The rooms' query done plainly: join on the key, group by diagnosis, count and sum."""
    joined = pl.read_csv(first).join(pl.read_csv(second), on="person_hash", suffix="_v")
    return joined.group_by("diagnosis").agg(pl.len().alias("n"), pl.col("cost_v").sum())


def plain_seconds(data: Path, world: Hospitals) -> float:
    """The best of five plain runs of the first room's query on its own two files."""
    first, second = (data / f"{world.organizations[code].slug}-patients1.csv" for code in PAIRS[0])
    return min(timed(lambda: plain_join(first, second)) for _ in range(5))


def load(stage: Stage) -> None:
    """JOBS jobs from ROOMS rooms, approved beforehand, submitted at once."""
    queries = [
        _approved(stage.world, *stage.rooms[i % ROOMS][:2], stage.rooms[i % ROOMS][2])
        for i in range(JOBS)
    ]
    start = time.monotonic()
    jobs = [run_query(query=query, by=stage.world.bob).pk for query in queries]
    submitted = time.monotonic() - start
    _wait(lambda: _ended(jobs), 900, f"{JOBS} jobs ended", every=0.2)
    ended = list(Job.objects.filter(pk__in=jobs).select_related("site"))
    first = min(job.created_at for job in ended)
    last = max(job.finished_at for job in ended if job.finished_at)
    to_result = sorted((job.finished_at - job.created_at).total_seconds() for job in ended)
    working = [
        (job.finished_at - job.started_at).total_seconds() for job in ended if job.started_at
    ]
    states = Counter(job.state for job in ended)
    per_site = Counter(job.site.name for job in ended if job.site)
    report("sites load jobs", len(ended), "jobs", 0)
    report("sites load submission", submitted, "s")
    report("sites load throughput", len(ended) / (last - first).total_seconds() * 60, "jobs/min")
    report("sites load time to result p50", statistics.median(to_result), "s", 2)
    report("sites load time to result p95", to_result[int(0.95 * (len(to_result) - 1))], "s", 2)
    report("sites load worker part mean", statistics.mean(working), "s per job", 2)
    report("sites load plain computation", stage.plain * 1000, "ms per job", 2)
    report(
        "sites load time to result p50 ratio",
        statistics.median(to_result) / stage.plain,
        "x plain",
        0,
    )
    report("sites load worker part ratio", statistics.mean(working) / stage.plain, "x plain", 0)
    report("sites load succeeded", states[Job.State.SUCCEEDED], "jobs", 0)
    print(
        "sites load per site: " + ", ".join(f"{s} {n}" for s, n in sorted(per_site.items())),
        flush=True,
    )
    check_ledgers("load", jobs)


# --- Faults ---------------------------------------------------------------------------------------


def _outcome(name: str, jobs: list[int], since: float, unit: str = "s") -> None:
    """Print how the fault's jobs ended, and the seconds from `since` to the last's end."""
    _wait(lambda: _ended(jobs), 120, f"{name}: jobs {jobs} ended", every=0.05)
    recovered = time.monotonic() - since
    for job in Job.objects.filter(pk__in=jobs).select_related("query").order_by("pk"):
        print(
            f"sites fault {name}: job {job.pk} {job.state} after {job.attempt} attempt(s), "
            f"{_charge(job)}" + (f" ({job.error[:160]})" if job.error else ""),
            flush=True,
        )
    report(f"sites fault {name} recovery", recovered, unit, 2)
    check_ledgers(f"fault {name}", jobs)


def _held(stage: Stage, room: int, point: int) -> tuple[int, int]:
    """A job submitted and held by its worker at `point`; the job and the worker's pid."""
    (stage.hold / "hold").write_text(str(point))
    job = stage.submit(room)
    pid = stage.held(job)
    (stage.hold / "hold").unlink()
    return job, pid


def _site_of(stage: Stage, room: int) -> str:
    return stage.rooms[room][2][0]


def _outage(stage: Stage, name: str, off: Callable[[], None], on: Callable[[], None]) -> None:
    """A job held at a point, the fault on for OUTAGE seconds: while the job works quietly (it
    asks the control plane nothing meanwhile, its lease renewals fail); while it asks, before
    its keys are released and after."""
    for point, asks, label in (
        (ATTESTED, False, "while the job is quiet"),
        (ATTESTED, True, "while the job asks, before key release"),
        (CHARGED, True, "while the job asks, after key release"),
    ):
        job, _ = _held(stage, 0, point)
        off()
        try:
            if asks:
                stage.go(job)
            time.sleep(OUTAGE)
        finally:
            on()
        stage.go(job)
        _outcome(f"{name} {OUTAGE:g} s {label}", [job], time.monotonic())


def fault_link(stage: Stage) -> None:
    """The TEE host's link (its veth) down, then up again."""
    host = _site_of(stage, 0)
    _outage(
        stage,
        "link down",
        lambda: stage.bed.link(host, up=False),
        lambda: stage.bed.link(host, up=True),
    )


def fault_rabbitmq(stage: Stage) -> None:
    """RabbitMQ stopped while a job runs (held, then let go) and three more are submitted, then
    started OUTAGE seconds later: they are dispatched from the outbox once it is back."""
    job, _ = _held(stage, 0, ATTESTED)
    rabbitmqctl("stop_app")
    try:
        queued = [stage.submit(room) for room in (0, 1, 2)]
        stage.go(job)
        time.sleep(OUTAGE)
    finally:
        rabbitmqctl("start_app")
    back = time.monotonic()
    undispatched = Job.objects.filter(pk__in=queued, dispatched_at__isnull=True).count()
    print(f"sites fault rabbitmq: {undispatched} of {len(queued)} jobs waited in the outbox")
    _outcome(f"rabbitmq down {OUTAGE:g} s", [job, *queued], back)


def fault_api(stage: Stage) -> None:
    """The site API stopped and started again: while a job runs, and while one is
    dispatched (its worker claims it during the outage)."""
    _outage(stage, "api down", stage.server.stop, stage.server.start)
    stage.server.stop()
    try:
        job = stage.submit(0)
        _wait(
            lambda: Job.objects.filter(pk=job, dispatched_at__isnull=False).exists(),
            30,
            "dispatched",
        )
        time.sleep(OUTAGE)
    finally:
        stage.server.start()
    _outcome(f"api down {OUTAGE:g} s as a job is dispatched", [job], time.monotonic())


def fault_kill(stage: Stage) -> None:
    """The TEE host's worker SIGKILLed and restarted by its supervisor: holding a job before its
    keys were released (sent again by the sweep), then after (charged: failed, spent once)."""
    for point, label in ((ATTESTED, "before key release"), (CHARGED, "after key release")):
        job, pid = _held(stage, 0, point)
        killed = time.monotonic()
        kill_and_reap(pid)
        _outcome(f"worker killed {label}", [job], killed)


OUTAGE = 3.0
FAULT_RUNS: dict[str, Callable[[Stage], None]] = {
    "link": fault_link,
    "rabbitmq": fault_rabbitmq,
    "api": fault_api,
    "kill": fault_kill,
}

"""Real site processes for the fault tests: a site's Celery worker as a process of its own, on
the embedded broker (kombu's filesystem transport) or on RabbitMQ, run under the demo's
supervisor (restarted when it dies); held at a chosen point of a job, where it tells the test
its pid and its children's; and waiting for processes to end without sleeping (pidfds)."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import kombu.pools
import pytest
from django.conf import settings
from django.db import connection

from cleanroom.celery import app as project_app
from jobs.demo.workers import Supervised, stop_all

BROKERS = ["filesystem", "amqp"]
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672"


# --- Processes ---------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """The processes `pid` started (any of its threads)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def handles(pids: list[int]) -> dict[int, int]:
    """A pidfd per process, taken while it lives, so a later wait cannot mistake another
    process that reuses its pid for it."""
    return {pid: os.pidfd_open(pid) for pid in pids}


def wait_gone(pidfds: dict[int, int], timeout: float) -> list[int]:
    """Wait up to `timeout` seconds for every process to end (a pidfd turns readable when its
    process exits); returns those still running, and closes the handles."""
    deadline = time.monotonic() + timeout
    waiting = dict(pidfds)
    try:
        while waiting and (left := deadline - time.monotonic()) > 0:
            ended, _, _ = select.select(list(waiting.values()), [], [], left)
            waiting = {pid: fd for pid, fd in waiting.items() if fd not in ended}
        return sorted(waiting)
    finally:
        for fd in pidfds.values():
            os.close(fd)


def kill_and_reap(pid: int, timeout: float = 10) -> None:
    """SIGKILL `pid` and block until it is gone."""
    try:
        handle = handles([pid])
    except ProcessLookupError:
        return
    os.kill(pid, signal.SIGKILL)
    assert not wait_gone(handle, timeout), f"process {pid} outlived SIGKILL"


# --- Brokers ----------------------------------------------------------------------------------


def use_broker(url: str, options: dict) -> None:
    """Point this process's Celery app at another broker (dropping its cached pools)."""
    project_app.conf.broker_url = url
    project_app.conf.broker_transport_options = options
    kombu.pools.reset()
    project_app._pool = None
    project_app.amqp._producer_pool = None


def filesystem_options(var_dir: Path) -> dict:
    """The transport options cleanroom/settings.py gives the embedded broker under `var_dir`."""
    folders = {name: var_dir / "broker" / name for name in ("queue", "control")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(folders["queue"]),
        "data_folder_out": str(folders["queue"]),
        "control_folder": str(folders["control"]),
        "store_processed": False,
    }


def rabbitmqctl(*arguments: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *arguments], check=True, capture_output=True)


@contextlib.contextmanager
def rabbitmq_vhost(name: str) -> Iterator[str]:
    """A virtual host of the test's own on the machine's RabbitMQ: concurrent runs never share
    a queue, and nothing is left from an earlier test."""
    try:
        rabbitmqctl("add_vhost", name)
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"the RabbitMQ fault tests need rabbitmqctl and RabbitMQ at 5672: {exc}")
    try:
        yield f"{RABBITMQ}/{name}"
    finally:
        rabbitmqctl("delete_vhost", name)


@dataclass
class Broker:
    name: str
    url: str
    var_dir: Path  # the workers' CLEANROOM_VAR_DIR: the embedded broker's folders are there


@pytest.fixture(params=BROKERS)
def site_broker(request, tmp_path) -> Iterator[Broker]:
    """This test's broker, for this process and the site workers it starts: the embedded
    default (in a folder of its own) or RabbitMQ (in a virtual host of its own)."""
    var_dir = tmp_path / "var"
    previous = project_app.conf.broker_url, project_app.conf.broker_transport_options
    with contextlib.ExitStack() as stack:
        if request.param == "filesystem":
            url, options = "filesystem://localhost//", filesystem_options(var_dir)
        else:
            url = stack.enter_context(rabbitmq_vhost(f"cleanroom-test-{os.getpid()}"))
            options = {}
        use_broker(url, options)
        stack.callback(use_broker, *previous)
        yield Broker(request.param, url, var_dir)


# --- Site workers -----------------------------------------------------------------------------

# The project's worker, held at `point` (none: ""), telling the test on file descriptor `fd`.
WORKER = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cleanroom.settings")
import django
django.setup()
from tests.jobs.site_processes import hold_at
hold_at(sys.argv[1], int(sys.argv[2]))
from cleanroom.celery import app
app.worker_main(sys.argv[3:])
"""

# Where a worker can be held, and what it then reports: "<point>|<worker pid>|<child pids>".
PROGRESS_POINTS = {"attested": 25, "keys released": 40}


def hold_at(point: str, fd: int) -> None:
    """In the worker process: at `point` of a job, report to the test, then wait (to be
    killed), except at "party", where it reports its MPC party process and goes on."""
    import threading

    from jobs.engines.mpc import inputs, parties
    from jobs.execution import lifecycle

    def report(*pids: int) -> None:
        os.write(fd, f"{point}|{os.getpid()}|{' '.join(map(str, pids))}\n".encode())

    def wait_to_be_killed() -> None:
        report(*children(os.getpid()))
        threading.Event().wait()

    if point in PROGRESS_POINTS:
        progress = lifecycle.report_progress

        def held(job_id: int, percent: int, message: str) -> bool:
            if percent == PROGRESS_POINTS[point]:
                wait_to_be_killed()
            return progress(job_id, percent, message)

        lifecycle.report_progress = held
    elif point == "input":
        inputs.run_input = lambda *args, **kwargs: wait_to_be_killed()
    elif point == "party":
        start_party = parties.start_party

        def started(*args, **kwargs):
            running = start_party(*args, **kwargs)
            report(running.process.pid)
            return running

        parties.start_party = started


@dataclass
class SiteProcess:
    """A site's worker under the demo's supervisor, and what it reported."""

    supervised: Supervised
    reports: Reports
    log: Path

    def held(self, point: str, timeout: float = 120) -> tuple[int, list[int]]:
        """Wait until the worker reports `point`: its pid and its children's."""
        return self.reports.wait(point, timeout, self.log)


@dataclass
class Reports:
    """The lines the held workers write to a pipe of this process's."""

    read: int
    write: int
    pending: list[str] = field(default_factory=list)
    buffer: bytes = b""

    def wait(self, point: str, timeout: float, log: Path) -> tuple[int, list[int]]:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.pending:
                name, pid, pids = line.split("|")
                if name == point:
                    self.pending.remove(line)
                    return int(pid), [int(p) for p in pids.split()]
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.read], [], [], left)[0]:
                pytest.fail(f"no worker reached '{point}' in {timeout} s:\n{tail(log)}")
            self.buffer += os.read(self.read, 4096)
            *lines, self.buffer = self.buffer.split(b"\n")
            self.pending += [line.decode() for line in lines]


def tail(log: Path) -> str:
    return log.read_text()[-3000:] if log.exists() else "(no log)"


def worker_environment(site: str, broker: Broker) -> dict[str, str]:
    """A site worker's environment: this test's database, broker, storage and keys."""
    db = connection.settings_dict
    return {
        **os.environ,
        "CLEANROOM_BOOTSTRAP": "0",
        "CLEANROOM_SITE": site,
        "DATABASE_URL": (
            f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:"
            f"{db['PORT'] or 5432}/{db['NAME']}"
        ),
        "CELERY_BROKER_URL": broker.url,
        "CLEANROOM_VAR_DIR": str(broker.var_dir),
        "CLEANROOM_STORAGE_ROOT": str(settings.STORAGE_ROOT),
        "CLEANROOM_KEY_ROOT": str(settings.KEY_SERVICE_ROOT),
        "TEE_SIMULATED_ROOT_DIR": str(settings.TEE_SIMULATED_ROOT_DIR),
        "MPC_CREDENTIALS_DIR": str(settings.MPC_CREDENTIALS_DIR),
        "MPC_INBOX_DIR": str(settings.MPC_INBOX_DIR),
        # Checkpoint signing stays with this process; the worker only appends events.
        "CLEANROOM_AUDIT_SIGNING": "off",
    }


# Where a site's worker runs: a command prefix (`ip netns exec <host>`) and what its
# environment has of its own there (tests/bed); None takes a name out of it.
Placement = Callable[[str], tuple[list[str], dict[str, str | None]]]


def placed_environment(base: dict[str, str], changes: dict[str, str | None]) -> dict[str, str]:
    merged = {**base, **changes}
    return {name: value for name, value in merged.items() if value is not None}


class SiteProcesses:
    """Site workers started as processes of their own under the demo's supervisor; each start
    is held at the next of the points given (restarts past them run freely), and placed as
    `place` says (by default, here, with worker_environment). `said`: what the supervisors
    said."""

    def __init__(self, broker: Broker, folder: Path, place: Placement | None = None):
        self.broker = broker
        self.folder = folder
        self.place = place or (lambda site: ([], {}))
        self.read, self.write = os.pipe()
        self.reports = Reports(self.read, self.write)
        self.started: list[SiteProcess] = []
        self.said: list[str] = []

    def start(self, site: str, holds: tuple[str, ...] = ()) -> SiteProcess:
        points = list(holds)
        log = self.folder / f"{site}.log"

        launcher, environment = self.place(site)

        def one() -> subprocess.Popen:
            point = points.pop(0) if points else ""
            with log.open("a") as output:
                return subprocess.Popen(
                    [
                        *launcher,
                        sys.executable,
                        "-c",
                        WORKER,
                        point,
                        str(self.write),
                        "worker",
                        "-Q",
                        f"site.{site}",
                        "--pool",
                        "solo",
                        "--hostname",
                        # <site>@<host>, as a site's broker user requires (broker_users.py).
                        f"{site}@{os.getpid()}.%h",
                        "--without-mingle",
                        "--without-gossip",
                        "--without-heartbeat",
                        "--loglevel",
                        "INFO",
                    ],
                    cwd=settings.BASE_DIR,
                    env=placed_environment(worker_environment(site, self.broker), environment),
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    pass_fds=(self.write,),
                )

        process = SiteProcess(Supervised(site, one, self.said.append), self.reports, log)
        self.started.append(process)
        return process

    def stop(self) -> None:
        stop_all([process.supervised for process in self.started], timeout=5)
        os.close(self.read)
        os.close(self.write)


@pytest.fixture
def site_processes(site_broker, tmp_path) -> Iterator[SiteProcesses]:
    processes = SiteProcesses(site_broker, tmp_path)
    try:
        yield processes
    finally:
        processes.stop()

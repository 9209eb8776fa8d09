"""Local workers for the embedded default: one Celery worker process per site, each consuming
only its site's queue and knowing its own site (CLEANROOM_SITE): worker sites run the owners'
MPC input steps, MPC party sites their compute steps, TEE sites the enclave. Beside them one
control worker runs the scheduler (beat): the outbox, query expiry and the lease sweep. Each
runs under a supervisor that restarts it when it dies, as systemd does in production. Each MPC
party site also runs its share inbox (`manage.py mpc_inbox`), supervised the same way."""

from __future__ import annotations

import functools
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from django.conf import settings

from parties.models import Site

# Celery discourages running a worker as root (it accepts only JSON here, so it only warns).
# Where the demo runs as root, as in a container, it says so once itself (`runs_as_root`)
# rather than have each of its workers warn; production runs them as their own user
# (deploy/systemd).
ROOT_WARNING = "ignore:You're running the worker with superuser privileges"

# The pause before a restart: doubled each time a worker dies again within STEADY seconds of
# its start, so one that cannot start does not spin.
FIRST_PAUSE = 1.0
LONGEST_PAUSE = 30.0
STEADY = 60.0


def runs_as_root() -> bool:
    return os.geteuid() == 0


def _celery(queue: str, hostname: str, *extra: str, site: str = "") -> subprocess.Popen:
    env = {**os.environ, "CLEANROOM_BOOTSTRAP": "0"}
    if site:
        env["CLEANROOM_SITE"] = site
    if runs_as_root():
        env["PYTHONWARNINGS"] = ROOT_WARNING
    return subprocess.Popen(  # noqa: S603 - our own worker, fixed arguments
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "cleanroom",
            "--quiet",  # no banner per worker: the demo starts one per site
            "worker",
            "-Q",
            queue,
            "--pool",
            "solo",
            "--hostname",
            f"{hostname}@%h",
            # Each worker is a process of its own: no cluster chatter between them at start.
            "--without-mingle",
            "--without-gossip",
            "--loglevel",
            "WARNING",
            *extra,
        ],
        cwd=settings.BASE_DIR,
        env=env,
        # Celery prints its "Warm shutdown" to standard output, once a worker; its warnings and
        # errors go to standard error, which the demo's screen shows.
        stdout=subprocess.DEVNULL,
    )


def start_worker(site: Site) -> subprocess.Popen:
    return _celery(site.queue, site.name, site=site.name)


def start_share_inbox(site: Site, *, ready_within: float = 60) -> subprocess.Popen:
    """An MPC party site's share inbox (`manage.py mpc_inbox`), returned once it listens (or
    once `ready_within` seconds passed), so the owners' input steps find it."""
    env = {**os.environ, "CLEANROOM_BOOTSTRAP": "0", "CLEANROOM_SITE": site.name}
    process = subprocess.Popen(
        [sys.executable, "manage.py", "mpc_inbox"],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
    )
    assert process.stdout  # started with stdout=PIPE
    if select.select([process.stdout], [], [], ready_within)[0]:
        process.stdout.readline()  # "... listening on host:port", its only line
    process.stdout.close()
    return process


def start_control_worker() -> subprocess.Popen:
    """The control queue's worker, with the scheduler embedded: one process where production
    runs two (deploy/Procfile). Spelled `--beat`: MPyC, which the engines import, reads the
    command line when it is imported, and takes `-B` for its own base port."""
    schedule = settings.VAR_DIR / "beat-schedule"
    return _celery(
        settings.CELERY_TASK_DEFAULT_QUEUE, "control", "--beat", "--schedule", str(schedule)
    )


def how_it_ended(status: int) -> str:
    return f"killed by {signal.Signals(-status).name}" if status < 0 else f"exit status {status}"


class Supervised:
    """A worker process restarted whenever it dies, after a pause (FIRST_PAUSE, doubled up to
    LONGEST_PAUSE while it keeps dying young), saying so through `say`."""

    def __init__(
        self, name: str, start: Callable[[], subprocess.Popen], say: Callable[[str], None]
    ):
        self.name = name
        self._start = start
        self._say = say
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.process = start()
        self._thread = threading.Thread(target=self._watch, name=f"supervisor of {name}")
        self._thread.start()

    def _watch(self) -> None:
        pause = FIRST_PAUSE
        while True:
            started = time.monotonic()
            status = self.process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started > STEADY:
                pause = FIRST_PAUSE
            self._say(
                f"The worker of {self.name} stopped ({how_it_ended(status)}); "
                f"restarting it in {pause:g} s."
            )
            if self._stopping.wait(pause):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self.process = self._start()
            pause = min(2 * pause, LONGEST_PAUSE)

    def stop(self) -> None:
        """Ask the worker to stop (SIGTERM: Celery finishes its task first); `join` waits."""
        with self._lock:
            self._stopping.set()
            self.process.terminate()

    def join(self, timeout: float = 30) -> None:
        """Wait for the stopped worker, killing it after `timeout` seconds."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._thread.join()


def stop_all(workers: list[Supervised], timeout: float = 30) -> None:
    for worker in workers:
        worker.stop()
    for worker in workers:
        worker.join(timeout)


@contextmanager
def site_workers(sites: Iterable[Site], say: Callable[[str], None]) -> Iterator[list[Supervised]]:
    """A supervised worker for each site, the share inbox of each MPC party site (started
    first: the owners' input steps send to it), and the control worker with the scheduler."""
    workers = [Supervised("control", start_control_worker, say)]
    try:
        workers += [
            Supervised(f"{site.name} share inbox", functools.partial(start_share_inbox, site), say)
            for site in sites
            if site.kind == Site.Kind.MPC_PARTY
        ]
        workers += [
            Supervised(site.name, functools.partial(start_worker, site), say) for site in sites
        ]
        yield workers
    finally:
        stop_all(workers)

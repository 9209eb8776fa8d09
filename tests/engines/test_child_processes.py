"""An engine's separate process (an enclave, an MPC party) dies with its host. A worker killed
outright (SIGKILL runs no handler and no `finally`) must leave nothing running: played by a host
that starts a child the way the engines do (`dies_with_its_host`) and is then killed, the child
deaf to everything else that could end it (its pipes closing, SIGHUP, SIGTERM). Without the
parent-death signal the same child outlives its host. (Real workers killed mid-job, with their
enclaves and parties: tests/jobs/test_site_deaths.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from jobs.engines.base import dies_with_its_host
from tests.jobs.site_processes import handles, kill_and_reap, wait_gone

DEAF = (
    "import signal, threading\n"
    "for deaf in (signal.SIGHUP, signal.SIGTERM, signal.SIGPIPE):\n"
    "    signal.signal(deaf, signal.SIG_IGN)\n"
    "threading.Event().wait()\n"
)


def host_with_a_child(armed: bool) -> tuple[int, int]:
    """Fork a host that starts the deaf child and waits; returns (host, child)."""
    read, write = os.pipe()
    host = os.fork()
    if host == 0:  # the host: never returns into the test
        try:
            child = subprocess.Popen(
                [sys.executable, "-c", DEAF],
                stdin=subprocess.PIPE,
                preexec_fn=dies_with_its_host() if armed else None,
            )
            os.write(write, f"{child.pid}\n".encode())
            signal.pause()
        finally:
            os._exit(1)
    os.close(write)
    with os.fdopen(read) as lines:
        return host, int(lines.readline())


@pytest.mark.parametrize("armed", [True, False], ids=["with the signal", "without it"])
def test_a_child_started_to_die_with_its_host_ends_when_the_host_is_killed(armed):
    host, child = host_with_a_child(armed)
    watched = handles([child])
    os.kill(host, signal.SIGKILL)
    os.waitpid(host, 0)
    alive = wait_gone(watched, timeout=10 if armed else 1)
    try:
        assert alive == ([] if armed else [child])
    finally:
        for orphan in alive:
            kill_and_reap(orphan)

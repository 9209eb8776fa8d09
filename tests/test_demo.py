"""The README's first command, as a newcomer runs it: `./manage.py demo` on the embedded
default sets up the collaboration, releases both jobs' results, serves the UI, and stops
whole when it is told to stop (a `kill`, a closed terminal), leaving no worker, key service
or web process behind."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

from tests.jobs.site_processes import children, handles, wait_gone

pytestmark = pytest.mark.slow


def descendants(pid: int) -> list[int]:
    found = []
    for child in children(pid):
        found += [child, *descendants(child)]
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_demo_releases_both_results_serves_and_stops_whole(tmp_path: Path):
    port = free_port()
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_URL", "CELERY_", "CLEANROOM_"))
    }
    environment |= {"CLEANROOM_BOOTSTRAP": "0", "CLEANROOM_VAR_DIR": str(tmp_path / "var")}
    demo = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "demo",
            "--patients",
            "200",
            "--addrport",
            f"127.0.0.1:{port}",
        ],
        cwd=settings.BASE_DIR,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    shown, running = [], []
    try:
        assert demo.stdout
        for line in demo.stdout:
            shown.append(line)
            if line.startswith("  Open http"):
                break
        screen = "".join(shown)
        assert "Released to NovaPharm: job 1, attestation SIMULATED" in screen, screen
        assert "Released to NovaPharm: job 2, MPC across" in screen, screen
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/login/") as page:
            assert page.status == 200
        running = descendants(demo.pid)
        assert len(running) >= 10  # the site workers, the control worker, key services, web
        waiting = handles([demo.pid, *running])
        demo.send_signal(signal.SIGTERM)
        assert not wait_gone(waiting, timeout=90), "processes outlived the demo"
        rest = demo.stdout.read()
        assert "Traceback" not in rest and "Warm shutdown" not in rest, rest
    finally:
        # Nothing left behind, even when the test fails before it listed the demo's processes.
        for pid in [demo.pid, *(running or descendants(demo.pid))]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        demo.wait()
        demo.stdout.close()

"""What benchmarks share: a scratch database of their own, timing and memory helpers.

Benchmarks are run by `python manage.py bench [NAME]`, never by the test suite. Each prints
lines `name: value unit`.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from django.db import connection
from django.test.utils import override_settings

from cleanroom.crypto.keys import key_service


def report(name: str, value: float, unit: str, digits: int = 1) -> None:
    print(f"{name}: {value:.{digits}f} {unit}", flush=True)


def timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


@contextmanager
def scratch_database(label: str) -> Iterator[Path]:
    """A freshly migrated database of the configured kind, dropped afterwards, and a private
    folder for keys and files; audit signing is left to the benchmark."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{label}-") as folder:
        workdir = Path(folder)
        test = connection.settings_dict.setdefault("TEST", {})
        old_name = connection.settings_dict["NAME"]
        if connection.vendor == "sqlite":
            test["NAME"] = str(workdir / "bench.sqlite3")  # a file: subprocesses can open it
        else:
            test["NAME"] = f"bench_{label}_{os.getpid()}"
        connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
        key_service.cache_clear()
        try:
            with override_settings(
                KEY_SERVICE_ROOT=workdir / "keys",
                STORAGE_ROOT=workdir / "storage",
                AUDIT_CHECKPOINT_SIGNING="off",
            ):
                yield workdir
        finally:
            key_service.cache_clear()
            connection.creation.destroy_test_db(old_name, verbosity=0)


@dataclass
class ChildRun:
    seconds: float
    peak_rss_bytes: int
    returncode: int
    stdout: str
    stderr: str


# Runs a Python script as `python script args...` would, then reports the process's own peak
# resident memory. VmHWM belongs to the memory map exec made; getrusage's maxrss would also
# count the parent's pages the child had before exec.
_MEASURED = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    with open("/proc/self/status") as status:
        peak = [line.split()[1] for line in status if line.startswith("VmHWM:")][0]
    sys.stderr.write(f"\\nVmHWM {peak}\\n")
"""


def run_python(script: Sequence[str], *, cwd: Path) -> ChildRun:
    """Run `python -I script args...` with an empty environment; time it and take its peak
    resident memory."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-I", "-c", _MEASURED, *script],
        cwd=cwd,
        env={},
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    stderr, _, peak = result.stderr.rstrip("\n").rpartition("\nVmHWM ")
    return ChildRun(seconds, int(peak) * 1024, result.returncode, result.stdout, stderr)


@contextmanager
def key_services_named(urls: Mapping[str, str]) -> Iterator[None]:
    """This process's settings, and the environment of the site workers it starts meanwhile,
    name `urls` as the organisations' own key services; with none named, every organisation has
    the embedded one."""
    from django.conf import settings

    named, environment = settings.KEY_SERVICES, os.environ.pop("CLEANROOM_KEY_SERVICES", None)
    settings.KEY_SERVICES = dict(urls)
    if urls:
        os.environ["CLEANROOM_KEY_SERVICES"] = ",".join(f"{k}={v}" for k, v in urls.items())
    try:
        yield
    finally:
        settings.KEY_SERVICES = named
        os.environ.pop("CLEANROOM_KEY_SERVICES", None)
        if environment is not None:
            os.environ["CLEANROOM_KEY_SERVICES"] = environment


def job_events(job_id: int) -> list[tuple[str, datetime, dict]]:
    """The audit events about the job, in order: type, when recorded, data."""
    import json

    from cleanroom.audit.models import AuditEvent

    events = AuditEvent.objects.filter(refs__key="subject", refs__ref=f"job:{job_id}")
    return [
        (type, at, json.loads(bytes(canonical))["data"])
        for type, at, canonical in events.order_by("seq").values_list(
            "type", "created_at", "canonical"
        )
    ]


def report_paired(
    prefix: str,
    label: str,
    alone: list[dict[str, float]],
    with_services: list[dict[str, float]],
    steps: Sequence[str],
) -> None:
    """Seconds of jobs run in pairs, one without and one with the organisations' own key
    services, next to each other: per figure the best and the median of each. Then what the
    services add to a job: end to end, the median of the pairs' differences (a change of the
    machine's load between pairs drops out, not the processes' start-up within one); and in
    `steps`, the figures of the steps the key services take part in, the difference of their
    sums' medians, which the rest of the job's noise does not reach."""
    for runs, suffix in ((alone, ""), (with_services, " with key services")):
        for name in runs[0]:
            seconds = [run[name] for run in runs]
            print(
                f"{prefix} {name} {label}{suffix}: {min(seconds):.2f} s "
                f"(best of {len(seconds)}; median {statistics.median(seconds):.2f} s)",
                flush=True,
            )
    first = next(iter(alone[0]))
    added = [b[first] - a[first] for a, b in zip(alone, with_services, strict=True)]
    print(
        f"{prefix} added by the key services end to end {label}: "
        f"{statistics.median(added):.2f} s per job "
        f"(median of {len(added)} pairs: {', '.join(f'{d:+.2f}' for d in added)})",
        flush=True,
    )
    own = [
        statistics.median(sum(run[step] for step in steps) for run in runs)
        for runs in (alone, with_services)
    ]
    print(
        f"{prefix} added by the key services in their steps {label}: {own[1] - own[0]:.3f} s "
        f"per job ({' + '.join(steps)}: median {own[0]:.3f} s without, {own[1]:.3f} s with)",
        flush=True,
    )

"""What benchmarks share: a scratch database of their own, timing and memory helpers.

Benchmarks are run by `python manage.py bench [NAME]`, never by the test suite. Each prints
lines `name: value unit`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
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

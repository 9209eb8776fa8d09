"""Set up the project's virtual environment before Django is imported.

A newcomer runs `./manage.py demo` or `./manage.py test` with the system Python on a fresh clone.
This module (standard library only) creates `.venv`, installs the pinned dependencies from
pyproject.toml when they changed, and re-executes the command inside it. Deployments that install
dependencies themselves set CLEANROOM_BOOTSTRAP=0.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
STAMP = VENV / ".installed-pyproject-sha256"
# SDV needs torch; pip takes this CPU build from the machine's disk. It must be installed before
# anything that depends on it, or a resolver would fetch a CUDA build of several gigabytes.
PRE_INSTALL = ["torch==2.13.0"]


def _venv_python() -> Path:
    return VENV / "bin" / "python"


def _requirements_digest() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def _run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)  # noqa: S603


def _install() -> None:
    if not _venv_python().exists():
        _run([sys.executable, "-m", "venv", str(VENV)])
    pip = [str(_venv_python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if PRE_INSTALL:
        _run([*pip, *PRE_INSTALL])
    _run([*pip, "--editable", ".[dev]"])
    STAMP.write_text(_requirements_digest())


def _ensure_debian_packages(programs: dict[str, str]) -> None:
    """Debian packages by the program each provides, installed when missing and we are allowed
    to: SoftHSM2 (the organisations' key services keep their keys in its tokens) and, for the
    browser tests, Chromium."""
    missing = [package for program, package in programs.items() if not shutil.which(program)]
    if not missing or os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    _run(["apt-get", "update", "-qq"])
    _run(["apt-get", "install", "-y", "-qq", *missing])


def ensure_environment(argv: list[str]) -> None:
    if os.environ.get("CLEANROOM_BOOTSTRAP", "1") == "0":
        return
    stale = not STAMP.exists() or STAMP.read_text() != _requirements_digest()
    if stale:
        _install()
    packages = {"softhsm2-util": "softhsm2"}
    if len(argv) > 1 and argv[1] == "test":
        packages["chromium"] = "chromium"
    _ensure_debian_packages(packages)
    if Path(sys.prefix).resolve() != VENV.resolve():
        python = str(_venv_python())
        os.execv(python, [python, *argv])  # noqa: S606

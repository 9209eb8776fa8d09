"""Set up the project's virtual environment before Django is imported.

A newcomer runs `./manage.py demo` or `./manage.py test` with the system Python on a fresh clone.
This module (standard library only) creates `.venv`, installs the locked dependencies
(requirements.lock, compiled from pyproject.toml's pins by `.venv/bin/pip-compile`) when either
file changed, and re-executes the command inside it. Deployments that install dependencies
themselves set CLEANROOM_BOOTSTRAP=0, and install from the same lock (deploy/Containerfile).
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
LOCK = ROOT / "requirements.lock"
STAMP = VENV / ".installed-requirements-sha256"


def _venv_python() -> Path:
    return VENV / "bin" / "python"


def _requirements_digest() -> str:
    digest = hashlib.sha256()
    for path in (ROOT / "pyproject.toml", LOCK):
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)  # noqa: S603


def _pip_install(python: Path) -> list[str]:
    return [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]


def install_locked(python: Path, lock: Path) -> None:
    """Install exactly the files the lock names: every requirement pinned with `==` and the
    hashes of its files, so pip refuses any other file (a tampered or substituted package) and
    any dependency the lock lacks. SDV needs torch: the lock pins its CPU build (`+cpu`, found
    on this machine's disk or on PyTorch's CPU index), the only file that matches its hash, so
    pip can never take a CUDA build of several gigabytes instead, whatever it installs first."""
    _run([*_pip_install(python), "--require-hashes", "--requirement", str(lock)])


def _install() -> None:
    if not _venv_python().exists():
        _run([sys.executable, "-m", "venv", str(VENV)])
    install_locked(_venv_python(), LOCK)
    # The project itself, with no dependency of its own choosing and the lock's setuptools.
    _run([*_pip_install(_venv_python()), "--no-deps", "--no-build-isolation", "--editable", "."])
    STAMP.write_text(_requirements_digest())


def _ensure_debian_packages(programs: dict[str, str]) -> None:
    """Debian packages by the program each provides, installed when missing and we are allowed
    to: SoftHSM2 (the organisations' key services keep their keys in its tokens) and, for the
    tests, Chromium, systemd and nftables."""
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
        # The browser tests' Chromium; systemd-analyze checks deploy/systemd's units; nft is
        # the multi-host test bed's packet filter (tests/bed).
        packages.update({"chromium": "chromium", "systemd-analyze": "systemd", "nft": "nftables"})
    _ensure_debian_packages(packages)
    if Path(sys.prefix).resolve() != VENV.resolve():
        python = str(_venv_python())
        os.execv(python, [python, *argv])  # noqa: S606

"""requirements.lock agrees with pyproject.toml's pins, hashes every file, and the bootstrap's
install refuses a package whose file is not the one locked."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# One entry: `name==version \` then `    --hash=sha256:<hex> \` lines, then `# via` comments.
ENTRY = re.compile(r"^([A-Za-z0-9._-]+)==(\S+)((?:\s*\\\n\s+--hash=sha256:[0-9a-f]{64})*)", re.M)


def bootstrap():
    """cleanroom/bootstrap.py as manage.py loads it: by path, without the package."""
    spec = importlib.util.spec_from_file_location("bootstrap", ROOT / "cleanroom" / "bootstrap.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def locked() -> dict[str, tuple[Version, int]]:
    """Each locked package's version and how many file hashes the lock gives for it."""
    text = (ROOT / "requirements.lock").read_text()
    return {
        canonicalize_name(name): (Version(version), hashes.count("--hash="))
        for name, version, hashes in ENTRY.findall(text)
    }


def pinned() -> list[Requirement]:
    project = PYPROJECT["project"]
    lines = project["dependencies"] + project["optional-dependencies"]["dev"]
    return [Requirement(line) for line in lines + PYPROJECT["build-system"]["requires"]]


def test_every_requirement_in_the_lock_is_pinned_with_hashes():
    text = (ROOT / "requirements.lock").read_text()
    requirements = [
        line
        for line in text.splitlines()
        if line and not line.startswith((" ", "#", "-"))  # hash lines are indented
    ]
    entries = locked()
    assert len(requirements) == len(entries) > 100
    assert all(hashes >= 1 for _, hashes in entries.values())


@pytest.mark.parametrize("requirement", pinned(), ids=str)
def test_each_pin_of_pyproject_is_the_locked_version(requirement):
    entries = locked()
    name = canonicalize_name(requirement.name)
    assert name in entries, f"{requirement} is not in requirements.lock: run .venv/bin/pip-compile"
    version, _ = entries[name]
    assert requirement.specifier.contains(version, prereleases=True), (
        f"pyproject.toml pins {requirement}, requirements.lock has {version}:"
        " run .venv/bin/pip-compile"
    )


def test_the_lock_takes_torch_s_cpu_build():
    version, hashes = locked()["torch"]
    assert version.local == "cpu"
    assert hashes == 1


def test_the_lock_is_compiled_as_pyproject_configures_pip_tools():
    """The one documented command, `.venv/bin/pip-compile`, reads [tool.pip-tools]: the lock
    records the options it was compiled with, which must be those."""
    header = (ROOT / "requirements.lock").read_text().split("\n#\n", 2)[1]
    assert "--generate-hashes" in header
    assert "--extra=dev" in header
    assert "--output-file=requirements.lock" in header
    assert PYPROJECT["tool"]["pip-tools"]["output-file"] == "requirements.lock"


def _wheel(folder: Path, payload: str) -> Path:
    """A minimal pure-Python wheel of the package `lockcheck` 1.0."""
    path = folder / "lockcheck-1.0-py3-none-any.whl"
    files = {
        "lockcheck/__init__.py": payload,
        "lockcheck-1.0.dist-info/METADATA": (
            "Metadata-Version: 2.1\nName: lockcheck\nVersion: 1.0\n"
        ),
        "lockcheck-1.0.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for name, content in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(content.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(content.encode())}")
    record.append("lockcheck-1.0.dist-info/RECORD,,")
    files["lockcheck-1.0.dist-info/RECORD"] = "\n".join(record) + "\n"
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return path


def test_the_bootstrap_refuses_a_package_that_is_not_the_file_locked(tmp_path, monkeypatch):
    """The attack: whoever controls an index or a mirror (or a find-links folder) serves a
    different file under a locked name and version. The bootstrap installs the lock, whose
    hash is the honest file's, so pip refuses the substitute and installs nothing."""
    honest = _wheel(tmp_path, "GENUINE = True\n")
    digest = hashlib.sha256(honest.read_bytes()).hexdigest()
    lock = tmp_path / "requirements.lock"
    lock.write_text(f"lockcheck==1.0 \\\n    --hash=sha256:{digest}\n")
    index = tmp_path / "index"
    index.mkdir()
    _wheel(index, "import os\nos.environ['STOLEN'] = 'yes'\n")  # same name, other content
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    python = tmp_path / "venv" / "bin" / "python"
    # pip looks only in the attacker's folder: no index, no other configured location.
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    monkeypatch.delenv("PIP_CONSTRAINT", raising=False)

    with pytest.raises(subprocess.CalledProcessError):
        bootstrap().install_locked(python, lock)
    installed = subprocess.run(
        [str(python), "-c", "import lockcheck"], capture_output=True, check=False
    )
    assert installed.returncode != 0

    honest.replace(index / honest.name)  # the genuine file installs
    bootstrap().install_locked(python, lock)
    subprocess.run([str(python), "-c", "import lockcheck; assert lockcheck.GENUINE"], check=True)

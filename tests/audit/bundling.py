"""Helpers for bundle tests: trust files, running the shipped verify.pyz as a regulator would."""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from django.core.management import call_command

from cleanroom.audit.verifier.bundle import VERIFIER

PROJECT_PACKAGES = {"cleanroom", "jobs", "parties", "trails", "tests"}


def trust_file(directory: Path, *extra: str, name: str = "trust.txt") -> Path:
    """What a regulator keeps: the output of `manage.py audit_keys`, and any extra lines."""
    out = io.StringIO()
    call_command("audit_keys", stdout=out)
    path = directory / name
    path.write_text(out.getvalue() + "".join(f"{line}\n" for line in extra))
    return path


@dataclass
class Verdict:
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run_verify(
    bundle: Path, trust: Path, *, previous: Path | None = None, results: tuple[Path, ...] = ()
) -> Verdict:
    """Extract verify.pyz from the bundle into an empty folder and run it there as a regulator
    would, in isolated mode (no environment variables, no user site, not the current folder).

    This environment has the project installed, so isolation alone would not show that the
    verifier does without it: `-X importtime` lists every module the run imports, and none may
    be the project's."""
    command = [sys.executable, "-I", "-X", "importtime", VERIFIER, str(bundle.resolve())]
    command += ["--trust", str(trust.resolve())]
    if previous is not None:
        command += ["--previous", str(previous.resolve())]
    for opening in results:
        command += ["--result", str(opening.resolve())]
    with tempfile.TemporaryDirectory() as workdir:
        with zipfile.ZipFile(bundle) as archive:
            (Path(workdir) / VERIFIER).write_bytes(archive.read(VERIFIER))
        result = subprocess.run(
            command, cwd=workdir, capture_output=True, text=True, timeout=120, env={}, check=False
        )
    imported = [
        line.rpartition("|")[2].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    ]
    project = [name for name in imported if name.partition(".")[0] in PROJECT_PACKAGES]
    assert imported and not project, f"the shipped verifier imported project code: {project}"
    stderr = "".join(
        line
        for line in result.stderr.splitlines(keepends=True)
        if not line.startswith("import time:")
    )
    return Verdict(result.returncode, result.stdout, stderr)


def rewrite_zip(source: Path, target: Path, *, add: dict[str, bytes] | None = None) -> Path:
    """Copy a bundle, adding files (an attacker repacking it)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            new.writestr(info.filename, old.read(info.filename))
        for name, content in (add or {}).items():
            new.writestr(name, content)
    return target

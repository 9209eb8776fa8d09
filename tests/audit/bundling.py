"""Helpers for bundle tests: trust files, running the shipped verify.py as a regulator would."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from django.core.management import call_command


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
    """Extract verify.py from the bundle into a folder of its own and run it in isolated mode
    (no project code, no environment variables, no site of the user): stdlib + cryptography."""
    workdir = bundle.parent / f"{bundle.stem}-verifier"
    workdir.mkdir(exist_ok=True)
    with zipfile.ZipFile(bundle) as archive:
        (workdir / "verify.py").write_bytes(archive.read("verify.py"))
    command = [sys.executable, "-I", "verify.py", str(bundle), "--trust", str(trust)]
    if previous is not None:
        command += ["--previous", str(previous)]
    for opening in results:
        command += ["--result", str(opening)]
    result = subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, timeout=120, env={}, check=False
    )
    return Verdict(result.returncode, result.stdout, result.stderr)


def rewrite_zip(source: Path, target: Path, *, add: dict[str, bytes] | None = None) -> Path:
    """Copy a bundle, adding files (an attacker repacking it)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            new.writestr(info.filename, old.read(info.filename))
        for name, content in (add or {}).items():
            new.writestr(name, content)
    return target

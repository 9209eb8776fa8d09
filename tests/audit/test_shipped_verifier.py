"""The offline verifier is one package that the platform imports and each bundle ships as one
runnable file, verify.pyz: the same code, standard library and `cryptography` only, rebuilt
byte for byte from a checkout; the enclave measures only the part of it that it runs.
(That the shipped file, run alone, accepts a good bundle and refuses a tampered one is shown by
every test that calls `run_verify`: tests/audit/test_bundles.py and test_tampering.py.)"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from django.conf import settings

from cleanroom.attestation.measured import measured_modules
from cleanroom.audit import verifier
from cleanroom.audit.bundles import export_bundle
from cleanroom.audit.log import record_room_event
from cleanroom.audit.verifier.build import PACKAGE, build_zipapp

ROOT = Path(settings.BASE_DIR)
PACKAGE_DIR = Path(verifier.__file__).parent
MODULES = sorted(PACKAGE_DIR.glob("*.py"))
ALLOWED_THIRD_PARTY = {"cryptography"}


def _imports(path: Path) -> list[ast.Import | ast.ImportFrom]:
    return [
        node
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Import | ast.ImportFrom)
    ]


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_the_verifier_imports_only_the_standard_library_cryptography_and_itself(path) -> None:
    for node in _imports(path):
        if isinstance(node, ast.ImportFrom) and node.level:
            # Relative, so the package runs under any name (in verify.pyz it is `verifier`).
            assert node.level == 1, f"{path.name}:{node.lineno} leaves the package"
            continue
        names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
        for name in names:
            top = name.partition(".")[0]
            assert top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY, (
                f"{path.name}:{node.lineno} imports {name}, which a regulator's bare Python "
                "does not have"
            )


def test_the_package_init_imports_nothing_and_the_enclave_measures_only_canonical_json() -> None:
    assert _imports(PACKAGE_DIR / "__init__.py") == []
    measured = {m for m in measured_modules(ROOT) if m.startswith("cleanroom.audit.verifier")}
    assert measured == {"cleanroom.audit.verifier", "cleanroom.audit.verifier.canonical"}


def test_the_zipapp_holds_every_module_of_the_verifier_but_its_builder_stamped_alike() -> None:
    content = build_zipapp()
    assert content.startswith(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        infos = archive.infolist()
        shipped = {info.filename: archive.read(info) for info in infos}
    assert shipped.pop("__main__.py").startswith(b"import sys")
    expected = {f"{PACKAGE}/{p.name}": p.read_bytes() for p in MODULES if p.name != "build.py"}
    assert shipped == expected
    # Nothing of when or where it was built: the same code gives the same bytes.
    assert {(i.date_time, i.create_system, i.external_attr) for i in infos} == {
        ((1980, 1, 1, 0, 0, 0), 3, 0o644 << 16)
    }
    assert build_zipapp() == content


@pytest.mark.django_db
def test_the_shipped_file_is_what_anyone_rebuilds_from_the_code_byte_for_byte(
    world, tmp_path
) -> None:
    room = world.room("study")
    record_room_event(room.pk, "room.joined", by=world.alice, subject=f"room:{room.pk}")
    bundle = tmp_path / "bundle.zip"
    export_bundle(room=room, output=bundle)
    rebuilt = tmp_path / "rebuilt.pyz"
    # From a checkout, as a regulator or operator would: a fresh interpreter, not this process.
    done = subprocess.run(
        [sys.executable, "-m", "cleanroom.audit.verifier.build", str(rebuilt)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    with zipfile.ZipFile(bundle) as archive:
        shipped = archive.read("verify.pyz")
        manifest = json.loads(archive.read("MANIFEST.json"))
    digest = hashlib.sha256(shipped).hexdigest()
    assert rebuilt.read_bytes() == shipped
    assert manifest["files"]["verify.pyz"] == digest
    assert done.stdout == f"{rebuilt}: sha256 {digest}\n"

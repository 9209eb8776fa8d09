"""The enclave's measurement covers every project file the enclave program can run, computed
from the data plane package and what it imports, and none of that code is Django, Celery or the
database: the key service can only vouch for what it measures. The same for the MPC party
program, which holds shares."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from cleanroom.attestation import measured
from jobs.engines.tee.trust import enclave_measurements
from tests.engines.support import tee_config

ROOT = Path(settings.BASE_DIR)
PLATFORM = {"django", "celery", "kombu", "rest_framework", "psycopg", "redis"}
PROGRAMS = ["dataplane.enclave", "dataplane.mpc.party"]


def _loaded(entry: str, *more: str) -> set[str]:
    """The project modules a fresh interpreter holds after importing the program, and whether
    any platform package came with them."""
    script = (
        "import importlib, json, sys\n"
        f"for name in {[entry, *more]!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("entry", PROGRAMS)
def test_every_project_module_the_program_loads_is_measured(entry):
    loaded = _loaded(entry)
    project = {
        m for m in loaded if m.split(".")[0] in ("cleanroom", "dataplane", "jobs", "parties")
    }
    assert project and project <= set(measured.measured_modules(ROOT))


def test_the_modules_an_extract_imports_when_it_runs_are_measured_too():
    # The synthesizer's modules are imported inside functions, only for an extract.
    modules = set(measured.measured_modules(ROOT))
    assert {"dataplane.synthesis.dp_marginals", "dataplane.synthesis.sdv_methods"} <= modules
    assert {"cleanroom", "cleanroom.crypto", "dataplane"} <= modules  # package inits
    assert not {m for m in modules if m.split(".")[0] in ("jobs", "parties", "trails")}


def test_a_data_plane_module_that_imports_an_app_is_refused_not_measured(tmp_path):
    # An edit that reaches the job lifecycle from the data plane would put unmeasured code
    # (and Django) in the enclave: the measurement refuses to be computed at all.
    for name, text in {
        "dataplane/__init__.py": "",
        "dataplane/rows.py": "from jobs.models import Job\n",
        "jobs/__init__.py": "",
        "jobs/models.py": "",
    }.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    with pytest.raises(measured.UnmeasuredImport, match=r"dataplane\.rows imports jobs\.models"):
        measured.measured_modules(tmp_path)


@pytest.mark.parametrize("entry", PROGRAMS)
def test_no_platform_code_runs_in_the_program(entry):
    loaded = _loaded(entry)
    assert not {m.split(".")[0] for m in loaded} & PLATFORM
    for module in measured.measured_modules(ROOT):
        path = measured._module_file(ROOT, module)
        imported = {name.split(".")[0] for name in measured._imported(path, module)}
        assert not imported & PLATFORM, (module, imported & PLATFORM)


def test_the_measurement_changes_with_any_measured_file(tmp_path):
    files = measured.measured_files(ROOT)
    assert len(files) == len(set(files)) == len(measured.measured_modules(ROOT))
    assert enclave_measurements(tee_config()) == measured_measurement(files)
    copy = [tmp_path / f"{i}-{f.name}" for i, f in enumerate(files)]
    for source, target in zip(files, copy, strict=True):
        target.write_bytes(source.read_bytes())
    copy[0].write_bytes(copy[0].read_bytes() + b"\n")
    assert measured_measurement(copy)[0] != enclave_measurements(tee_config())[0]


def measured_measurement(files):
    from cleanroom.attestation import trust

    return trust.measure(files)

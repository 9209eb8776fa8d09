"""The production deployment files, checked where no container engine or systemd runs: the
Containerfile with hadolint, the compose file against the Compose specification's schema, the
units with `systemd-analyze verify`, and each against the code's sites, organisations and
roles, so that what they say matches what the clean room needs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from parties.seed import SITES

ROOT = Path(__file__).resolve().parent.parent.parent
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
# The demo's jurisdictions and organisations (jobs/demo/scenario.py).
DEMO_JURISDICTIONS = {"EU", "CH", "UK"}
DEMO_ORGANISATIONS = {"charite", "usz", "barts", "novapharm"}
# Each role: its image target and its systemd unit.
ROLES = {
    "web": ("web", "cleanroom-web.service"),
    "control worker": ("control-worker", "cleanroom-control.service"),
    "beat": ("beat", "cleanroom-beat.service"),
    "audit worker": ("audit-worker", "cleanroom-audit.service"),
    "site worker": ("site-worker", "cleanroom-worker@.service"),
    "TEE host": ("tee-host", "cleanroom-tee-host@.service"),
    "MPC party": ("mpc-party", "cleanroom-mpc-party@.service"),
    "MPC share inbox": ("mpc-party", "cleanroom-mpc-inbox@.service"),
    "storage receiver": ("site-worker", "cleanroom-storage-receiver@.service"),
    "key service": ("keyservice", "cleanroom-keyservice@.service"),
}
TARGET_OF_KIND = {"worker": "site-worker", "tee": "tee-host", "mpc-party": "mpc-party"}


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def stages() -> dict[str, tuple[str, str]]:
    """Each Containerfile stage: the stage it is built from, and its instructions."""
    text = (DEPLOY / "Containerfile").read_text()
    found = {}
    for match in re.finditer(r"^FROM (\S+) AS (\S+)\n(.*?)(?=^FROM |\Z)", text, re.M | re.S):
        found[match[2]] = (match[1], match[3])
    return found


def inherited(stage: str, instruction: str) -> bool:
    """Whether the stage has the instruction, itself or through the stages it is built from."""
    all_stages = stages()
    while stage in all_stages:
        parent, body = all_stages[stage]
        if re.search(rf"^{instruction}\b", body, re.M):
            return True
        stage = parent
    return False


def test_the_containerfile_passes_hadolint():
    lint = subprocess.run(
        [str(BIN / "hadolint"), str(DEPLOY / "Containerfile")], capture_output=True, text=True
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert lint.stdout == ""


def test_the_containerfile_has_a_target_per_role_each_with_a_health_check():
    for target, _ in ROLES.values():
        assert target in stages(), target
        assert inherited(target, "HEALTHCHECK"), f"{target} has no health check"
        assert inherited(target, "USER"), f"{target} runs as root"


def test_every_image_installs_the_lock_and_nothing_else():
    text = (DEPLOY / "Containerfile").read_text()
    installs = [line for line in text.splitlines() if "pip install" in line]
    assert len(installs) == 1
    assert re.search(r"--require-hashes .*--requirement requirements\.lock", text, re.S)


def _schema_check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
    )


def test_the_compose_file_follows_the_compose_specification(tmp_path):
    check = _schema_check(DEPLOY / "compose.yaml")
    assert check.returncode == 0, check.stdout + check.stderr
    # The check bites: a misspelt key in a service is refused.
    broken = tmp_path / "compose.yaml"
    text = (DEPLOY / "compose.yaml").read_text()
    broken.write_text(text.replace("    restart: unless-stopped", "    restrat: no", 1))
    assert _schema_check(broken).returncode != 0


def test_the_compose_file_builds_only_the_containerfile_s_targets():
    services = compose()["services"]
    targets = {s["build"]["target"] for s in services.values() if "build" in s}
    assert targets == {target for target, _ in ROLES.values()}
    for service in services.values():
        if "build" in service:
            assert service["build"]["dockerfile"] == "deploy/Containerfile"


def test_every_demo_site_has_its_container_of_its_kind():
    services = compose()["services"]
    for name, jurisdiction, kind, _ in SITES:
        if jurisdiction not in DEMO_JURISDICTIONS:
            continue
        service = services[name]
        assert service["environment"]["CLEANROOM_SITE"] == name
        assert service["build"]["target"] == TARGET_OF_KIND[kind]
        assert service["restart"] == "unless-stopped"  # a site worker that dies is restarted


def test_an_mpc_party_s_container_holds_its_own_keys_and_no_other_s():
    services = compose()["services"]
    for name, jurisdiction, kind, _ in SITES:
        if jurisdiction not in DEMO_JURISDICTIONS:
            continue
        key_folders = [v for v in services[name]["volumes"] if "/mpc/parties/" in v]
        if kind == "mpc-party":
            assert key_folders == [
                f"./credentials/mpc/parties/{name}:/srv/cleanroom/mpc/parties/{name}:ro"
            ]
        else:  # an input site seals to the parties' certificates: it holds no party's key
            assert key_folders == []
        assert not any(v.startswith("./credentials/mpc:") for v in services[name]["volumes"])


def test_each_organisation_s_key_service_is_apart_from_the_platform():
    services = compose()["services"]
    platform_environment = services["web"]["environment"]
    named = dict(
        entry.split("=", 1) for entry in platform_environment["CLEANROOM_KEY_SERVICES"].split(",")
    )
    assert set(named) == DEMO_ORGANISATIONS
    for organisation, url in named.items():
        service = services[f"keys-{organisation}"]
        assert url == f"http://keys-{organisation}:8443"
        assert service["build"]["target"] == "keyservice"
        # None of the platform's secrets, and no route to the database or the broker.
        assert set(service["environment"]) == {"KEYSERVICE_LABEL", "KEYSERVICE_PINNED"}
        assert service["networks"] == ["keys"]
        assert not set(services["postgres"]["networks"]) & set(service["networks"])
        # Its token's volume is its own: no other container mounts it.
        token = f"keys-{organisation}:/srv/keyservice"
        assert [n for n, s in services.items() if token in s.get("volumes", [])] == [
            f"keys-{organisation}"
        ]


def test_only_the_one_off_migrate_step_migrates():
    services = compose()["services"]
    migrating = [n for n, s in services.items() if "migrate" in " ".join(s.get("command", []))]
    assert migrating == ["migrate"]
    assert services["migrate"]["restart"] == "no"
    for name in ("web", "beat", "control-worker", "audit-worker"):
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }
    units = {p.name: p.read_text() for p in (DEPLOY / "systemd").glob("*.service")}
    assert [n for n, text in units.items() if "manage.py migrate" in text] == [
        "cleanroom-migrate.service"
    ]
    assert "Type=oneshot" in units["cleanroom-migrate.service"]
    assert not any("migrate" in line for line in (DEPLOY / "Procfile").read_text().splitlines())


def test_there_is_a_unit_for_every_role_restarted_when_it_dies():
    units = {p.name for p in (DEPLOY / "systemd").glob("*.service")}
    assert units == {unit for _, unit in ROLES.values()} | {"cleanroom-migrate.service"}
    for _, unit in ROLES.values():
        assert "Restart=always" in (DEPLOY / "systemd" / unit).read_text(), unit


def test_the_units_pass_systemd_s_own_check(tmp_path):
    """`systemd-analyze verify` on each unit (an instance of each template), with the install
    folder (/opt/cleanroom) mapped to a stand-in whose programs exist: it reports unknown keys,
    bad values and missing programs, which the test refuses."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: ./manage.py test installs Debian's systemd"
    install = tmp_path / "opt"
    (install / ".venv" / "bin").mkdir(parents=True)
    for program in ("python", "gunicorn", "celery"):
        (install / ".venv" / "bin" / program).symlink_to(sys.executable)
    (install / "deploy").mkdir()
    shutil.copy(DEPLOY / "keyservice-entrypoint.sh", install / "deploy")
    units = tmp_path / "units"
    units.mkdir()
    for unit in (DEPLOY / "systemd").glob("*.service"):
        text = unit.read_text().replace("/opt/cleanroom", str(install))
        (units / unit.name).write_text(text)
    for unit in sorted(units.iterdir()):
        name = unit.name.replace("@.", "@example.")
        check = subprocess.run(
            [analyze, "verify", "--man=no", str(units / name)], capture_output=True, text=True
        )
        assert (check.returncode, check.stdout + check.stderr) == (0, ""), name


def test_the_key_service_entrypoint_is_a_valid_shell_script():
    subprocess.run(["sh", "-n", str(DEPLOY / "keyservice-entrypoint.sh")], check=True)


# What only the control plane's processes may have (#17: a site holds no platform secrets).
PLATFORM_SECRETS = {"DATABASE_URL", "CLEANROOM_KEY_ROOT", "SECRET_KEY"}


def environment_file(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


SITE_UNITS = ["tee-host", "worker", "mpc-party", "mpc-inbox", "storage-receiver"]


@pytest.mark.parametrize("role", SITE_UNITS)
def test_a_site_process_has_no_platform_secret_and_its_orm_refuses(tmp_path, role):
    unit = (DEPLOY / "systemd" / f"cleanroom-{role}@.service").read_text()
    files = re.findall(r"^EnvironmentFile=-?(\S+)$", unit, re.MULTILINE)
    assert "/etc/cleanroom/env" not in files and "/etc/cleanroom/site.env" in files
    assert "Environment=CLEANROOM_ROLE=site" in unit
    site = environment_file(DEPLOY / "site.env.example")
    assert not PLATFORM_SECRETS & set(site)
    assert site["CLEANROOM_ROLE"] == "site"

    # Tried: a process with that environment (its folders here) asks the ORM for a job.
    environment = {
        **site,
        "PATH": "/usr/bin:/bin",
        "CLEANROOM_VAR_DIR": str(tmp_path / "var"),
        "CLEANROOM_SITE": "eu-frankfurt-tee",
        "CLEANROOM_STATIC_ROOT": str(tmp_path / "static"),
    }
    tried = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'cleanroom.settings'; "
            "django.setup(); from jobs.models import Job; Job.objects.count()",
        ],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tried.returncode != 0
    assert "NoDatabase: This is a site process (CLEANROOM_ROLE=site)" in tried.stderr

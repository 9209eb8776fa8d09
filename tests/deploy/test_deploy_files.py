"""The production deployment files, checked where no container engine or systemd runs: the
Containerfile with hadolint, the compose file against the Compose specification's schema, the
units with `systemd-analyze verify`, and each against the code's sites, organisations and
roles, so that what they say matches what the clean room needs."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import selectors
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from cleanroom.crypto.signed_requests import SiteCredentials
from jobs.engines.mpc import certificates
from parties.broker_users import site_permissions, user_name
from parties.seed import JURISDICTIONS, SITES
from parties.site_certificates import DATASET_STORING_USAGE

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


# --- The compose file's sites (#17): each a site process with its own part alone --------------

SITE_TARGETS = set(TARGET_OF_KIND.values())
# Where a site's container mounts its own folder, ./credentials/sites/<site>/.
OWN_FOLDER = "/srv/cleanroom/site"
# The control plane's volumes: no site mounts them.
CONTROL_VOLUMES = {"postgres", "rabbitmq", "audit-keys", "pins"} | {
    f"keys-{organisation}" for organisation in DEMO_ORGANISATIONS
}


def demo_sites(kind: str) -> list[str]:
    return [n for n, j, k, _ in SITES if j in DEMO_JURISDICTIONS and k == kind]


def resolved_environment(service: dict) -> dict[str, str]:
    """A service's environment as its container gets it: its env_files, then `environment`
    (a mapping or a list of NAME=value), as Compose merges them."""
    found: dict[str, str] = {}
    files = service.get("env_file", [])
    for entry in [files] if isinstance(files, str | dict) else files:
        path = entry["path"] if isinstance(entry, dict) else entry
        found.update(environment_file(DEPLOY / path))
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(entry.split("=", 1) for entry in environment)
    found.update({name: "" if value is None else str(value) for name, value in environment.items()})
    return found


def mounts(service: dict) -> list[tuple[str, str]]:
    """Each volume's (source, target), from the short syntax or the long; a folder of the
    host's as `./` and its path from this folder (`docker compose config` makes it absolute)."""
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            source, target = str(volume.get("source", "")), volume["target"]
        else:
            source, target, *_ = volume.split(":")
        if Path(source).is_relative_to(DEPLOY):
            source = f"./{Path(source).relative_to(DEPLOY)}"
        found.append((source, target))
    return found


def networks(service: dict) -> set[str]:
    return set(service.get("networks") or [])


def site_refusals(services: dict) -> list[str]:
    """What a site's container (an owners' worker, a TEE host, an MPC party or its share inbox:
    whatever runs a site target) has that a site process must not, or lacks; empty when each
    holds no platform secret and nothing of another site's."""
    found = []
    database_networks = networks(services["postgres"])
    for name, service in services.items():
        if service.get("build", {}).get("target") not in SITE_TARGETS:
            continue
        environment = resolved_environment(service)
        site = environment.get("CLEANROOM_SITE", "")
        # A storage receiver is reached by the web tier; it asks nothing of the broker, the key
        # services or the MPC parties, so of its own folder it names only its site API part.
        receiver = receiver_jurisdiction(service) is not None
        for secret in sorted(PLATFORM_SECRETS & set(environment)):
            found.append(f"{name} has {secret}")
        if environment.get("CLEANROOM_ROLE") != "site":
            found.append(f"{name} is not CLEANROOM_ROLE=site")
        if environment.get("CLEANROOM_SITE_API_URL") != "http://web:8000/site-api":
            found.append(f"{name} does not name the site API at the web container")
        broker = environment.get("CELERY_BROKER_URL")
        if broker is not None and urlsplit(broker).username != f"site.{site}":
            found.append(f"{name} has a broker URL not of its own user")
        if networks(service) & database_networks:
            found.append(f"{name} shares a network with PostgreSQL")
        if "web" not in services or not networks(service) & networks(services["web"]):
            found.append(f"{name} cannot reach the site API")
        for source, target in mounts(service):
            if source.startswith(("./", "/")) and (source, target) != (
                f"./credentials/sites/{site}",
                OWN_FOLDER,
            ):
                found.append(f"{name} mounts {source}")
            if source in CONTROL_VOLUMES or (
                source.startswith("inbox-") and source != f"inbox-{site}"
            ):
                found.append(f"{name} mounts the volume {source}")
        # Its site API material, MPC credentials and caller key are all in its own folder.
        own_settings = ["CLEANROOM_SITE_API_CREDENTIALS_DIR"]
        if not receiver:
            own_settings += [
                "MPC_CREDENTIALS_DIR",
                "CLEANROOM_KEY_SERVICE_CALLER_KEY",
                "CELERY_BROKER_URL_FILE",
            ]
        for setting in own_settings:
            if not environment.get(setting, "").startswith(f"{OWN_FOLDER}/"):
                found.append(f"{name}'s {setting} is not in its own folder")
        for setting in (
            "CLEANROOM_SITE_API_CA",
            "CLEANROOM_SITE_API_CERTIFICATE",
            "CLEANROOM_SITE_API_KEY",
            "CLEANROOM_KEY_SERVICE_CALLER_KEYS",
            "MPC_CERTIFICATES_DIR",
        ):
            if setting in environment:
                found.append(f"{name} names {setting} elsewhere than its own folder")
    return found


def receiver_jurisdiction(service: dict) -> str | None:
    """The jurisdiction a storage receiver's container stores for (its --jurisdiction), or
    None for any other container."""
    command = service.get("command") or []
    if "storage_receiver" not in command:
        return None
    return str(command[command.index("--jurisdiction") + 1]).upper()


def storage_mounts(service: dict) -> list[tuple[str, str, bool]]:
    """Each jurisdiction's storage volume (`storage-<code>`) a service mounts: its code, where
    and whether read-only, from the short syntax or the long."""
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            source, target = str(volume.get("source", "")), volume["target"]
            read_only = bool(volume.get("read_only"))
        else:
            source, target, *options = volume.split(":")
            read_only = "ro" in ",".join(options).split(",")
        if source.startswith("storage-"):
            found.append((source.removeprefix("storage-").upper(), target, read_only))
    return found


def enclave_jurisdictions(tee_jurisdiction: str) -> set[str]:
    """The jurisdictions whose transfer rules (parties/seed.py) allow their rows to be
    processed in an attested enclave in `tee_jurisdiction`, among the demo's."""
    return {
        code
        for code, (_name, _law, _raw, enclave, _shares, _outputs) in JURISDICTIONS.items()
        if code in DEMO_JURISDICTIONS and tee_jurisdiction in enclave
    }


def storage_refusals(services: dict, volumes: dict) -> list[str]:
    """Who mounts which jurisdiction's storage volume: empty when only that jurisdiction's
    receiver writes it, its owners' worker and the TEE hosts its rules allow enclaves at read
    it, and the web tier (and the demo) reach every jurisdiction with a volume through its
    receiver instead."""
    found = []
    site_jurisdiction = {name: code for name, code, _kind, _ in SITES}
    site_kind = {name: kind for name, _code, kind, _ in SITES}
    receivers: dict[str, str] = {}
    for name, service in services.items():
        environment = resolved_environment(service)
        own = receiver_jurisdiction(service)
        mounted = storage_mounts(service)
        if own is not None:
            receivers[own] = name
            if "DATABASE_URL" in environment:
                found.append(f"{name} has DATABASE_URL")
            if [(code, read_only) for code, _, read_only in mounted] != [(own, False)]:
                found.append(f"{name} mounts other than its own jurisdiction's volume, writable")
            continue
        site = environment.get("CLEANROOM_SITE", "")
        kind = site_kind.get(site) if site == name else None
        if kind == "worker":
            allowed = {site_jurisdiction[site]}
        elif kind == "tee":
            allowed = enclave_jurisdictions(site_jurisdiction[site])
            if {code for code, _, _ in mounted} != allowed:
                found.append(f"{name} does not mount exactly the volumes of {sorted(allowed)}")
        else:
            allowed = set()
        for code, _target, read_only in mounted:
            if code not in allowed:
                found.append(f"{name} mounts the storage volume storage-{code.lower()}")
            elif not read_only:
                found.append(f"{name} mounts storage-{code.lower()} writable")
    stored_through = dict(
        entry.split("=", 1)
        for entry in resolved_environment(services["web"])
        .get("CLEANROOM_STORAGE_SITES", "")
        .split(",")
        if entry
    )
    for volume in volumes:
        if not volume.startswith("storage-"):
            continue
        code = volume.removeprefix("storage-").upper()
        url = urlsplit(stored_through.get(code, ""))
        receiver = receivers.get(code)
        command = services[receiver]["command"] if receiver else []
        listening = str(command[command.index("--address") + 1]) if "--address" in command else ""
        if receiver is None or url.scheme != "https" or url.hostname != receiver:
            found.append(f"CLEANROOM_STORAGE_SITES names no receiver for {code}")
        elif listening.rpartition(":")[2] != str(url.port):
            found.append(f"{receiver} does not listen at the port CLEANROOM_STORAGE_SITES names")
    for name in ("web", "demo"):
        for receiver in receivers.values():
            if not networks(services[name]) & networks(services[receiver]):
                found.append(f"{name} cannot reach {receiver}")
        if "CLEANROOM_STORAGE_SITES" in resolved_environment(services[name]) and (
            "./credentials/control",
            "/srv/cleanroom/control",
        ) not in mounts(services[name]):
            found.append(f"{name} has no storage writer certificate")
    return found


def docker_compose_config() -> dict | None:
    """The compose file as `docker compose config` resolves it (with compose.env.example's
    values), where a container engine's compose plugin is installed; None where it is not."""
    docker = shutil.which("docker")
    if not docker:
        return None
    if subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        return None
    command = [docker, "compose", "--env-file", str(DEPLOY / "compose.env.example")]
    command += ["-f", str(DEPLOY / "compose.yaml"), "--profile", "setup", "--profile", "demo"]
    resolved = subprocess.run(
        [*command, "config", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(resolved.stdout)


def test_each_site_container_holds_no_platform_secret_and_nothing_of_another_site():
    assert site_refusals(compose()["services"]) == []
    resolved = docker_compose_config()
    if resolved is not None:
        assert site_refusals(resolved["services"]) == []


@pytest.mark.parametrize(
    ("change", "refused"),
    [
        # Put back into the sites' shared environment: every site is refused.
        (
            ("  CLEANROOM_ROLE: site\n", "  CLEANROOM_ROLE: site\n  DATABASE_URL: postgres://x\n"),
            "eu-frankfurt has DATABASE_URL",
        ),
        # The platform's environment given to one site.
        (
            (
                "environment: {<<: *site-environment, CLEANROOM_SITE: eu-frankfurt-tee}",
                "environment: {<<: [*site-environment, *platform-environment], "
                "CLEANROOM_SITE: eu-frankfurt-tee}",
            ),
            "eu-frankfurt-tee has SECRET_KEY",
        ),
        # Its key folder.
        (
            (
                "CLEANROOM_SITE: ch-zurich}",
                "CLEANROOM_SITE: ch-zurich, CLEANROOM_KEY_ROOT: /srv/keys}",
            ),
            "ch-zurich has CLEANROOM_KEY_ROOT",
        ),
        # Another site's folder, an MPC party's.
        (
            (
                "      - ./credentials/sites/uk-london:/srv/cleanroom/site:ro\n",
                "      - ./credentials/sites/uk-london:/srv/cleanroom/site:ro\n"
                "      - ./credentials/sites/uk-manchester-mpc:/srv/cleanroom/parties:ro\n",
            ),
            "uk-london mounts ./credentials/sites/uk-manchester-mpc",
        ),
        # Every site's site API material, at the CA.
        (
            (
                "      - ./credentials/sites/eu-paris-mpc:/srv/cleanroom/site:ro\n",
                "      - ./credentials/site-api:/srv/cleanroom/site:ro\n",
            ),
            "eu-paris-mpc mounts ./credentials/site-api",
        ),
        # Another party's inbox.
        (
            (
                "      - inbox-ch-geneva-mpc:/srv/cleanroom/mpc-inbox\n    networks: [sites]",
                "      - inbox-eu-paris-mpc:/srv/cleanroom/mpc-inbox\n    networks: [sites]",
            ),
            "ch-geneva-mpc-inbox mounts the volume inbox-eu-paris-mpc",
        ),
        # The control plane's broker user, with every right.
        (
            (
                "CLEANROOM_SITE: uk-manchester-mpc}",
                "CLEANROOM_SITE: uk-manchester-mpc, "
                "CELERY_BROKER_URL: 'amqp://cleanroom:x@rabbitmq:5672/cleanroom'}",
            ),
            "uk-manchester-mpc has a broker URL not of its own user",
        ),
        # Not a site process, or not on a network of the site API's.
        (
            ("  CLEANROOM_ROLE: site\n", "  CLEANROOM_ROLE: control\n"),
            "uk-london-tee is not CLEANROOM_ROLE=site",
        ),
        (
            ("    networks: [sites]", "    networks: [platform]"),
            "eu-paris-mpc-inbox shares a network with PostgreSQL",
        ),
    ],
)
def test_the_site_check_refuses_a_site_given_what_it_must_not_hold(change, refused):
    old, new = change
    text = (DEPLOY / "compose.yaml").read_text()
    assert old in text
    services = yaml.safe_load(text.replace(old, new, 1))["services"]
    assert refused in site_refusals(services)


def test_each_jurisdiction_s_files_are_written_by_its_receiver_alone_and_read_where_allowed():
    loaded = compose()
    assert storage_refusals(loaded["services"], loaded["volumes"]) == []
    # The demo's three jurisdictions each have their volume; each TEE host reads all three.
    assert {v for v in loaded["volumes"] if v.startswith("storage-")} == {
        f"storage-{code.lower()}" for code in DEMO_JURISDICTIONS
    }
    assert all(enclave_jurisdictions(code) == DEMO_JURISDICTIONS for code in DEMO_JURISDICTIONS)
    resolved = docker_compose_config()
    if resolved is not None:
        assert storage_refusals(resolved["services"], resolved["volumes"]) == []


@pytest.mark.parametrize(
    ("change", "refused"),
    [
        # The web tier given the EU volume back.
        (
            (
                "      - results:/srv/cleanroom/storage/results\n",
                "      - results:/srv/cleanroom/storage/results\n"
                "      - storage-eu:/srv/cleanroom/storage/eu\n",
            ),
            "web mounts the storage volume storage-eu",
        ),
        # The demo step writing into a jurisdiction's root itself.
        (
            (
                "      - ./credentials/callers:/srv/credentials/callers\n",
                "      - ./credentials/callers:/srv/credentials/callers\n"
                "      - storage-ch:/srv/cleanroom/storage/ch\n",
            ),
            "demo mounts the storage volume storage-ch",
        ),
        # A receiver storing into another jurisdiction's volume.
        (
            (
                "      - storage-ch:/srv/cleanroom/storage\n    networks: [storage]",
                "      - storage-uk:/srv/cleanroom/storage\n    networks: [storage]",
            ),
            "storage-ch mounts other than its own jurisdiction's volume, writable",
        ),
        # A receiver with the platform's database.
        (
            (
                "      CLEANROOM_SITE: storage-uk\n",
                "      CLEANROOM_SITE: storage-uk\n      DATABASE_URL: postgres://x\n",
            ),
            "storage-uk has DATABASE_URL",
        ),
        # An owners' worker reading another jurisdiction's files, or writing its own.
        (
            (
                "      - storage-eu:/srv/cleanroom/storage/eu:ro\n    networks",
                "      - storage-eu:/srv/cleanroom/storage/eu:ro\n"
                "      - storage-uk:/srv/cleanroom/storage/uk:ro\n    networks",
            ),
            "eu-frankfurt mounts the storage volume storage-uk",
        ),
        (
            (
                "      - storage-ch:/srv/cleanroom/storage/ch:ro\n    networks",
                "      - storage-ch:/srv/cleanroom/storage/ch\n    networks",
            ),
            "ch-zurich mounts storage-ch writable",
        ),
        # A jurisdiction with a volume the web tier does not reach through its receiver.
        (
            (",UK=https://storage-uk:8444", ""),
            "CLEANROOM_STORAGE_SITES names no receiver for UK",
        ),
        # The demo step off the receivers' network: its uploads would fail.
        (
            ("    networks: [platform, keys, storage]", "    networks: [platform, keys]"),
            "demo cannot reach storage-eu",
        ),
        # A TEE host missing a jurisdiction its rules allow (the EU x CH join would fail there).
        (
            (
                "      - ./credentials/sites/uk-london-tee:/srv/cleanroom/site:ro\n"
                "      - storage-eu:/srv/cleanroom/storage/eu:ro\n",
                "      - ./credentials/sites/uk-london-tee:/srv/cleanroom/site:ro\n",
            ),
            "uk-london-tee does not mount exactly the volumes of ['CH', 'EU', 'UK']",
        ),
    ],
)
def test_the_storage_check_refuses_a_volume_where_it_must_not_be(change, refused):
    old, new = change
    text = (DEPLOY / "compose.yaml").read_text()
    assert old in text
    loaded = yaml.safe_load(text.replace(old, new, 1))
    assert refused in storage_refusals(loaded["services"], loaded["volumes"])


def test_every_mpc_party_has_its_share_inbox_where_the_owners_reach_it():
    services = compose()["services"]
    inboxes = {
        resolved_environment(s)["CLEANROOM_SITE"]: (n, s)
        for n, s in services.items()
        if "mpc_inbox" in s.get("command", [])
    }
    parties = demo_sites("mpc-party")
    assert sorted(inboxes) == sorted(parties)
    for owner in demo_sites("worker"):
        addresses = dict(
            entry.split("=", 1)
            for entry in resolved_environment(services[owner])["MPC_INBOX_ADDRESSES"].split(",")
        )
        assert sorted(addresses) == sorted(parties)
        for party in parties:
            name, inbox = inboxes[party]
            host, port = addresses[party].split(":")
            # Named by its container, on a network the owners' workers share, nowhere else.
            assert (host, int(port)) == (name, 24000)
            assert networks(inbox) == {"sites"} and "sites" in networks(services[owner])
    for party in parties:
        name, inbox = inboxes[party]
        worker = services[party]
        assert inbox["build"]["target"] == "mpc-party"
        assert inbox["restart"] == "unless-stopped"
        assert resolved_environment(inbox)["CLEANROOM_ROLE"] == "site"
        # The party's folder, and the inbox volume its worker's compute steps read.
        inbox_dir = resolved_environment(inbox)["MPC_INBOX_DIR"]
        assert (f"inbox-{party}", inbox_dir) in mounts(inbox)
        assert (f"inbox-{party}", inbox_dir) in mounts(worker)
        assert set(mounts(inbox)) <= set(mounts(worker))


def test_the_credentials_step_names_every_demo_site_and_the_site_api_s_host():
    services = compose()["services"]
    environment = resolved_environment(services["credentials"])
    assert environment["OWNER_SITES"].split() == demo_sites("worker")
    assert environment["TEE_SITES"].split() == demo_sites("tee")
    assert environment["PARTY_SITES"].split() == demo_sites("mpc-party")
    url = resolved_environment(services[demo_sites("tee")[0]])["CLEANROOM_SITE_API_URL"]
    assert environment["SITE_API_HOST"] == urlsplit(url).hostname == "web"
    assert "web" in services["web"]["environment"]["ALLOWED_HOSTS"].split(",")
    assert services["credentials"]["command"] == ["sh", "deploy/compose-credentials.sh"]
    # Each receiver's certificate for the name its container has, in the folder it mounts.
    receivers = {
        receiver_jurisdiction(s): n for n, s in services.items() if receiver_jurisdiction(s)
    }
    assert environment["STORAGE_RECEIVERS"].split() == [
        f"{code}={name}" for code, name in receivers.items()
    ]
    for name in receivers.values():
        assert (f"./credentials/sites/{name}", OWN_FOLDER) in mounts(services[name])


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


STEP_SETTINGS = (
    "SITE_API_HOST",
    "OWNER_SITES",
    "TEE_SITES",
    "PARTY_SITES",
    "BROKER_HOST",
    "BROKER_VHOST",
    "STORAGE_RECEIVERS",
)
# The control plane's broker URL as compose.env.example's values make it.
CONTROL_BROKER_URL = "amqp://cleanroom:change-me@rabbitmq:5672/cleanroom"


@pytest.fixture(scope="module")
def credentials(tmp_path_factory) -> Path:
    """deploy/compose-credentials.sh run as the credentials container runs it (its environment
    from compose.yaml, a database of the demo's sites): the ./credentials folder it makes."""
    tmp_path = tmp_path_factory.mktemp("compose")
    step = resolved_environment(compose()["services"]["credentials"])
    credentials = tmp_path / "credentials"
    environment = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "CLEANROOM_BOOTSTRAP": "0",
        "CLEANROOM_VAR_DIR": str(tmp_path / "var"),
        "CLEANROOM_STATIC_ROOT": str(tmp_path / "static"),
        "CREDENTIALS": str(credentials),
        "CELERY_BROKER_URL": CONTROL_BROKER_URL,
        **{name: step[name] for name in STEP_SETTINGS},
    }
    for command in (
        [sys.executable, "manage.py", "migrate", "--noinput", "--verbosity", "0"],
        ["sh", str(DEPLOY / "compose-credentials.sh")],
    ):
        subprocess.run(command, cwd=ROOT, env=environment, check=True, capture_output=True)
    return credentials


@pytest.mark.slow
def test_the_credentials_step_gives_each_site_its_own_part_alone(credentials):
    """Each site's folder holds its own site API certificate and key, caller key, broker URL
    and MPC part, each chaining to its CA, and nothing of another site's."""
    step = resolved_environment(compose()["services"]["credentials"])
    owners, tees, parties = demo_sites("worker"), demo_sites("tee"), demo_sites("mpc-party")
    site_api_ca = x509.load_pem_x509_certificate((credentials / "site-api/ca.crt").read_bytes())
    for site in (*owners, *tees, *parties):
        folder = credentials / "sites" / site
        expected = {"caller.key", "broker-url", "site-api/ca.crt"} | {
            f"site-api/sites/{site}/{f}" for f in ("tls.crt", "tls.key")
        }
        if site in owners:
            expected |= {"mpc/ca.crt", *(f"mpc/parties/{p}/tls.crt" for p in parties)}
            expected |= {f"mpc/senders/{site}/{f}" for f in ("tls.crt", "tls.key")}
        if site in parties:
            expected |= {"mpc/ca.crt"}
            expected |= {f"mpc/parties/{site}/{f}" for f in ("tls.crt", "tls.key", "share.key")}
        assert files_under(folder) == expected, site
        # Its own: its site API certificate names it, from the site API CA, with its key; its
        # caller key is the one the demo pins for `site.<site>`.
        own = x509.load_pem_x509_certificate(
            (folder / f"site-api/sites/{site}/tls.crt").read_bytes()
        )
        own.verify_directly_issued_by(site_api_ca)
        assert own.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == site
        SiteCredentials.load(
            own.public_bytes(serialization.Encoding.PEM),
            (folder / f"site-api/sites/{site}/tls.key").read_bytes(),
        )
        assert (folder / "caller.key").read_bytes() == (
            credentials / "callers" / f"site.{site}.key"
        ).read_bytes()
        for path in folder.rglob("*.key"):
            assert path.stat().st_mode & 0o077 == 0, path
    for owner in owners:
        # Each party's share key from its certificate, checked against the owner's own CA copy.
        mpc = credentials / "sites" / owner / "mpc"
        for party in parties:
            assert len(certificates.party_public_key(mpc, party)) == 32
        assert certificates.sender_tls_files(mpc, owner).key.exists()
    for party in parties:
        certificates.party_private_key(credentials / "sites" / party / "mpc", party)
    # The web tier's part: the site API CA's certificate, its own caller key (`web`) and its
    # storage writer certificate, from the site API CA, for storing dataset files alone.
    assert files_under(credentials / "control") == {
        "site-api-ca.crt",
        "caller.key",
        "storage-writer/tls.crt",
        "storage-writer/tls.key",
    }
    writer = x509.load_pem_x509_certificate(
        (credentials / "control/storage-writer/tls.crt").read_bytes()
    )
    writer.verify_directly_issued_by(site_api_ca)
    usages = writer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [DATASET_STORING_USAGE]
    SiteCredentials.load(
        writer.public_bytes(serialization.Encoding.PEM),
        (credentials / "control/storage-writer/tls.key").read_bytes(),
    )
    # Each receiver's: the CA's certificate and its own server certificate, for the name of
    # its container (which CLEANROOM_STORAGE_SITES reaches it at), and nothing else.
    for receiver in step["STORAGE_RECEIVERS"].split():
        code, host = receiver.split("=")
        folder = credentials / "sites" / host
        assert files_under(folder) == {"site-api/ca.crt"} | {
            f"site-api/storage/{code.lower()}/{f}" for f in ("tls.crt", "tls.key")
        }
        own = x509.load_pem_x509_certificate(
            (folder / f"site-api/storage/{code.lower()}/tls.crt").read_bytes()
        )
        own.verify_directly_issued_by(site_api_ca)
        names = own.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == [host]
        assert (folder / f"site-api/storage/{code.lower()}/tls.key").stat().st_mode & 0o077 == 0
    assert (credentials / "control/caller.key").read_bytes() == (
        credentials / "callers/web.key"
    ).read_bytes()
    server = x509.load_pem_x509_certificate((credentials / "site-api/control/tls.crt").read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [step["SITE_API_HOST"]]


def interpolated(value: str) -> str:
    """A value with each ${NAME...} as compose.env.example sets NAME (as `docker compose`
    interpolates the file from deploy/.env)."""
    example = environment_file(DEPLOY / "compose.env.example")
    return re.sub(r"\$\{(\w+)[^}]*\}", lambda name: example[name[1]], value)


def _hashed(password: str, stored: str) -> bool:
    salted = base64.b64decode(stored)
    return salted[4:] == hashlib.sha256(salted[:4] + password.encode()).digest()


@pytest.mark.slow
def test_the_broker_imports_each_site_s_own_user_alone(credentials):
    """The credentials step's broker definitions: the control plane's user (its
    CELERY_BROKER_URL's) with every right, each site's with its own queue's alone, each
    password as the site's own broker-url has it, hashed; the broker imports them at start."""
    services = compose()["services"]
    step = resolved_environment(services["credentials"])
    control = urlsplit(interpolated(resolved_environment(services["web"])["CELERY_BROKER_URL"]))
    assert control.geturl() == CONTROL_BROKER_URL
    assert (step["BROKER_HOST"], step["BROKER_VHOST"]) == (control.hostname, control.path[1:])
    made = json.loads((credentials / "broker/definitions.json").read_text())
    sites = [*demo_sites("worker"), *demo_sites("tee"), *demo_sites("mpc-party")]
    users = {user["name"]: user for user in made["users"]}
    assert set(users) == {"cleanroom"} | {user_name(site) for site in sites}
    assert made["vhosts"] == [{"name": "cleanroom"}]
    rights = {
        p["user"]: (p["vhost"], p["configure"], p["write"], p["read"]) for p in made["permissions"]
    }
    assert rights["cleanroom"] == ("cleanroom", ".*", ".*", ".*")
    assert _hashed("change-me", users["cleanroom"]["password_hash"])
    for site in sites:
        allowed = site_permissions(site)
        assert rights[user_name(site)] == (
            "cleanroom",
            allowed.configure,
            allowed.write,
            allowed.read,
        )
        url = urlsplit((credentials / "sites" / site / "broker-url").read_text().strip())
        assert (url.username, url.hostname, url.port, url.path) == (
            user_name(site),
            "rabbitmq",
            5672,
            "/cleanroom",
        )
        assert _hashed(unquote(url.password or ""), users[user_name(site)]["password_hash"])
    # The broker loads them when it starts.
    loaded = re.search(r"^load_definitions = (\S+)$", (DEPLOY / "rabbitmq.conf").read_text(), re.M)
    target = loaded[1] if loaded else ""
    assert ("./credentials/broker/definitions.json", target) in mounts(services["rabbitmq"])
    assert ("./rabbitmq.conf", "/etc/rabbitmq/conf.d/20-cleanroom.conf") in mounts(
        services["rabbitmq"]
    )


SITE_PROCESS = """
import django, os
os.environ["DJANGO_SETTINGS_MODULE"] = "cleanroom.settings"
django.setup()
from django.conf import settings
from jobs.engines.mpc import certificates
from jobs.sites.client import SiteApiClient
from parties.keys import KeyServiceAccess
site = settings.CLEANROOM_SITE
client = SiteApiClient.from_settings(settings, site)
KeyServiceAccess.from_settings(settings).caller_key.read_bytes()
mpc = settings.MPC_CREDENTIALS_DIR
if (mpc / "senders").exists():
    certificates.sender_tls_files(mpc, site)
if (mpc / "parties" / site / "share.key").exists():
    certificates.party_private_key(mpc, site)
print(client.url, settings.CELERY_BROKER_URL.split(":")[1].lstrip("/"))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "service", ["eu-frankfurt", "ch-zurich-tee", "uk-manchester-mpc", "eu-paris-mpc-inbox"]
)
def test_a_site_container_s_environment_finds_its_part_in_its_own_folder(
    credentials, tmp_path, service
):
    """A process with the site container's environment (its folder where the container mounts
    it) loads its site API credentials, caller key, MPC keys and its own broker user's URL."""
    environment = resolved_environment(compose()["services"][service])
    site = environment["CLEANROOM_SITE"]
    folder = str(credentials / "sites" / site)
    environment = {name: value.replace(OWN_FOLDER, folder) for name, value in environment.items()}
    environment |= {
        "PATH": "/usr/bin:/bin",
        "CLEANROOM_BOOTSTRAP": "0",
        "CLEANROOM_VAR_DIR": str(tmp_path / "var"),
        "CLEANROOM_STATIC_ROOT": str(tmp_path / "static"),
        "TEE_SIMULATED_ROOT_DIR": str(tmp_path / "tee"),
        "MPC_INBOX_DIR": str(tmp_path / "inbox"),
    }
    tried = subprocess.run(
        [sys.executable, "-c", SITE_PROCESS],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tried.returncode == 0, tried.stderr
    assert tried.stdout.split() == ["http://web:8000/site-api", f"site.{site}"]


def _started_receiver(command: list[str], environment: dict[str, str]) -> tuple:
    """The receiver's process, listening on a free port of this host, and that port."""
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    watch = selectors.DefaultSelector()
    watch.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if watch.select(timeout=deadline - time.monotonic()):
            line = process.stdout.readline()
            if "listening on" in line:
                return process, int(line.split("listening on ")[1].split(",")[0].rsplit(":")[1])
    process.kill()
    raise AssertionError(f"the receiver did not start: {process.communicate(timeout=30)[1]}")


@pytest.mark.slow
@pytest.mark.parametrize("service", ["storage-eu", "storage-uk"])
def test_a_storage_receiver_container_takes_the_web_tier_s_file_into_its_own_volume(
    credentials, tmp_path, service
):
    """The receiver run with its container's command and environment (its folder, and its
    volume, where the container mounts them) serves its certificate for its container's name
    and stores a file the web tier's storage writer certificate (./credentials/control/) signs,
    under its jurisdiction's volume."""
    services = compose()["services"]
    code = str(receiver_jurisdiction(services[service]))
    [(_, target, _)] = storage_mounts(services[service])
    volume = tmp_path / "volume"
    environment = resolved_environment(services[service])
    folder = str(credentials / "sites" / environment["CLEANROOM_SITE"])
    environment = {
        name: value.replace(OWN_FOLDER, folder).replace("/srv/cleanroom/storage", str(volume))
        for name, value in environment.items()
    }
    environment |= {
        "PATH": "/usr/bin:/bin",
        "CLEANROOM_BOOTSTRAP": "0",
        "CLEANROOM_VAR_DIR": str(tmp_path / "var"),
        "CLEANROOM_STATIC_ROOT": str(tmp_path / "static"),
    }
    command = [str(part) for part in services[service]["command"]]
    command[0] = sys.executable
    command[command.index("--address") + 1] = "127.0.0.1:0"
    process, port = _started_receiver(command, environment)
    try:
        control = credentials / "control"
        writer = SiteCredentials.load(
            (control / "storage-writer/tls.crt").read_bytes(),
            (control / "storage-writer/tls.key").read_bytes(),
        )
        body = b"ciphertext of a dataset"
        digest = hashlib.sha256(body).hexdigest()
        name = "charite/cohort/0123456789abcdef01234567.parquet.enc"
        path = f"/objects/{code}/{name}"
        context = ssl.create_default_context(cafile=str(control / "site-api-ca.crt"))
        connection = http.client.HTTPSConnection(service, port, context=context, timeout=30)
        # The container's name is its certificate's; here it listens on this host.
        connection.sock = context.wrap_socket(
            socket.create_connection(("127.0.0.1", port), timeout=30), server_hostname=service
        )
        connection.request(
            "PUT",
            path,
            body=body,
            headers={
                "Content-Length": str(len(body)),
                "X-Content-SHA256": digest,
                **writer.headers_for_digest("PUT", path, digest),
            },
        )
        answer = connection.getresponse()
        assert answer.status == 201, answer.read()
        connection.close()
    finally:
        process.terminate()
        process.communicate(timeout=30)
    stored = Path(target.replace("/srv/cleanroom/storage", str(volume))) / name
    assert stored.read_bytes() == body


WEB_STORAGE = """
import django, os
os.environ["DJANGO_SETTINGS_MODULE"] = "cleanroom.settings"
django.setup()
from parties.storage import dataset_storage
for code in os.environ["CODES"].split():
    storage = dataset_storage(code)
    print(code, type(storage).__name__, storage.host, storage.port)
"""


@pytest.mark.slow
@pytest.mark.parametrize("service", ["web", "demo"])
def test_the_web_tier_and_the_demo_store_each_jurisdiction_s_files_through_its_receiver(
    credentials, tmp_path, service
):
    """With the service's environment (./credentials/control/ where it mounts it), each
    jurisdiction with a volume is stored through its receiver's container, with the storage
    writer certificate loaded: no jurisdiction falls back to a root of the service's own."""
    loaded = compose()
    codes = [v.removeprefix("storage-").upper() for v in loaded["volumes"] if "storage-" in v]
    environment = {
        name: interpolated(value).replace("/srv/cleanroom/control", str(credentials / "control"))
        for name, value in resolved_environment(loaded["services"][service]).items()
    }
    environment |= {
        "PATH": "/usr/bin:/bin",
        "CODES": " ".join(codes),
        "CLEANROOM_BOOTSTRAP": "0",
        "CLEANROOM_VAR_DIR": str(tmp_path / "var"),
        "CLEANROOM_STATIC_ROOT": str(tmp_path / "static"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    tried = subprocess.run(
        [sys.executable, "-c", WEB_STORAGE],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tried.returncode == 0, tried.stderr
    assert tried.stdout.splitlines() == [
        f"{code} StorageReceiverClient storage-{code.lower()} 8444" for code in codes
    ]

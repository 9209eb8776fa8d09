"""The web process and a TEE host have no path to any KEK, shown by trying: with each
organisation's key service running as its own process (as the demo starts them), a child
process runs as the web tier does in production, as an OS user of its own (`nobody` here) with
the environment deploy/env.example gives it, owning the platform's own key folder; and again as
a TEE host, with deploy/site.env.example's environment (no database, no key folder), owning its
own caller key. Each tries everything it can reach: every file under the deployment's folder
(the key services' state folders, their tokens, PINs and configurations, the platform's
KEY_SERVICE_ROOT, the other processes' caller keys), each key it reads as an AES-256 KEK
against every dataset's wrapped key, the PKCS#11 library with each service's SoftHSM2
configuration (log in with any PIN it found, or find a secret key without one), and its
environment for a token configuration, a PIN or a key service's folder. Every attempt fails.
Running as root is what lets the test become another user; elsewhere it is skipped."""

from __future__ import annotations

import base64
import json
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from cleanroom.crypto.keys import key_service
from jobs.demo.key_services import owner_key_services
from keyservice.token import SOFTHSM
from parties.models import DatasetVersion
from tests import factories
from tests.factories import JOIN_SQL, propose

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        not hasattr(os, "geteuid") or os.geteuid() != 0,
        reason="becoming another OS user (the web tier's) needs root, as in the tests and CI",
    ),
]

WEB_USER = "nobody"

# What the web tier tries, run as its own user. Reads a JSON request on stdin, prints what it
# reached: files it read, folders it listed, suspicious environment entries, keys that opened
# a dataset's wrapped key, and what the PKCS#11 library gave it.
ATTEMPT = r"""
import base64, json, os, sys
request = json.loads(sys.stdin.read())
reached = {"read": [], "listed": [], "environment": [], "opened": [], "pins": [], "token": None}

def candidates(content):
    yield content
    for decode in (bytes.fromhex, base64.b64decode):
        try:
            yield decode(content.decode().strip())
        except Exception:
            pass

if request["mode"] == "files":
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    for root in request["roots"]:
        for folder, _, files in os.walk(root):
            reached["listed"].append(folder)
            for name in files:
                path = os.path.join(folder, name)
                try:
                    with open(path, "rb") as handle:
                        content = handle.read()
                except OSError:
                    continue
                reached["read"].append(path)
                if "pin" in name:
                    reached["pins"].append(content.decode(errors="replace").strip())
                for key in candidates(content):
                    if len(key) != 32:
                        continue
                    for wrapped in request["wrapped"]:
                        blob = base64.b64decode(wrapped["blob"])
                        try:
                            AESGCM(key).decrypt(blob[:12], blob[12:], wrapped["aad"].encode())
                        except Exception:
                            continue
                        reached["opened"].append(path)
    for name, value in os.environ.items():
        if "SOFTHSM" in name or "PIN" in name.upper() or any(
            state in value for state in request["states"]
        ):
            reached["environment"].append(name)
else:
    import pkcs11
    from pkcs11 import Attribute, ObjectClass
    try:
        tokens = list(pkcs11.lib(request["library"]).get_tokens())
    except Exception as exc:
        reached["token"] = f"no library: {type(exc).__name__}"
    else:
        found = []
        for token in tokens:
            for pin in [None, *request["pins"]]:
                try:
                    with token.open(user_pin=pin) as session:
                        found += [
                            str(key.label)
                            for key in session.get_objects(
                                {Attribute.CLASS: ObjectClass.SECRET_KEY}
                            )
                        ]
                except Exception:
                    continue
        reached["token"] = {"tokens": len(tokens), "secret_keys": found}
print(json.dumps(reached))
"""


def _as_web_user() -> dict:
    """How subprocess starts a child as the web tier's user, with its group and no other."""
    web = pwd.getpwnam(WEB_USER)
    return {"user": web.pw_uid, "group": web.pw_gid, "extra_groups": []}


def _interpreters() -> list[list[str]]:
    """This Python, or (where it lives in a folder only root enters, as pyenv's does under
    /root) the system's Python of the same version with this environment's packages."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return [[sys.executable], [f"/usr/bin/{version}"]]


# Each process tried, with the example environment production gives it.
ROLES = {"web": "env.example", "tee-host": "site.env.example"}


def _environment(interpreter: list[str], role: str = "web", **overrides: str) -> dict[str, str]:
    """The role's example environment (deploy/), pointing at this deployment's folders."""
    environment = {}
    example = Path(django_settings.BASE_DIR) / "deploy" / ROLES[role]
    for line in example.read_text().split("\n"):
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            environment[name.strip()] = value.strip()
    environment.update(
        PATH="/usr/bin:/bin",
        HOME="/nonexistent",
        LANG="C.UTF-8",
        PYTHONPATH=sysconfig.get_paths()["purelib"],
        PYTHONDONTWRITEBYTECODE="1",
        **overrides,
    )
    if interpreter[0] == sys.executable:
        environment.pop("PYTHONPATH")
    return environment


def _attempt(interpreter, environment, request: dict) -> dict:
    done = subprocess.run(
        [*interpreter, "-c", ATTEMPT],
        input=json.dumps(request),
        env=environment,
        **_as_web_user(),
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def deployment(settings):
    """A deployment's folder as production lays it out (/srv/cleanroom, entered by everyone):
    the owners' key services' state folders, and the platform's own key folder and caller key,
    which belong to the web tier's user."""
    var = Path(tempfile.mkdtemp(prefix="cleanroom-deployment-"))
    var.chmod(0o755)
    settings.VAR_DIR = var
    settings.KEY_SERVICE_ROOT = var / "keys"
    settings.KEY_SERVICE_CALLER_KEY = var / "keyservice-caller.key"
    settings.KEY_SERVICE_CALLER_KEYS = var / "keyservice-callers"
    key_service.cache_clear()
    yield var
    key_service.cache_clear()
    shutil.rmtree(var)


def _interpreter_for_web_user() -> list[str]:
    for interpreter in _interpreters():
        try:
            probe = subprocess.run(
                [*interpreter, "-c", "import cryptography, pkcs11"],
                env=_environment(interpreter),
                **_as_web_user(),
                capture_output=True,
                timeout=60,
                cwd="/",
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if probe.returncode == 0:
            return interpreter
    pytest.fail(f"no Python with this project's packages that {WEB_USER} may run")


@pytest.mark.parametrize("role", ROLES)
def test_a_platform_process_reaches_no_kek_by_any_path_it_has(role, deployment, world, tmp_path):
    interpreter = _interpreter_for_web_user()
    with owner_key_services([world.charite, world.zurich, world.pharma]) as urls:
        room = world.study(tmp_path)
        # An approved query: the owners approved with their own passkeys, so the platform's key
        # folder holds at most the log's signing key, as the web tier's would.
        query = propose(room, world.bob, world.pharma, sql=JOIN_SQL)
        for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
            factories.decide(query=query, organization=org, by=owner, approve=True)
        django_settings.KEY_SERVICE_ROOT.mkdir(parents=True, exist_ok=True)
        states = sorted(str(deployment / "keyservices" / slug) for slug in urls)
        web = pwd.getpwnam(WEB_USER)
        for path in [
            django_settings.KEY_SERVICE_ROOT,
            *django_settings.KEY_SERVICE_ROOT.rglob("*"),
        ]:
            os.chown(path, web.pw_uid, web.pw_gid)
        os.chown(django_settings.KEY_SERVICE_CALLER_KEY, web.pw_uid, web.pw_gid)
        wrapped = [
            {
                "blob": base64.b64encode(bytes(v.wrapped_data_key)).decode(),
                "aad": json.dumps(v.key_context, sort_keys=True, separators=(",", ":")),
            }
            for v in DatasetVersion.objects.all()
        ]
        assert len(wrapped) == 2
        # What the process owns: the web tier the platform's key folder and its caller key; a
        # TEE host its own caller key only (site.env.example names no key folder).
        own_key = django_settings.KEY_SERVICE_CALLER_KEY
        if role == "tee-host":
            own_key = django_settings.KEY_SERVICE_CALLER_KEYS / "site.eu-frankfurt-tee.key"
            for path in (own_key.parent, own_key):
                os.chown(path, web.pw_uid, web.pw_gid)
        environment = _environment(
            interpreter,
            role,
            CLEANROOM_VAR_DIR=str(deployment),
            CLEANROOM_KEY_SERVICES=",".join(f"{k}={v}" for k, v in urls.items()),
            CLEANROOM_KEY_SERVICE_CALLER_KEY=str(own_key),
            **(
                {"CLEANROOM_KEY_ROOT": str(django_settings.KEY_SERVICE_ROOT)}
                if role == "web"
                else {}
            ),
        )
        reached = _attempt(
            interpreter,
            environment,
            {"mode": "files", "roots": [str(deployment)], "wrapped": wrapped, "states": states},
        )
        tokens = {
            state: _attempt(
                interpreter,
                {**environment, "SOFTHSM2_CONF": f"{state}/softhsm2.conf"},
                {"mode": "token", "library": SOFTHSM, "pins": reached["pins"]},
            )["token"]
            for state in states
        }

    # The attempts were real: each read its caller key, and the web tier its key folder.
    assert str(own_key) in reached["read"]
    if role == "web":
        platform_keys = str(django_settings.KEY_SERVICE_ROOT)
        assert any(path.startswith(platform_keys) for path in reached["read"])
    # Nothing of any key service's: not a file read, not a folder listed.
    assert not [p for p in reached["read"] + reached["listed"] if p.startswith(tuple(states))]
    # No key it could read opens a dataset's wrapped key, and none is named as a KEK.
    assert reached["opened"] == []
    assert not [p for p in reached["read"] if Path(p).name.startswith("kek-")]
    # Its environment names no token configuration, PIN or key service folder; no PIN read.
    assert reached["environment"] == []
    assert reached["pins"] == []
    # The PKCS#11 library with each service's configuration: no token, no secret key.
    for state, token in tokens.items():
        assert isinstance(token, str) or not token["secret_keys"], (state, token)

"""Started by root, as the demo starts them, each organisation's key service runs as an OS user
of its own that owns its state folder (0700): another organisation's service, running as its
own user, tries to read the token, PIN and configuration of Charité's and to log in to its
token with the PKCS#11 library, and reaches nothing. Running as root is what lets the test
start services as other users; elsewhere it is skipped."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from jobs.demo.key_services import owner_key_services
from keyservice import local
from keyservice.token import SOFTHSM

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        not hasattr(os, "geteuid") or os.geteuid() != 0,
        reason="starting services as other OS users needs root, as in the tests and CI",
    ),
]

# What the intruding service's user tries on the other state folder: read every file, then
# log in to the token with its configuration (with the PIN if it read one).
ATTEMPT = r"""
import json, os, sys
state = sys.argv[1]
reached = {"read": [], "listed": [], "token": None}
pin = None
for folder, _, files in os.walk(state):
    reached["listed"].append(folder)
    for name in files:
        try:
            with open(os.path.join(folder, name), "rb") as handle:
                content = handle.read()
        except OSError:
            continue
        reached["read"].append(name)
        if name == "token.pin":
            pin = content.decode()
os.environ["SOFTHSM2_CONF"] = os.path.join(state, "softhsm2.conf")
import pkcs11
try:
    tokens = list(pkcs11.lib(sys.argv[2]).get_tokens())
    with tokens[0].open(user_pin=pin) as session:
        reached["token"] = [str(k.label) for k in session.get_objects()]
except Exception as exc:
    reached["token"] = type(exc).__name__
print(json.dumps(reached))
"""


@pytest.fixture
def deployment(settings):
    """A folder every user may enter, as a deployment's is (pytest's own are root's alone)."""
    var = Path(tempfile.mkdtemp(prefix="cleanroom-accounts-"))
    var.chmod(0o755)
    settings.VAR_DIR = var
    yield var
    shutil.rmtree(var)


def test_no_organisations_service_reads_another_ones_token(world, deployment):
    with owner_key_services([world.charite, world.zurich]):
        states = {slug: deployment / "keyservices" / slug for slug in ("charite", "usz")}
        owners = {slug: state.stat().st_uid for slug, state in states.items()}
        # Zurich's service, as the user it runs as, goes for Charité's token.
        intruder = pwd.getpwuid(owners["usz"])
        account = local.Account(intruder.pw_name, intruder.pw_uid, intruder.pw_gid)
        runner = local.runner_for(account, Path(django_settings.BASE_DIR), deployment)
        done = subprocess.run(
            [*runner.python, "-c", ATTEMPT, str(states["charite"]), SOFTHSM],
            env=runner.environment,
            user=account.uid,
            group=account.gid,
            extra_groups=[],
            cwd="/",
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    reached = json.loads(done.stdout)
    assert reached == {"read": [], "listed": [], "token": reached["token"]}
    assert isinstance(reached["token"], str), reached["token"]  # no token, no key listed
    # Each service's own user, neither root nor the other's, owns its folder, 0700, and its
    # token's files (made by the service's own `init`).
    assert len(set(owners.values())) == 2 and 0 not in owners.values()
    for slug, state in states.items():
        assert state.stat().st_mode & 0o777 == 0o700
        assert pwd.getpwuid(owners[slug]).pw_name == local.account_name(slug)
        assert {path.stat().st_uid for path in state.rglob("*")} == {owners[slug]}

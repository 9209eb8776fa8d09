"""The production web tier starts from deploy/ and answers its health check."""

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def production_env(tmp_path):
    env = dict(os.environ)
    env.update(
        CLEANROOM_BOOTSTRAP="0",
        CLEANROOM_VAR_DIR=str(tmp_path),
        SECRET_KEY="test-" + "x" * 50,
        GUNICORN_WORKERS="1",
        GUNICORN_BIND="127.0.0.1:0",
    )
    env.pop("DATABASE_URL", None)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    return env


def test_gunicorn_serves_the_health_check_with_the_deploy_configuration(production_env):
    gunicorn = Path(sys.executable).parent / "gunicorn"
    server = subprocess.Popen(
        [str(gunicorn), "-c", "deploy/gunicorn.conf.py"],
        cwd=ROOT,
        env=production_env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # gunicorn logs its bound address once ready (the when_ready hook): read until then.
        for line in server.stderr:
            if "web tier ready on" in line:
                address = line.rsplit("ready on ", 1)[1].split()[0]
                break
        else:
            pytest.fail("gunicorn exited before it was ready")
        assert address.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{address}/healthz", timeout=10) as response:  # noqa: S310
            assert response.status == 200
            assert b'"ok"' in response.read()
    finally:
        server.terminate()
        server.wait(timeout=10)
        server.stderr.close()


def deployment_check(tmp_path, **weakened: str) -> subprocess.CompletedProcess:
    """`check --deploy` run with deploy/env.example's environment, some of it changed."""
    env = dict(os.environ, CLEANROOM_BOOTSTRAP="0", CLEANROOM_VAR_DIR=str(tmp_path))
    for line in (ROOT / "deploy" / "env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value
    env["SECRET_KEY"] = "a-production-like-secret-" + "k" * 40
    # The example's folders are the installed host's; this check writes in its own.
    env["CLEANROOM_VAR_DIR"] = str(tmp_path)
    env["CLEANROOM_STATIC_ROOT"] = str(tmp_path / "static")
    env.pop("DATABASE_URL")
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # the browser tests' setting, not production's
    env.update(weakened)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )


def test_the_example_production_environment_passes_the_deployment_checks(tmp_path):
    check = deployment_check(tmp_path)
    assert check.returncode == 0, check.stderr + check.stdout


# One weakened setting each, and the check that refuses it: Django's own (security.W...) or the
# project's (accounts/checks.py).
WEAKENED = [
    ({"SESSION_COOKIE_SECURE": "false"}, "security.W012"),
    ({"CSRF_COOKIE_SECURE": "false"}, "security.W016"),
    ({"SECURE_SSL_REDIRECT": "false"}, "security.W008"),
    ({"SECURE_HSTS_SECONDS": "0"}, "security.W004"),
    ({"SECURE_HSTS_SECONDS": "86400"}, "cleanroom.E012"),
    ({"SESSION_COOKIE_SAMESITE": "None"}, "cleanroom.E011"),
    ({"CSRF_COOKIE_SAMESITE": "None"}, "cleanroom.E011"),
    ({"CLEANROOM_TOKEN_LIFETIME_DAYS": "365"}, "cleanroom.E014"),
    ({"CLEANROOM_TOKEN_LIFETIME_DAYS": "0"}, "cleanroom.E013"),
    # Passkeys bound to a name every machine answers to, or asserted over plain http.
    ({"CLEANROOM_WEBAUTHN_RP_ID": "localhost"}, "cleanroom.E015"),
    ({"CLEANROOM_WEBAUTHN_RP_ID": "10.0.0.7"}, "cleanroom.E015"),
    ({"CLEANROOM_WEBAUTHN_ORIGINS": "http://cleanroom.example.org"}, "cleanroom.E016"),
    ({"CLEANROOM_WEBAUTHN_ORIGINS": "https://cleanroom.example.org.evil"}, "cleanroom.E016"),
]


@pytest.mark.parametrize(("weakened", "refused_by"), WEAKENED, ids=[w[1] for w in WEAKENED])
def test_a_weakened_production_setting_fails_the_deployment_checks(tmp_path, weakened, refused_by):
    check = deployment_check(tmp_path, **weakened)
    assert check.returncode != 0
    assert f"({refused_by})" in check.stderr + check.stdout

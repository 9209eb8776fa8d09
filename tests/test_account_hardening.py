"""Accounts as a security team would require: a password guessed again and again at the token
endpoint or the login page is locked out (the right one then refused too) and the lockout is
audited; every page carries a strict Content-Security-Policy; the API reference loads nothing
from outside the project."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from rest_framework.test import APIClient

from cleanroom.audit.log import PLATFORM_LOG, events_of

pytestmark = pytest.mark.django_db

PASSWORD = "right-password-123"


@pytest.fixture
def alice(world):
    world.alice.set_password(PASSWORD)
    world.alice.save()
    return world.alice


def lockouts() -> list[dict]:
    return [e for e in events_of(PLATFORM_LOG) if e["type"] == "account.locked_out"]


def test_guessing_at_the_token_endpoint_is_locked_out_and_audited(alice, settings):
    client = APIClient()
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        response = client.post("/api/token/", {"username": "alice", "password": f"guess-{attempt}"})
        assert response.status_code in (400, 403, 429)
    response = client.post("/api/token/", {"username": "alice", "password": PASSWORD})
    assert response.status_code in (400, 403, 429)
    assert "token" not in response.json()
    event = lockouts()[0]
    assert event["subject"] == "username:alice" and event["data"]["failures"] == 5
    # Another user from the same address is not locked out by alice's guesses.
    assert client.post("/api/token/", {"username": "bob", "password": "x"}).status_code == 400


def test_guessing_at_the_login_page_is_locked_out(alice, settings):
    client = Client()
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        client.post("/login/", {"username": "alice", "password": f"guess-{attempt}"})
    response = client.post("/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    assert lockouts()


def test_a_right_password_before_the_limit_still_works(alice, settings):
    client = APIClient()
    for attempt in range(settings.AXES_FAILURE_LIMIT - 1):
        client.post("/api/token/", {"username": "alice", "password": f"guess-{attempt}"})
    response = client.post("/api/token/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 200 and response.json()["token"]
    assert not lockouts()


STRICT = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "object-src": "'none'",
    "frame-ancestors": "'none'",
}


@pytest.mark.parametrize(
    "path",
    [
        "/login/",
        "/",
        "/datasets/",
        "/rooms/",
        "/approvals/",
        "/audit/",
        "/account/security/",
        "/api/docs/",
        "/api/redoc/",
    ],
)
def test_every_page_sends_a_strict_content_security_policy(world, path):
    client = Client()
    client.force_login(world.alice)
    response = client.get(path, follow=True)
    assert response.status_code == 200
    policy = dict(
        part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";")
    )
    # The API reference (Swagger UI, ReDoc) sets inline styles as it renders: styles only, those
    # pages; ReDoc's search runs in a worker it makes from a blob: URL.
    relaxed = {
        "/api/docs/": {"style-src": "'self' 'unsafe-inline'"},
        "/api/redoc/": {"style-src": "'self' 'unsafe-inline'", "worker-src": "blob:"},
    }.get(path, {})
    for directive, value in {**STRICT, **relaxed}.items():
        assert policy[directive] == value, (path, directive, policy.get(directive))
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", response.content.decode())
    assert 'style="' not in response.content.decode()


@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/"])
def test_the_api_reference_loads_only_the_projects_own_files(world, path):
    client = Client()
    client.force_login(world.alice)
    page = client.get(path).content.decode()
    sources = re.findall(r'(?:src|href|spec-url)="([^"]+)"', page)
    assert sources and all(s.startswith(("/static/", "/api/")) for s in sources), sources
    assert "googleapis" not in page
    if path == "/api/docs/":
        assert client.get("/api/docs/?script").status_code == 200

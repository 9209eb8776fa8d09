"""API tokens, each guarantee as its adversary would try it: an expired or revoked token, what
the database holds of a token, another user's token, a token minting tokens, and the secret
looked for wherever the platform writes anything."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiToken
from cleanroom.audit.log import PLATFORM_LOG, events_of

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"  # the personas' (tests/factories.py)


def obtain(username: str, **extra) -> dict:
    response = APIClient().post(
        "/api/token/", {"username": username, "password": PASSWORD, **extra}
    )
    assert response.status_code == 200, response.content
    return response.json()


def holding(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    return client


def token_events(kind: str) -> list[dict]:
    return [e for e in events_of(PLATFORM_LOG) if e["type"] == f"account.token_{kind}"]


def test_the_password_endpoint_returns_an_expiring_token_that_works(world, settings):
    settings.TOKEN_LIFETIME_DAYS = 7
    issued = obtain("alice", name="nightly export")
    assert issued["token"].startswith(f"crt_{issued['prefix']}_")
    expires = timezone.datetime.fromisoformat(issued["expires_at"])
    assert abs(expires - (timezone.now() + timedelta(days=7))) < timedelta(minutes=1)
    client = holding(issued["token"])
    assert client.get("/api/organizations/").status_code == 200
    [listed] = client.get("/api/tokens/").json()
    assert listed["name"] == "nightly export" and listed["state"] == "active"
    assert listed["last_used_at"] is not None
    assert "token" not in listed and "digest" not in listed
    [event] = token_events("created")
    assert event["actor"] == f"user:{world.alice.pk}"
    assert event["data"] == {
        "token": issued["id"],
        "prefix": issued["prefix"],
        "expires_at": expires.isoformat(),
    }


def test_a_token_may_be_asked_to_last_less_but_never_longer_than_the_setting(world, settings):
    settings.TOKEN_LIFETIME_DAYS = 30
    assert obtain("alice", expires_in_days=2)["expires_at"] < obtain("alice")["expires_at"]
    response = APIClient().post(
        "/api/token/", {"username": "alice", "password": PASSWORD, "expires_in_days": 31}
    )
    assert response.status_code == 400
    assert "between 1 and 30 days" in response.json()["error"]["message"]
    assert ApiToken.objects.count() == 2


def test_an_expired_token_gets_401(world):
    issued = obtain("alice")
    # A day passes beyond its expiry.
    ApiToken.objects.filter(pk=issued["id"]).update(expires_at=timezone.now() - timedelta(days=1))
    response = holding(issued["token"]).get("/api/organizations/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert "expired" in response.json()["error"]["message"]


def test_a_revoked_token_gets_401_at_once(world):
    issued = obtain("alice")
    client = holding(issued["token"])
    assert client.get("/api/rooms/").status_code == 200
    assert client.delete(f"/api/tokens/{issued['id']}/").status_code == 204
    response = client.get("/api/rooms/")
    assert response.status_code == 401
    assert "revoked" in response.json()["error"]["message"]
    [event] = token_events("revoked")
    assert event["data"] == {"token": issued["id"], "prefix": issued["prefix"]}
    # Revoking again changes nothing and records nothing.
    page = Client()
    page.force_login(world.alice)
    page.post(f"/account/security/tokens/{issued['id']}/revoke/")
    assert len(token_events("revoked")) == 1


def test_what_the_database_holds_of_a_token_cannot_be_used(world):
    issued = obtain("alice")
    stored = ApiToken.objects.get(pk=issued["id"])
    assert issued["token"] not in {stored.digest, stored.prefix}
    for stolen in (
        stored.digest,
        stored.prefix,
        f"crt_{stored.prefix}_{stored.digest}",
        stored.digest.upper(),
    ):
        response = holding(stolen).get("/api/organizations/")
        assert response.status_code == 401, stolen
    assert holding(issued["token"]).get("/api/organizations/").status_code == 200


def test_another_users_token_can_be_neither_read_nor_revoked(world):
    alices = obtain("alice")
    bob_api = holding(obtain("bob")["token"])
    assert bob_api.get(f"/api/tokens/{alices['id']}/").status_code == 404
    assert bob_api.delete(f"/api/tokens/{alices['id']}/").status_code == 404
    assert [t["id"] for t in bob_api.get("/api/tokens/").json()] != [alices["id"]]
    bob_page = Client()
    bob_page.force_login(world.bob)
    assert bob_page.post(f"/account/security/tokens/{alices['id']}/revoke/").status_code == 404
    assert alices["prefix"] not in bob_page.get("/account/security/").content.decode()
    assert ApiToken.objects.get(pk=alices["id"]).revoked_at is None
    assert token_events("revoked") == []
    assert holding(alices["token"]).get("/api/organizations/").status_code == 200


def test_a_token_cannot_mint_tokens(world):
    client = holding(obtain("alice")["token"])
    response = client.post("/api/tokens/", {"name": "forever"}, format="json")
    assert response.status_code == 403
    assert "A token cannot create tokens" in response.json()["error"]["message"]
    assert ApiToken.objects.count() == 1
    # A signed-in browser (the password) may.
    browser = APIClient()
    browser.force_login(world.alice)
    response = browser.post("/api/tokens/", {"name": "laptop"}, format="json")
    assert response.status_code == 201 and response.json()["token"].startswith("crt_")


def _everything_stored() -> str:
    """Every row of every table, and every session's decoded data, as text."""
    rows = []
    for model in apps.get_models():
        rows.extend(str(row) for row in model.objects.values_list())
    rows.extend(json.dumps(s.get_decoded()) for s in Session.objects.all())
    return "\n".join(rows)


def test_a_token_secret_is_never_stored_logged_or_audited(world, caplog):
    caplog.set_level(logging.DEBUG)
    secrets, cookies = [], []
    with CaptureQueriesContext(connection) as queries:
        secrets.append(obtain("alice", name="from the password")["token"])
        browser = Client()
        browser.force_login(world.alice)
        response = browser.post(
            "/account/security/tokens/", {"name": "from the page", "expires_in_days": 5}
        )
        cookies.append(str(response.cookies))
        shown = response.content.decode().split('id="new-token-secret">')[1].split("<")[0]
        secrets.append(shown)
        api = APIClient()
        api.force_login(world.alice)
        response = api.post("/api/tokens/", {"name": "from the API"}, format="json")
        secrets.append(response.json()["token"])
        for secret in secrets:
            assert secret.startswith("crt_")
            assert holding(secret).get("/api/rooms/").status_code == 200
        revoking = holding(secrets[0]).delete(f"/api/tokens/{response.json()['id']}/")
        assert revoking.status_code == 204
        assert holding(secrets[2]).get("/api/rooms/").status_code == 401
        cookies.append(str(browser.get("/account/security/").cookies))
    stored = _everything_stored()
    audited = json.dumps(events_of(PLATFORM_LOG))
    statements = "\n".join(f"{q['sql']}" for q in queries.captured_queries)
    assert len(token_events("created")) == 3 and len(token_events("revoked")) == 1
    for secret in secrets:
        body = secret.split("_", 2)[2]
        for where, text in (
            ("the database", stored),
            ("the audit log", audited),
            ("the logs", caplog.text),
            ("the SQL sent", statements),
            ("the cookies", "\n".join(cookies)),
        ):
            assert body not in text, f"a token's secret is in {where}"


def test_the_operator_revokes_a_token_in_the_admin_and_never_sees_its_digest(world):
    issued = obtain("alice")
    stored = ApiToken.objects.get(pk=issued["id"])
    staff = User.objects.create_superuser("operator", password=PASSWORD)
    operator = Client()
    operator.force_login(staff)
    page = operator.get(f"/operator/accounts/apitoken/{stored.pk}/change/").content.decode()
    assert stored.prefix in page and stored.digest not in page
    response = operator.post(
        "/operator/accounts/apitoken/",
        {"action": "revoke", "_selected_action": [stored.pk]},
    )
    assert response.status_code == 302
    assert holding(issued["token"]).get("/api/organizations/").status_code == 401
    [event] = token_events("revoked")
    assert event["actor"] == f"user:{staff.pk}"

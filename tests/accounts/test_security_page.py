"""The Security page: a token made there is shown once; the user's sessions are listed and the
others can be signed out, by their user alone; the passkeys section links to its page once the
server has one."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import ApiToken, SessionRecord
from cleanroom.audit.log import PLATFORM_LOG, events_of

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"


def signed_in(username: str, browser: str) -> Client:
    """A browser that logged in through the login page, as a person does."""
    client = Client(HTTP_USER_AGENT=browser)
    response = client.post("/login/", {"username": username, "password": PASSWORD})
    assert response.status_code == 302
    return client


def test_a_token_made_on_the_page_is_shown_once_and_listed_by_its_prefix_after(world):
    browser = signed_in("alice", "Firefox on the ward PC")
    response = browser.post("/account/security/tokens/", {"name": "R script", "expires_in_days": 3})
    assert response.status_code == 200
    assert (
        response["Cache-Control"].startswith("max-age=0")
        and "no-store" in response["Cache-Control"]
    )
    html = response.content.decode()
    secret = html.split('id="new-token-secret">')[1].split("<")[0]
    token = ApiToken.objects.get(name="R script")
    assert secret.startswith(f"crt_{token.prefix}_") and "will not be shown again" in html
    again = browser.get("/account/security/").content.decode()
    assert secret not in again and f"crt_{token.prefix}_…" in again and "R script" in again


def test_a_bad_token_request_on_the_page_stores_nothing(world, settings):
    settings.TOKEN_LIFETIME_DAYS = 30
    browser = signed_in("alice", "Firefox")
    for form in ({"name": "", "expires_in_days": 3}, {"name": "x", "expires_in_days": 365}):
        response = browser.post("/account/security/tokens/", form)
        assert response.status_code == 200 and 'class="errorlist"' in response.content.decode()
    assert not ApiToken.objects.exists()


def test_revoking_on_the_page_ends_the_token(world):
    browser = signed_in("alice", "Firefox")
    browser.post("/account/security/tokens/", {"name": "old", "expires_in_days": 3})
    token = ApiToken.objects.get()
    response = browser.post(f"/account/security/tokens/{token.pk}/revoke/", follow=True)
    assert "is revoked" in response.content.decode()
    token.refresh_from_db()
    assert token.state == "revoked"


def test_signing_out_the_other_sessions_ends_them_and_only_the_users_own(world):
    laptop = signed_in("alice", "Firefox on the laptop")
    stolen = signed_in("alice", "curl from somewhere else")
    bobs = signed_in("bob", "Chrome")
    page = laptop.get("/account/security/").content.decode()
    assert "Firefox on the laptop" in page and "curl from somewhere else" in page
    assert "Chrome" not in page
    assert page.count("this session") == 1

    # Bob signing out his other sessions does nothing to Alice's.
    bobs.post("/account/security/sessions/sign-out-others/")
    assert stolen.get("/account/security/").status_code == 200

    response = laptop.post("/account/security/sessions/sign-out-others/", follow=True)
    assert "Signed out of 1 other session." in response.content.decode()
    assert stolen.get("/account/security/").status_code == 302  # to the login page
    assert laptop.get("/account/security/").status_code == 200
    assert bobs.get("/account/security/").status_code == 200
    ended = [e for e in events_of(PLATFORM_LOG) if e["type"] == "account.sessions_ended"]
    assert [(e["actor"], e["data"]) for e in ended] == [(f"user:{world.alice.pk}", {"sessions": 1})]
    assert SessionRecord.objects.filter(user=world.alice).count() == 1


def test_logging_out_forgets_the_session(world):
    browser = signed_in("alice", "Firefox")
    assert SessionRecord.objects.filter(user=world.alice).count() == 1
    browser.post("/logout/")
    assert not SessionRecord.objects.filter(user=world.alice).exists()


def test_the_security_page_links_to_the_users_passkeys(world):
    browser = signed_in("alice", "Firefox")
    assert 'href="/account/passkeys/"' in browser.get("/account/security/").content.decode()


def test_a_session_from_before_records_were_kept_is_listed_and_can_be_signed_out(world):
    laptop = signed_in("alice", "Firefox on the laptop")
    older = Client(HTTP_USER_AGENT="an older browser")
    older.force_login(world.alice)
    SessionRecord.objects.filter(session_key=older.session.session_key).delete()
    assert older.get("/").status_code == 200
    assert "an older browser" in laptop.get("/account/security/").content.decode()
    laptop.post("/account/security/sessions/sign-out-others/")
    assert older.get("/").status_code == 302

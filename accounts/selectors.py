"""Reads of API tokens and sessions."""

from __future__ import annotations

from importlib import import_module

from django.conf import settings
from django.db.models import QuerySet

from accounts.models import ApiToken, SessionRecord
from accounts.tokens import digest_of


def tokens_of(user) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user=user)


def token_for_secret(secret: str) -> ApiToken | None:
    """The token a presented secret belongs to, found by its digest; active or not."""
    return ApiToken.objects.select_related("user").filter(digest=digest_of(secret)).first()


def session_store(session_key: str | None = None):
    return import_module(settings.SESSION_ENGINE).SessionStore(session_key=session_key)


def is_signed_in(record: SessionRecord) -> bool:
    """Whether the record's session still exists, unexpired and signed in as its user."""
    data = session_store(record.session_key).load()
    return data.get("_auth_user_id") == str(record.user_id)


def sessions_of(user) -> list[SessionRecord]:
    """The user's sessions that are still signed in (ended or expired ones are left out)."""
    return [r for r in SessionRecord.objects.filter(user=user) if is_signed_in(r)]

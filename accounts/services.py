"""Changes to API tokens and sessions. Token changes write their audit event in their
transaction; the secret itself is returned to the caller once and written nowhere."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from accounts import selectors
from accounts.models import ApiToken, SessionRecord
from accounts.tokens import new_secret
from cleanroom.audit.log import actor_ref, record_platform_event
from cleanroom.errors import DomainError

# How stale `last_used_at` / `last_seen_at` may get before a request writes it again: a write
# per request would make every API call and page view a database write.
TOUCH_INTERVAL = timedelta(minutes=1)


class TokenRequestError(DomainError):
    code = "invalid_token_request"


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str  # shown once


_token_name_length = ApiToken._meta.get_field("name").max_length
assert _token_name_length is not None  # a CharField has one
TOKEN_NAME_LENGTH: int = _token_name_length


def _lifetime(days: int | None) -> timedelta:
    limit = settings.TOKEN_LIFETIME_DAYS
    if days is None:
        days = limit
    if not 1 <= days <= limit:
        raise TokenRequestError(f"A token lasts between 1 and {limit} days, not {days}.")
    return timedelta(days=days)


@transaction.atomic
def issue_token(*, user: User, name: str, days: int | None = None) -> IssuedToken:
    name = name.strip()
    if not name:
        raise TokenRequestError("Name the token, e.g. after the script or machine that uses it.")
    if len(name) > TOKEN_NAME_LENGTH:
        raise TokenRequestError("A token's name is at most 100 characters.")
    made = new_secret()
    token = ApiToken.objects.create(
        user=user,
        name=name,
        prefix=made.prefix,
        digest=made.digest,
        expires_at=timezone.now() + _lifetime(days),
    )
    record_platform_event(
        "account.token_created",
        by=user,
        subject=actor_ref(user),
        token=token.pk,
        prefix=token.prefix,
        expires_at=token.expires_at.isoformat(),
    )
    return IssuedToken(token=token, secret=made.secret)


@transaction.atomic
def revoke_token(*, token: ApiToken, by) -> ApiToken:
    """Revoke at once; revoking a revoked token changes nothing and records nothing."""
    token = ApiToken.objects.select_for_update().get(pk=token.pk)
    if token.revoked_at is not None:
        return token
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    record_platform_event(
        "account.token_revoked",
        by=by,
        subject=f"user:{token.user_id}",
        token=token.pk,
        prefix=token.prefix,
    )
    return token


def token_used(token: ApiToken) -> None:
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= TOUCH_INTERVAL:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)


def _client_of(request) -> dict:
    meta = getattr(request, "META", {}) if request is not None else {}
    return {
        "user_agent": meta.get("HTTP_USER_AGENT", "")[:200],
        "ip_address": meta.get("REMOTE_ADDR") or None,
    }


def record_session_start(sender=None, request=None, user=None, **_) -> None:
    """At login (Django's `user_logged_in`): note the new session; forget the user's ended ones."""
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if user is None or not session_key:
        return
    stale = [r.pk for r in SessionRecord.objects.filter(user=user) if not selectors.is_signed_in(r)]
    SessionRecord.objects.filter(pk__in=stale).delete()
    SessionRecord.objects.update_or_create(
        session_key=session_key, defaults={"user": user, **_client_of(request)}
    )


def record_session_end(sender=None, request=None, user=None, **_) -> None:
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if session_key:
        SessionRecord.objects.filter(session_key=session_key).delete()


def session_seen(request) -> None:
    """A signed-in request: keep its session's record (made here for a session that began
    before records were kept) and its last-seen time current."""
    session_key = request.session.session_key
    record = SessionRecord.objects.filter(session_key=session_key).first()
    now = timezone.now()
    if record is None:
        # Two requests of the session may arrive at once: the second finds the row made.
        made = SessionRecord(
            session_key=session_key, user=request.user, last_seen_at=now, **_client_of(request)
        )
        SessionRecord.objects.bulk_create([made], ignore_conflicts=True)
    elif now - record.last_seen_at >= TOUCH_INTERVAL:
        SessionRecord.objects.filter(pk=record.pk).update(last_seen_at=now)


def end_session(record: SessionRecord) -> None:
    selectors.session_store(record.session_key).delete()
    record.delete()


@transaction.atomic
def sign_out_other_sessions(*, user: User, current_session_key: str | None) -> int:
    """End every session of the user but the current one; audited with how many."""
    others = list(SessionRecord.objects.filter(user=user).exclude(session_key=current_session_key))
    for record in others:
        end_session(record)
    if others:
        record_platform_event(
            "account.sessions_ended", by=user, subject=actor_ref(user), sessions=len(others)
        )
    return len(others)

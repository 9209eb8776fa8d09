"""Deployment checks of the accounts' settings, beside Django's own security checks (which
refuse cookies without Secure, no HSTS, no HTTPS redirect, DEBUG and the like): cookies,
HSTS, token lifetime and the passkeys' relying party."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, Tags, register

# A year: what HSTS preload lists require, and short of it a browser forgets HTTPS-only between
# visits of a rarely used site.
HSTS_MIN_SECONDS = 365 * 24 * 3600
# Production tokens last at most this long; longer makes a leaked one worth more.
TOKEN_LIFETIME_MAX_DAYS = 90


@register(Tags.security, deploy=True)
def cookies_stay_on_this_site(app_configs=None, **kwargs) -> list[Error]:
    return [
        Error(
            f"{name} is {getattr(settings, name)!r}: the cookie would be sent with requests "
            "other sites make to this one.",
            hint=f'Set {name} to "Lax" or "Strict".',
            id="cleanroom.E011",
        )
        for name in ("SESSION_COOKIE_SAMESITE", "CSRF_COOKIE_SAMESITE")
        if getattr(settings, name) not in ("Lax", "Strict")
    ]


@register(Tags.security, deploy=True)
def hsts_lasts_a_year(app_configs=None, **kwargs) -> list[Error]:
    seconds = settings.SECURE_HSTS_SECONDS
    if not seconds or seconds >= HSTS_MIN_SECONDS:
        return []  # unset: Django's security.W004 says so
    return [
        Error(
            f"SECURE_HSTS_SECONDS is {seconds}: browsers forget to insist on HTTPS within days.",
            hint=f"Set SECURE_HSTS_SECONDS to at least {HSTS_MIN_SECONDS} (a year).",
            id="cleanroom.E012",
        )
    ]


@register(Tags.security)
def token_lifetime_is_bounded(app_configs=None, **kwargs) -> list[Error]:
    days = settings.TOKEN_LIFETIME_DAYS
    if days >= 1:
        return []
    return [
        Error(
            f"CLEANROOM_TOKEN_LIFETIME_DAYS is {days}: no token could be created.",
            hint="Set it to a number of days, at least 1.",
            id="cleanroom.E013",
        )
    ]


@register(Tags.security, deploy=True)
def tokens_expire_within_a_quarter(app_configs=None, **kwargs) -> list[Error]:
    days = settings.TOKEN_LIFETIME_DAYS
    if days <= TOKEN_LIFETIME_MAX_DAYS:
        return []
    return [
        Error(
            f"CLEANROOM_TOKEN_LIFETIME_DAYS is {days}: a leaked token would work for that long.",
            hint=f"Set it to at most {TOKEN_LIFETIME_MAX_DAYS} days.",
            id="cleanroom.E014",
        )
    ]


def _is_local_or_address(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@register(Tags.security, deploy=True)
def passkeys_bound_to_the_public_domain(app_configs=None, **kwargs) -> list[Error]:
    """Passkeys are bound to WEBAUTHN_RP_ID for their whole life: one registered under
    localhost works on any machine that serves localhost, and an origin over plain http lets
    whoever sits on the network answer the prompt's page."""
    rp_id = settings.WEBAUTHN_RP_ID
    errors = []
    if _is_local_or_address(rp_id):
        errors.append(
            Error(
                f"CLEANROOM_WEBAUTHN_RP_ID is {rp_id!r}: passkeys registered here would sign in "
                "and approve on any machine that serves that name.",
                hint="Set it to the platform's public domain, e.g. cleanroom.example.org.",
                id="cleanroom.E015",
            )
        )
    for origin in settings.WEBAUTHN_ORIGINS:
        parts = urlsplit(origin)
        host = parts.hostname or ""
        if parts.scheme != "https" or not (host == rp_id or host.endswith("." + rp_id)):
            errors.append(
                Error(
                    f"CLEANROOM_WEBAUTHN_ORIGINS holds {origin!r}: passkey assertions are "
                    f"accepted only from https:// origins on {rp_id!r}.",
                    hint=f"Set it to https://{rp_id} (and its subdomains that serve the pages).",
                    id="cleanroom.E016",
                )
            )
    return errors

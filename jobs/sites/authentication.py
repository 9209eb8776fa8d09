"""Who is calling the site API: a site, by the signature and certificate of its request
(cleanroom/crypto/signed_requests.py), checked against the deployment's site API CA
(SITE_API_CA), with a fresh timestamp and a nonce never seen before (kept in
`SiteRequestNonce` until it could no longer be accepted)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone

from cleanroom.crypto.signed_requests import (
    CERTIFICATE,
    MAX_SKEW_SECONDS,
    SignatureRefused,
    body_digest,
    verify,
)
from jobs.models import SiteRequestNonce
from parties.models import Site

log = logging.getLogger(__name__)


def site_api_ca() -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(Path(settings.SITE_API_CA).read_bytes())
    except FileNotFoundError:
        # The deployment's mistake, not the caller's: said in the log, refused all the same.
        log.error("the site API CA's certificate is missing: %s", settings.SITE_API_CA)
        raise SignatureRefused("this control plane has no site API CA to check it") from None


def signing_site(request: HttpRequest) -> Site:
    """The active site that signed this request; SignatureRefused otherwise."""
    if CERTIFICATE not in request.headers:
        raise SignatureRefused(f"not a signed site request (no {CERTIFICATE} header)")
    signed = verify(
        site_api_ca(),
        request.method or "",
        request.get_full_path(),
        body_digest(request.body),
        dict(request.headers),
    )
    site = Site.objects.select_related("jurisdiction").filter(name=signed.site, active=True).first()
    if site is None:
        raise SignatureRefused(f"{signed.site!r} is not an active site")
    now = timezone.now()
    SiteRequestNonce.objects.filter(expires_at__lt=now).delete()
    try:
        with transaction.atomic():
            SiteRequestNonce.objects.create(
                nonce=signed.nonce,
                site=site.name,
                expires_at=datetime.fromtimestamp(signed.timestamp, UTC)
                + timedelta(seconds=MAX_SKEW_SECONDS),
            )
    except IntegrityError:
        raise SignatureRefused("the request was already made (its nonce is used)") from None
    return site

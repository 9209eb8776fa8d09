"""The site API: what a site's processes ask of the control plane, each request signed by the
site (jobs/sites/authentication.py), each act allowed only on what that site holds
(jobs/sites/services.py). JSON in and out; a refusal is {"refused": reason, "code": ...}."""

from __future__ import annotations

import base64
import functools
import json
import logging
from collections.abc import Callable
from typing import Any, Literal

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from cleanroom.crypto.signed_requests import SignatureRefused
from jobs.engines.base import EngineError
from jobs.engines.mpc.inbox import Delivery
from jobs.engines.orders import Lease
from jobs.execution.records import JobRefused
from jobs.sites import services
from jobs.sites.authentication import signing_site
from parties.models import Site

log = logging.getLogger(__name__)

SiteView = Callable[[Site, Lease, dict[str, Any]], dict[str, Any]]


def _refused(reason: str, code: str, status: int) -> JsonResponse:
    return JsonResponse({"refused": reason, "code": code}, status=status)


def site_api(kind: Literal["job", "step"]) -> Callable[[SiteView], Callable[..., JsonResponse]]:
    """A site API endpoint on one job or step (`kind`, whose id the path names): signed by a
    site, JSON body, refusals as JSON."""

    def decorate(view: SiteView) -> Callable[[HttpRequest, int], JsonResponse]:
        @csrf_exempt  # no cookie is involved: every request is signed
        @require_POST
        @functools.wraps(view)
        def endpoint(request: HttpRequest, pk: int) -> JsonResponse:
            try:
                site = signing_site(request)
            except SignatureRefused as exc:
                log.warning("site API request refused: %s", exc)
                return _refused(f"Not a site's request: {exc}.", "not_a_site", 403)
            try:
                body = json.loads(request.body or b"{}")
                lease = Lease(kind, pk, int(body.get("attempt", 0)))
            except (ValueError, TypeError):
                return _refused("The body is not the JSON this endpoint takes.", "bad_request", 400)
            try:
                return JsonResponse(view(site, lease, body))
            except JobRefused as exc:
                status = 409 if exc.conflict else 403
                return _refused(str(exc), exc.code, status)
            except EngineError as exc:
                return _refused(str(exc), "refused", 409)
            except (KeyError, ValueError, TypeError) as exc:
                return _refused(f"The body lacks or mistypes {exc}.", "bad_request", 400)

        return endpoint

    return decorate


# A TEE job's attempt ----------------------------------------------------------------------------


@site_api("job")
def claim(site: Site, lease: Lease, body: dict[str, Any]) -> dict[str, Any]:
    order = services.claim(lease.id, site)
    return {"order": order.as_dict() if order else None}


@site_api("job")
def attestation(site: Site, lease: Lease, body: dict[str, Any]) -> dict[str, Any]:
    evidence = body.get("evidence")
    services.attestation(
        lease,
        site,
        dict(body["attestation"]),
        accepted=bool(body["accepted"]),
        reason=str(body.get("reason", "")),
        evidence=base64.b64decode(evidence, validate=True) if evidence else None,
    )
    return {}


@site_api("job")
def charge(site: Site, lease: Lease, body: dict[str, Any]) -> dict[str, Any]:
    services.charge_at_key_release(lease, site)
    return {}


@site_api("job")
def placement(site: Site, lease: Lease, body: dict[str, Any]) -> dict[str, Any]:
    """The signing site's share inbox asks whether it may store a delivery for this job."""
    delivery = Delivery.parse(json.dumps(body["delivery"]).encode())
    if delivery.job != lease.id:
        raise ValueError("the delivery's job")
    return {"refused": services.placement_refusal(delivery, str(body["sender"]), site.name)}


# An MPC step's attempt --------------------------------------------------------------------------


@site_api("step")
def claim_step(site: Site, lease: Lease, body: dict[str, Any]) -> dict[str, Any]:
    order = services.claim_step(lease.id, site)
    return {"order": order.as_dict() if order else None}


@site_api("step")
def claim_delivery(site: Site, lease: Lease, body: dict[str, Any]) -> dict[str, Any]:
    order = services.claim_delivery(lease.id, site)
    return {"order": order.as_dict() if order else None}


@site_api("step")
def shares_may_move(site: Site, lease: Lease, body: dict[str, Any]) -> dict[str, Any]:
    return {"allowed": services.shares_may_move(lease, site, int(body["party"]))}


@site_api("step")
def complete(site: Site, lease: Lease, body: dict[str, Any]) -> dict[str, Any]:
    services.complete(lease, site, dict(body["output"]))
    return {}


# Either ----------------------------------------------------------------------------------------


def _renew(site: Site, lease: Lease, body: dict[str, Any]) -> dict[str, Any]:
    return {"expires_at": services.renew(lease, site).isoformat()}


def _progress(site: Site, lease: Lease, body: dict[str, Any]) -> dict[str, Any]:
    going_on = services.progress(lease, site, int(body["percent"]), str(body["message"]))
    return {"cancelled": not going_on}


def _key_released(site: Site, lease: Lease, body: dict[str, Any]) -> dict[str, Any]:
    services.key_released(lease, site, dataset=int(body["dataset"]), reason=str(body["reason"]))
    return {}


def _release(site: Site, lease: Lease, body: dict[str, Any]) -> dict[str, Any]:
    if "extract" in body:
        table = {"extract": body["extract"], "files": services.decode_files(body["files"])}
    else:
        table = dict(body["result"])
    services.release(lease, site, table)
    return {}


def _fail(site: Site, lease: Lease, body: dict[str, Any]) -> dict[str, Any]:
    services.fail(lease, site, str(body["reason"]))
    return {}


EITHER: dict[str, SiteView] = {
    "lease": _renew,
    "progress": _progress,
    "key-released": _key_released,
    "release": _release,
    "fail": _fail,
}
JOB_ACTS = {
    "claim": claim,
    "attestation": attestation,
    "charge": charge,
    "placement": placement,
    **{act: site_api("job")(view) for act, view in EITHER.items()},
}
STEP_ACTS = {
    "claim": claim_step,
    "delivery": claim_delivery,
    "shares-may-move": shares_may_move,
    "complete": complete,
    **{act: site_api("step")(view) for act, view in EITHER.items()},
}

"""The site API's client (jobs.engines.base.ControlPlane over signed HTTP): what a site process
with no database (a TEE host, an owner's worker, an MPC party and its share inbox) uses for
everything the control plane records or decides. Each request is signed with the site's
certificate key (cleanroom/crypto/signed_requests.py); over HTTPS the control plane's server
certificate is checked against the deployment's site API CA."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from cleanroom.crypto.signed_requests import SiteCredentials
from jobs.engines.base import ControlPlaneUnreachable, EngineError, Recorder
from jobs.engines.mpc.inbox import Delivery
from jobs.engines.orders import DeliveryOrder, Lease, StepOrder, WorkOrder
from jobs.execution.leases import LeaseLost

log = logging.getLogger(__name__)

# A request asked again is asked after a pause, doubled each time up to the longest.
FIRST_PAUSE, LONGEST_PAUSE = 0.5, 10.0


class NotDelivered(ControlPlaneUnreachable):
    """The request never reached the control plane (no route, refused, the connection broken
    before the request was sent): asking again cannot make an act happen twice."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class SiteApiClient:
    def __init__(
        self,
        url: str,
        site: str,
        credentials: SiteCredentials,
        ca_file: Path,
        timeout: float = 30,
        patience: float = 0,
    ):
        """`patience`: for how long a request the control plane never received is asked again
        (a site's lease length: past it, the lease is lost anyway)."""
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the site API is reached over HTTP(S), not {url!r}")
        self.url = url.rstrip("/")
        self.site = site
        self.credentials = credentials
        self.timeout = timeout
        self.patience = patience
        self.context = ssl.create_default_context(cafile=str(ca_file))

    @classmethod
    def from_settings(cls, settings: Any, site: str) -> SiteApiClient:
        return cls(
            settings.SITE_API_URL,
            site,
            SiteCredentials.load(
                Path(settings.SITE_API_CERTIFICATE).read_bytes(),
                Path(settings.SITE_API_KEY).read_bytes(),
            ),
            Path(settings.SITE_API_CA),
            patience=settings.JOB_LEASE_SECONDS,
        )

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """The control plane's answer. A request it never received (a link down, the site API
        restarting) is asked again, signed anew, for up to `patience` seconds; one it may have
        received but did not answer is not (an act is not done twice)."""
        deadline = time.monotonic() + self.patience
        pause = FIRST_PAUSE
        while True:
            try:
                return self._post_once(path, body)
            except NotDelivered as exc:
                if time.monotonic() + pause > deadline:
                    raise
                log.warning("%s: %s; asked again in %g s", path, exc, pause)
                time.sleep(pause)
                pause = min(2 * pause, LONGEST_PAUSE)

    def _post_once(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode()
        full_path = urllib.parse.urlsplit(self.url).path + path
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            self.url + path,
            data=data,
            method="POST",
            headers={
                "Content-Type": "application/json",
                **self.credentials.headers("POST", full_path, data),
            },
        )
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, timeout=self.timeout, context=self.context
            ) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            if exc.code >= 500:
                raise ControlPlaneUnreachable(f"the site API answered {exc.code}") from None
            payload = json.loads(exc.read() or b"{}")
            refused = payload.get("refused", f"refused ({exc.code})")
            if payload.get("code") == LeaseLost.code:
                raise LeaseLost(refused) from None
            raise EngineError(refused) from None
        except urllib.error.URLError as exc:
            # urllib wraps what fails while connecting and sending; the answer's failures are not.
            raise NotDelivered(f"the site API is out of reach: {exc.reason}") from None
        except (http.client.HTTPException, ConnectionError, TimeoutError) as exc:
            raise ControlPlaneUnreachable(f"{type(exc).__name__}: {exc}") from None

    def path_of(self, lease: Lease, act: str) -> str:
        return f"/{lease.kind}s/{lease.id}/{act}"

    def _claim(self, path: str) -> dict[str, Any] | None:
        """A claim's order, or None when there is nothing to do. Asked until the control plane
        answers: the task's message is already this worker's, and a claim given up would leave
        the job or step queued as sent (or, for a delivery, its shares stored and unclaimed),
        which nothing sends again. (A claim whose answer was lost is answered nothing to do
        when asked again, its lease live: the sweep sends it again once that lease runs out.)"""
        pause = FIRST_PAUSE
        while True:
            try:
                order: dict[str, Any] | None = self.post(path, {})["order"]
                return order
            except ControlPlaneUnreachable as exc:
                log.warning("claim %s: %s; asked again in %g s", path, exc, pause)
                time.sleep(pause)
                pause = min(2 * pause, LONGEST_PAUSE)

    def claim(self, job_id: int) -> WorkOrder | None:
        order = self._claim(f"/jobs/{job_id}/claim")
        return None if order is None else WorkOrder.from_dict(order)

    def claim_step(self, step_id: int) -> StepOrder | None:
        order = self._claim(f"/steps/{step_id}/claim")
        return None if order is None else StepOrder.from_dict(order)

    def claim_delivery(self, step_id: int) -> DeliveryOrder | None:
        order = self._claim(f"/steps/{step_id}/delivery")
        return None if order is None else DeliveryOrder.from_dict(order)

    def renew(self, lease: Lease) -> datetime:
        answer = self.post(self.path_of(lease, "lease"), {"attempt": lease.attempt})
        return datetime.fromisoformat(answer["expires_at"])

    def recorder(self, lease: Lease, job_id: int) -> Recorder:
        return SiteApiRecorder(self, lease, job_id)

    def complete(self, lease: Lease, output: dict[str, Any]) -> None:
        self.post(self.path_of(lease, "complete"), {"attempt": lease.attempt, "output": output})

    def release(self, lease: Lease, table: dict[str, Any]) -> None:
        if "extract" in table:
            body = {
                "extract": table["extract"],
                "files": {name: _b64(content) for name, content in table["files"].items()},
            }
        else:
            body = {"result": table}
        self.post(self.path_of(lease, "release"), {"attempt": lease.attempt, **body})

    def fail(self, lease: Lease, reason: str) -> None:
        self.post(self.path_of(lease, "fail"), {"attempt": lease.attempt, "reason": reason})

    def placement(self, delivery: Delivery, sender: str) -> str | None:
        answer = self.post(
            f"/jobs/{delivery.job}/placement", {"delivery": asdict(delivery), "sender": sender}
        )
        refused: str | None = answer["refused"]
        return refused


class SiteApiRecorder:
    """The engines' Recorder for an attempt a site holds, over the site API."""

    def __init__(self, client: SiteApiClient, lease: Lease, job_id: int):
        self.client = client
        self.lease = lease
        self.job_id = job_id

    def _post(self, job_id: int, act: str, body: dict[str, Any]) -> dict[str, Any]:
        if job_id != self.job_id:
            raise EngineError(f"This attempt is of job {self.job_id}, not of job {job_id}.")
        return self.client.post(
            self.client.path_of(self.lease, act), {"attempt": self.lease.attempt, **body}
        )

    def attestation(
        self,
        job_id: int,
        attestation: dict[str, Any],
        *,
        accepted: bool,
        reason: str = "",
        evidence: bytes | None = None,
    ) -> None:
        self._post(
            job_id,
            "attestation",
            {
                "attestation": attestation,
                "accepted": accepted,
                "reason": reason,
                "evidence": _b64(evidence) if evidence else None,
            },
        )

    def charge_at_key_release(self, job_id: int) -> None:
        self._post(job_id, "charge", {})

    def key_released(self, job_id: int, *, dataset: int, site: str, reason: str) -> None:
        self._post(job_id, "key-released", {"dataset": dataset, "reason": reason})

    def shares_may_move(self, step: int, party: int) -> bool:
        if step != self.lease.id:
            raise EngineError(f"This attempt holds step {self.lease.id}, not step {step}.")
        answer = self.client.post(
            self.client.path_of(self.lease, "shares-may-move"),
            {"attempt": self.lease.attempt, "party": party},
        )
        return bool(answer["allowed"])

    def progress(self, job_id: int, percent: int, message: str) -> bool:
        answer = self._post(job_id, "progress", {"percent": percent, "message": message})
        return not answer["cancelled"]

"""The site API's client (jobs.engines.base.ControlPlane over signed HTTP): what a site process
with no database uses for everything the control plane records or decides. Each request is
signed with the site's certificate key (jobs/sites/signing.py); over HTTPS the control plane's
server certificate is checked against the deployment's site API CA."""

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
from datetime import datetime
from pathlib import Path
from typing import Any

from jobs.engines.base import ControlPlaneUnreachable, EngineError, Recorder
from jobs.engines.orders import Lease, WorkOrder
from jobs.execution.leases import LeaseLost
from jobs.models import JobStep
from jobs.sites.signing import SiteCredentials

log = logging.getLogger(__name__)

# A claim the control plane did not answer is asked again after a pause, doubled each time up
# to the longest.
CLAIM_FIRST_PAUSE, CLAIM_LONGEST_PAUSE = 0.5, 10.0


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class SiteApiClient:
    def __init__(
        self, url: str, site: str, credentials: SiteCredentials, ca_file: Path, timeout: float = 30
    ):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the site API is reached over HTTP(S), not {url!r}")
        self.url = url.rstrip("/")
        self.site = site
        self.credentials = credentials
        self.timeout = timeout
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
        )

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
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
            raise ControlPlaneUnreachable(f"the site API is out of reach: {exc.reason}") from None
        except (http.client.HTTPException, ConnectionError, TimeoutError) as exc:
            raise ControlPlaneUnreachable(f"{type(exc).__name__}: {exc}") from None

    def claim(self, job_id: int) -> WorkOrder | None:
        """The job's work order, or None when there is nothing to do. Asked until the control
        plane answers: the task's message is already this worker's, and a claim given up would
        leave the job queued as sent, which nothing sends again. (A claim whose answer was lost
        is answered nothing to do when asked again, its lease live: the sweep sends the job
        again once that lease runs out.)"""
        pause = CLAIM_FIRST_PAUSE
        while True:
            try:
                order = self.post(f"/jobs/{job_id}/claim", {})["order"]
            except ControlPlaneUnreachable as exc:
                log.warning("claim of job %s: %s; asked again in %g s", job_id, exc, pause)
                time.sleep(pause)
                pause = min(2 * pause, CLAIM_LONGEST_PAUSE)
                continue
            return None if order is None else WorkOrder.from_dict(order)

    def renew(self, lease: Lease) -> datetime:
        answer = self.post(f"/jobs/{lease.id}/lease", {"attempt": lease.attempt})
        return datetime.fromisoformat(answer["expires_at"])

    def recorder(self, lease: Lease) -> Recorder:
        return SiteApiRecorder(self, lease)

    def release(self, lease: Lease, table: dict[str, Any]) -> None:
        if "extract" in table:
            body = {
                "extract": table["extract"],
                "files": {name: _b64(content) for name, content in table["files"].items()},
            }
        else:
            body = {"result": table}
        self.post(f"/jobs/{lease.id}/release", {"attempt": lease.attempt, **body})

    def fail(self, lease: Lease, reason: str) -> None:
        self.post(f"/jobs/{lease.id}/fail", {"attempt": lease.attempt, "reason": reason})


class SiteApiRecorder:
    """The engines' Recorder for an attempt a site holds, over the site API."""

    def __init__(self, client: SiteApiClient, lease: Lease):
        self.client = client
        self.lease = lease

    def _post(self, job_id: int, act: str, body: dict[str, Any]) -> dict[str, Any]:
        if job_id != self.lease.id:
            raise EngineError(f"This attempt holds job {self.lease.id}, not job {job_id}.")
        return self.client.post(f"/jobs/{job_id}/{act}", {"attempt": self.lease.attempt, **body})

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

    def shares_may_move(self, step: JobStep, party: JobStep) -> bool:
        raise EngineError("MPC steps do not run through the site API yet.")

    def progress(self, job_id: int, percent: int, message: str) -> bool:
        answer = self._post(job_id, "progress", {"percent": percent, "message": message})
        return not answer["cancelled"]

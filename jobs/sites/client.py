"""The site API's client (jobs.engines.base.ControlPlane over signed HTTP): what a site process
with no database (a TEE host, an owner's worker, an MPC party and its share inbox) uses for
everything the control plane records or decides. Each request is signed with the site's
certificate key (cleanroom/crypto/signed_requests.py); over HTTPS the control plane's server
certificate is checked against the deployment's site API CA."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
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

    def path_of(self, lease: Lease, act: str) -> str:
        return f"/{lease.kind}s/{lease.id}/{act}"

    def claim(self, job_id: int) -> WorkOrder | None:
        order = self.post(f"/jobs/{job_id}/claim", {})["order"]
        return None if order is None else WorkOrder.from_dict(order)

    def claim_step(self, step_id: int) -> StepOrder | None:
        order = self.post(f"/steps/{step_id}/claim", {})["order"]
        return None if order is None else StepOrder.from_dict(order)

    def claim_delivery(self, step_id: int) -> DeliveryOrder | None:
        order = self.post(f"/steps/{step_id}/delivery", {})["order"]
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

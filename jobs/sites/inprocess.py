"""The in-process port (jobs.engines.base.ControlPlane): a site worker that is a process of the
control plane, with its database (the embedded default, and the tests that run a site's worker
beside the control plane), calls the services directly."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jobs.engines.base import Recorder
from jobs.engines.orders import Lease, WorkOrder
from jobs.execution import leases
from jobs.execution.recorder import JobRecorder
from jobs.sites import services


class InProcessControlPlane:
    def __init__(self, site: str):
        self.site = site

    def claim(self, job_id: int) -> WorkOrder | None:
        return services.claim_attempt(job_id, self.site)

    def renew(self, lease: Lease) -> datetime:
        return leases.renew(lease, self.site)

    def recorder(self, lease: Lease) -> Recorder:
        return JobRecorder()

    def release(self, lease: Lease, table: dict[str, Any]) -> None:
        services.release(lease, None, table)

    def fail(self, lease: Lease, reason: str) -> None:
        services.fail(lease, None, reason)

"""The in-process port (jobs.engines.base.ControlPlane): a site worker that is a process of the
control plane, with its database (the embedded default, and the tests that run a site's worker
beside the control plane), calls the services directly."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jobs.engines.base import Recorder
from jobs.engines.mpc.inbox import Delivery
from jobs.engines.orders import DeliveryOrder, Lease, StepOrder, WorkOrder
from jobs.execution import leases
from jobs.execution.recorder import JobRecorder
from jobs.sites import services


class InProcessControlPlane:
    def __init__(self, site: str):
        self.site = site

    def claim(self, job_id: int) -> WorkOrder | None:
        return services.claim_attempt(job_id, self.site)

    def claim_step(self, step_id: int) -> StepOrder | None:
        return services.claim_step_attempt(step_id, self.site)

    def claim_delivery(self, step_id: int) -> DeliveryOrder | None:
        return services.claim_delivery(step_id, None)

    def renew(self, lease: Lease) -> datetime:
        return leases.renew(lease, self.site)

    def recorder(self, lease: Lease, job_id: int) -> Recorder:
        return JobRecorder()

    def complete(self, lease: Lease, output: dict[str, Any]) -> None:
        services.complete(lease, None, output)

    def release(self, lease: Lease, table: dict[str, Any]) -> None:
        services.release(lease, None, table)

    def fail(self, lease: Lease, reason: str) -> None:
        services.fail(lease, None, reason)

    def placement(self, delivery: Delivery, sender: str) -> str | None:
        return services.placement_refusal(delivery, sender, self.site)

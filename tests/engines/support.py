"""The engines as the workers build them: configured from this test run's settings, recording
through the job lifecycle."""

from __future__ import annotations

from django.conf import settings

from jobs.engines.mpc.config import MpcConfig
from jobs.engines.orders import WorkOrder
from jobs.engines.registry import configured
from jobs.engines.tee.engine import TeeEngine
from jobs.engines.tee.trust import TeeConfig
from jobs.execution.recorder import JobRecorder
from jobs.models import Job


def tee_config() -> TeeConfig:
    return TeeConfig.from_settings(settings)


def mpc_config() -> MpcConfig:
    return MpcConfig.from_settings(settings)


def order_of(job: Job) -> WorkOrder:
    """The work order of a job's claimed attempt, as its site receives it."""
    return TeeEngine.work_order(job, tee_config())


def tee_engine():
    return configured("tee", settings=settings, recorder=JobRecorder())

"""The interface the job runner knows: an engine takes a started job and returns the
differentially private table it releases, reporting progress on the way (the TEE: one step at
one site). An engine whose job runs as steps at several sites (MPC) does each claimed step's
work and returns what the step leaves for the next ones, and delivers the table once enough
steps are done; the runner dispatches and claims the steps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from django.conf import settings

from jobs.models import Job, JobStep

# progress(percent, message) -> False when the job was cancelled meanwhile
Progress = Callable[[int, str], bool]


class EngineError(Exception):
    """The engine could not produce a result; the message says why, for the job and the audit."""


class Engine(Protocol):
    name: str

    def run(self, job: Job, progress: Progress) -> dict[str, Any]: ...


class StepEngine(Protocol):
    name: str

    def run_step(self, step: JobStep) -> dict[str, Any]: ...

    def deliver(self, job: Job, outputs: list[JobStep]) -> dict[str, Any]: ...


def minimal_environment(home: str) -> dict[str, str]:
    """What an engine's separate process (an enclave, an MPC party) gets of the worker's
    environment: nothing, so no database URL, no secrets, no key directory."""
    return {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(settings.BASE_DIR),
        "HOME": home,
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "random",
    }

"""The one interface the job runner knows: an engine takes a started job and returns the
differentially private table it releases, reporting progress on the way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from jobs.models import Job

# progress(percent, message) -> False when the job was cancelled meanwhile
Progress = Callable[[int, str], bool]


class EngineError(Exception):
    """The engine could not produce a result; the message says why, for the job and the audit."""


class Engine(Protocol):
    name: str

    def run(self, job: Job, progress: Progress) -> dict[str, Any]: ...

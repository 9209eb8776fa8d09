"""A work order: everything a TEE site needs to run one attempt of a job, as plain values.

The control plane builds it when a site claims the attempt (the engine's `work_order`, from the
database);
the site's engine runs from it alone, so a site process needs no database. It travels as JSON
(`as_dict`, `from_dict`) through the site API, or stays an object in the embedded default's
in-process port. What the control plane must still record or decide while the attempt runs
(progress, verdicts, the charge, the release) goes through the `ControlPlane` port
(jobs/engines/base.py).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from jobs.models import Job, JobStep


@dataclass(frozen=True)
class DatasetOrder:
    """One dataset the job reads: where its encrypted file is, and what the host relays to its
    owner's key service to have the data key released to the enclave."""

    name: str  # its qualified name, as the canonical form names it
    dataset: int
    owner: str  # the owner organisation's slug
    jurisdiction: str  # whose storage root holds the file
    storage_path: str  # relative to that root
    approval: dict[str, Any]  # the owner's signed approval, which its key service verifies
    kek_id: str
    wrapped_key: bytes
    key_context: dict[str, str]
    # The owner's own key service (an HTTP(S) address), or "" for the embedded one, which runs
    # only in the control plane's process (the embedded default's in-process port).
    key_service: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dataset": self.dataset,
            "owner": self.owner,
            "jurisdiction": self.jurisdiction,
            "storage_path": self.storage_path,
            "approval": self.approval,
            "kek_id": self.kek_id,
            "wrapped_key": base64.b64encode(self.wrapped_key).decode(),
            "key_context": self.key_context,
            "key_service": self.key_service,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetOrder:
        return cls(**{**data, "wrapped_key": base64.b64decode(data["wrapped_key"])})


@dataclass(frozen=True)
class WorkOrder:
    """One attempt of a TEE job at its site."""

    job: int
    attempt: int
    mechanism: str
    query: int
    digest: str  # of the approved canonical form, which the enclave's attestation binds
    site: str
    canonical: dict[str, Any]
    synthetic: bool  # a synthetic extract rather than a table
    datasets: tuple[DatasetOrder, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "attempt": self.attempt,
            "mechanism": self.mechanism,
            "query": self.query,
            "digest": self.digest,
            "site": self.site,
            "canonical": self.canonical,
            "synthetic": self.synthetic,
            "datasets": [d.as_dict() for d in self.datasets],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkOrder:
        return cls(
            **{
                **data,
                "datasets": tuple(DatasetOrder.from_dict(d) for d in data["datasets"]),
            }
        )


@dataclass(frozen=True)
class Lease:
    """What a site holds: an attempt of a job or of a step."""

    kind: Literal["job", "step"]
    id: int
    attempt: int

    @classmethod
    def of(cls, held: Job | JobStep) -> Lease:
        return cls("job" if isinstance(held, Job) else "step", held.pk, held.attempt)

"""Work orders: everything a site needs to run one attempt, as plain values: a TEE job's
attempt (`WorkOrder`), an MPC step's (`StepOrder`: an owner's input, a compute party) or an MPC
job's delivery (`DeliveryOrder`).

The control plane builds one when a site claims the attempt (the engine's `work_order`,
`step_order` or `delivery_order`, from the database); the site's engine runs from it alone, so a
site process needs no database. It travels as JSON
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
class PartyOrder:
    """A compute party of an MPC job: its index, and the site it runs at."""

    index: int
    site: str
    site_id: int  # the single-host default places the site's share inbox by it


@dataclass(frozen=True)
class SourceOrder:
    """What one owner's input step sent one compute party: the delivery its inbox stored."""

    step: int
    attempt: int
    dataset: int
    length: int
    sha256: str


@dataclass(frozen=True)
class StepOrder:
    """One attempt of an MPC job's input or compute step at its site."""

    job: int
    step: int
    attempt: int
    kind: str  # Stage.INPUT or Stage.COMPUTE
    name: str
    mechanism: str
    query: int
    site: str
    canonical: dict[str, Any]
    parties: tuple[PartyOrder, ...]  # every compute party, in party order
    dataset: DatasetOrder | None = None  # an input step's
    party: int | None = None  # a compute step's own index
    sources: tuple[SourceOrder, ...] = ()  # a compute step's input deliveries
    delivery_key: str = ""  # base64 P-256 public key the noisy output shares are sealed to

    def as_dict(self) -> dict[str, Any]:
        return {
            **{name: getattr(self, name) for name in _SCALARS},
            "parties": [vars(p) for p in self.parties],
            "dataset": self.dataset.as_dict() if self.dataset else None,
            "sources": [vars(s) for s in self.sources],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepOrder:
        return cls(
            **{name: data[name] for name in _SCALARS},
            parties=tuple(PartyOrder(**p) for p in data["parties"]),
            dataset=DatasetOrder.from_dict(data["dataset"]) if data["dataset"] else None,
            sources=tuple(SourceOrder(**s) for s in data["sources"]),
        )


_SCALARS = (
    "job", "step", "attempt", "kind", "name", "mechanism", "query", "site", "canonical",
    "party", "delivery_key",
)  # fmt: skip


@dataclass(frozen=True)
class DeliveryOrder:
    """The delivery of an MPC job, claimed (and the job charged) by a compute party's site:
    the parties' noisy output shares, sealed to the receiver's key service, which opens them."""

    job: int
    step: int  # the delivery step
    attempt: int
    mechanism: str
    canonical: dict[str, Any]
    receiver: str  # the receiving organisation's slug
    key_service: str  # its key service's address ("": the embedded one, in-process only)
    shares: dict[int, bytes]  # party index -> sealed noisy output share

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "step": self.step,
            "attempt": self.attempt,
            "mechanism": self.mechanism,
            "canonical": self.canonical,
            "receiver": self.receiver,
            "key_service": self.key_service,
            "shares": {str(p): base64.b64encode(b).decode() for p, b in self.shares.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeliveryOrder:
        return cls(
            **{
                **data,
                "shares": {int(p): base64.b64decode(b) for p, b in data["shares"].items()},
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

"""What the job lifecycle knows of an engine, and what an engine may ask of the lifecycle.

An engine (one folder under jobs/engines/, one line in registry.py) says why it cannot run a
planned query (`refusal`), where its steps run (`place`), which step rows a job of it has
(`create_steps`), and runs them. There are two shapes: an engine whose job is one step at one
site (the TEE: `run`), and one whose job is steps at several sites (MPC: `run_step` for each
claimed step, `deliver` once `outputs_needed` of them are done); the lifecycle dispatches and
claims the steps either way.

What must be recorded on the way (attestation verdicts, the charge before keys leave, key
releases, share transfers, progress) an engine asks of its `Recorder`, which the job
lifecycle implements (`jobs.execution.recorder.JobRecorder`): no engine imports the
lifecycle. Each attempt runs from a work order (jobs/engines/orders.py) with no database; its
site has everything recorded or decided through the `ControlPlane` port, in-process or over the
site API (jobs/sites/). Its settings come as a configuration object built by the registry
(`from_settings`), so no engine reads Django's.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

from cleanroom.residency import Decision, StepKind, TransferRules, decide
from dataplane.mechanisms import Stage
from dataplane.sql.plan import ParsedQuery
from jobs.engines.orders import DatasetOrder, DeliveryOrder, Lease, StepOrder, WorkOrder
from jobs.models import Approval, Job, JobStep, Query, RoomDataset
from parties.keys import KeyServiceAccess
from parties.models import Dataset, DatasetVersion, Site

# progress(percent, message) -> False when the job was cancelled meanwhile
Progress = Callable[[int, str], bool]


class EngineError(Exception):
    """The engine could not produce a result; the message says why, for the job and the audit."""


class Recorder(Protocol):
    """What an engine has the job lifecycle record, each in its own transaction and audited."""

    def attestation(
        self,
        job_id: int,
        attestation: dict[str, Any],
        *,
        accepted: bool,
        reason: str = "",
        evidence: bytes | None = None,
    ) -> None: ...

    def charge_at_key_release(self, job_id: int) -> None:
        """Charge the job before a data key leaves the key service; EngineError when the job
        may not have keys (not running, cancelled, or already charged)."""

    def key_released(self, job_id: int, *, dataset: int, site: str, reason: str) -> None: ...

    def shares_may_move(self, step: int, party: int) -> bool:
        """Decide and audit whether input step `step`'s shares may go to the site of its job's
        compute party `party`."""

    def progress(self, job_id: int, percent: int, message: str) -> bool:
        """Record progress; False when the job was cancelled meanwhile."""


class ControlPlaneUnreachable(EngineError):
    """The control plane did not answer (its database, or its site API, out of reach): a lease
    renewal is tried again at the next beat."""


class ControlPlane(Protocol):
    """Everything a site has the control plane record or decide for the attempts it runs, as
    that site: the in-process port (jobs.sites.inprocess, the embedded default's) calls the
    services, the site API's client (jobs.sites.client) asks over signed HTTP. An attempt is a
    TEE job's (`claim`), an MPC step's (`claim_step`) or an MPC job's delivery
    (`claim_delivery`); each claim grants a lease, and each act names the lease it is for.
    Refusals raise EngineError; an act on a lease the site does not hold, `LeaseLost`
    (jobs.execution.leases)."""

    site: str

    def claim(self, job_id: int) -> WorkOrder | None:
        """Claim the job's next attempt at this site; None when there is nothing to do."""

    def claim_step(self, step_id: int) -> StepOrder | None:
        """Claim the step's next attempt at this site; None when there is nothing to do."""

    def claim_delivery(self, step_id: int) -> DeliveryOrder | None:
        """Once compute step `step_id` (this site's) is done: claim its job's delivery, which
        charges the job, if enough noisy output shares are stored and no one else holds it;
        None otherwise."""

    def renew(self, lease: Lease) -> datetime:
        """Extend the lease held; LeaseLost when this site does not hold it."""

    def recorder(self, lease: Lease, job_id: int) -> Recorder:
        """What the engine records through while it holds `lease` on a step of job `job_id`
        (progress, verdicts, the charge at key release, each key released, share transfers)."""

    def complete(self, lease: Lease, output: dict[str, Any]) -> None:
        """Hand over an MPC step's output (what its input step sent, a sealed noisy share)."""

    def release(self, lease: Lease, table: dict[str, Any]) -> None:
        """Hand over the result of a TEE job or an MPC delivery: a noised table, or a synthetic
        extract with its files."""

    def fail(self, lease: Lease, reason: str) -> None:
        """End the attempt as failed (its job too, unless an MPC job can do without it)."""

    def placement(self, delivery: Any, sender: str) -> str | None:
        """Why this site's share inbox must refuse `delivery` (jobs.engines.mpc.inbox) from
        `sender`, as the job's steps were placed; None when it may store it."""


@dataclass(frozen=True)
class PlannedStep:
    """One step of a plan: what it does, at which site (None: the control plane), what
    residency decided for it, and what it reads (input, enclave), which party it is (compute)
    or whom it delivers to (deliver). `as_dict()` is how the plan reports and stores it."""

    name: str
    stage: Stage
    site: str | None
    jurisdiction: str | None
    decisions: tuple[Decision, ...]
    reads: tuple[str, ...] = ()
    party: int | None = None
    receiver: str | None = None

    @classmethod
    def at(
        cls, name: str, stage: Stage, site: Site | None, decisions: list[Decision], **extra: Any
    ) -> PlannedStep:
        return cls(
            name=name,
            stage=stage,
            site=site.name if site else None,
            jurisdiction=site.jurisdiction.code if site else None,
            decisions=tuple(decisions),
            **extra,
        )

    def as_dict(self) -> dict[str, Any]:
        planned: dict[str, Any] = {
            "step": self.name,
            "kind": self.stage.value,
            "site": self.site,
            "jurisdiction": self.jurisdiction,
            "decisions": [d.as_dict() for d in self.decisions],
        }
        if self.reads:
            planned["reads"] = list(self.reads)
        if self.party is not None:
            planned["party"] = self.party
        if self.receiver is not None:
            planned["receiver"] = self.receiver
        return planned


@dataclass
class Planned:
    """Where an engine places a query: its steps and any reason a step has no site."""

    steps: list[PlannedStep] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class EngineConfig(Protocol):
    """An engine's configuration, built from the deployment's settings (an object with them as
    attributes) by the registry."""

    @classmethod
    def from_settings(cls, settings: Any) -> Self: ...


class Engine(Protocol):
    """Planning asks the engine's class (no configuration needed); running, an instance built
    by the registry with its configuration and recorder. An engine subclasses SiteEngine or
    StepEngine, so the registry's table of engine classes is checked against them."""

    name: ClassVar[str]
    # A job of steps at several sites (StepEngine), not one step at one site.
    in_steps: ClassVar[bool]
    Config: ClassVar[type[EngineConfig]]

    def __init__(self, config: Any, recorder: Recorder) -> None: ...

    @classmethod
    def refusal(cls, parsed: ParsedQuery, contributions: list[RoomDataset]) -> str | None:
        """Why this engine cannot run the query, or None when it can."""

    @classmethod
    def place(cls, parsed: ParsedQuery, contributions: list[RoomDataset]) -> Planned: ...

    @classmethod
    def create_steps(cls, job: Job, planned: list[PlannedStep], config: Any) -> list[JobStep]:
        """The job's step rows, created as the plan placed them (none for a one-step engine),
        with what they need from the engine's configuration (the MPC delivery key)."""

    @classmethod
    def noise_statement(cls, measurements: dict[str, Any], groups: int) -> dict[str, Any]:
        """What the plan states of how the engine draws noise, beyond the measurements."""


class SiteEngine(Engine, Protocol):
    """A job that is one step at one site (`Job.site`)."""

    @classmethod
    def work_order(cls, job: Job, config: Any) -> WorkOrder:
        """What the job's site needs to run the attempt just claimed, with no database."""

    def run(self, order: WorkOrder, progress: Progress) -> dict[str, Any]: ...


class StepEngine(Engine, Protocol):
    """A job of steps at several sites (`JobStep`)."""

    @classmethod
    def outputs_needed(cls, compute_steps: int) -> int:
        """How many compute steps' outputs the delivery needs."""

    @classmethod
    def step_order(cls, step: JobStep, config: Any) -> StepOrder:
        """What the step's site needs to run the attempt just claimed, with no database."""

    @classmethod
    def delivery_order(
        cls, delivery: JobStep, outputs: list[JobStep], config: Any
    ) -> DeliveryOrder:
        """What the site that claimed the delivery needs to open and recombine `outputs`."""

    def run_step(self, order: StepOrder) -> dict[str, Any]: ...

    def deliver(self, order: DeliveryOrder) -> dict[str, Any]: ...


def site_of(step: JobStep) -> Site:
    """The site an input or compute step runs at (only the delivery has none)."""
    if step.site is None:
        raise EngineError(f"The step '{step.name}' has no site to run at.")
    return step.site


def job_site_of(job: Job) -> Site:
    """The site a job of one step at one site (the TEE's enclave) runs at."""
    if job.site is None:
        raise EngineError(f"The job {job.pk} runs as steps: it has no site of its own.")
    return job.site


def party_of(step: JobStep) -> int:
    """The MPC party a compute step is."""
    if step.party is None:
        raise EngineError(f"The step '{step.name}' is not a compute party.")
    return step.party


def dataset_of(step: JobStep) -> Dataset:
    """The dataset an input step reads."""
    if step.dataset is None:
        raise EngineError(f"The step '{step.name}' reads no dataset.")
    return step.dataset


def canonical_of(query: Query) -> dict[str, Any]:
    """The canonical form a query was submitted, approved and runs as."""
    if query.canonical is None:
        raise EngineError(f"The query {query.pk} was never submitted: it has no canonical form.")
    canonical: dict[str, Any] = query.canonical
    return canonical


def dataset_orders(query: Query, key_services: KeyServiceAccess) -> list[DatasetOrder]:
    """What a site needs of each dataset the approved query reads (the version it names): its
    file, its owner's approval, its wrapped key, and the owner's key service as this
    deployment configures them."""
    canonical = canonical_of(query)
    orders = []
    for dataset_id, item in zip(query.dataset_ids, canonical["datasets"], strict=True):
        version = DatasetVersion.objects.select_related(
            "dataset__organization", "dataset__jurisdiction"
        ).get(dataset_id=dataset_id, number=item["version"])
        owner = version.dataset.organization
        approval = Approval.objects.get(
            query=query,
            organization=owner,
            decision=Approval.Decision.APPROVE,
            revoked_at__isnull=True,
        )
        orders.append(
            DatasetOrder(
                name=item["name"],
                dataset=version.dataset_id,
                owner=owner.slug,
                jurisdiction=version.dataset.jurisdiction.code,
                storage_path=version.storage_path,
                approval=approval.evidence,
                kek_id=version.kek_id,
                wrapped_key=bytes(version.wrapped_data_key),
                key_context=version.key_context,
                key_service=key_services.urls.get(owner.slug, ""),
            )
        )
    return orders


def active_sites(kind: str) -> list[Site]:
    return list(Site.objects.filter(kind=kind, active=True).select_related("jurisdiction"))


def transfer_rules(contributions: list[RoomDataset]) -> dict[int, TransferRules]:
    """Each dataset's transfer rules, read once for every site an engine considers."""
    return {c.dataset_id: c.dataset.jurisdiction.rules() for c in contributions}


def allowed_everywhere(
    kind: StepKind, site: Site, contributions: list[RoomDataset], rules: dict[int, TransferRules]
) -> bool:
    return all(
        decide(kind, data=rules[c.dataset_id], site=site.place()).allowed for c in contributions
    )


def minimal_environment(home: str, code_root: Path) -> dict[str, str]:
    """What an engine's separate process (an enclave, an MPC party) gets of the worker's
    environment: nothing, so no database URL, no secrets, no key directory."""
    return {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(code_root),
        "HOME": home,
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "random",
    }


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def dies_with_its_host() -> Callable[[], None] | None:
    """What an engine's separate process runs before it starts its program (`preexec_fn`), so
    that it dies with its host: a worker killed outright (SIGKILL runs no handler, no
    `finally`) leaves no enclave or MPC party running. Linux's parent-death signal, which
    fires when the thread that started the process ends: an engine waits for its process in
    the thread that started it. None elsewhere (no such signal there; run the worker under a
    supervisor that kills its process group, as systemd's control group does)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before the fork, not after
    host = os.getpid()

    def arm() -> None:
        # Between fork and exec: no imports, no locks, nothing but two system calls.
        if prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            os._exit(126)
        if os.getppid() != host:
            os._exit(126)  # the host died before the signal was armed

    return arm


def compute_steps(job_id: int) -> list[JobStep]:
    """An MPC job's compute parties, in party order."""
    return list(
        JobStep.objects.filter(job_id=job_id, kind=Stage.COMPUTE)
        .select_related("site__jurisdiction")
        .order_by("party")
    )


def input_steps(job_id: int) -> list[JobStep]:
    """An MPC job's input steps, one per dataset."""
    return list(
        JobStep.objects.filter(job_id=job_id, kind=Stage.INPUT)
        .select_related("site__jurisdiction", "dataset")
        .order_by("dataset_id")
    )

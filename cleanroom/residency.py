"""The residency decision: may this step, on data pinned to this jurisdiction, happen there?

One function for everyone who asks: the planner (before approval), the dispatcher, the worker
that receives a step (it knows its own site), and the key service before it unwraps a data key.
It decides from plain values (a jurisdiction's transfer rules, a site, a receiver), which the
parties app builds from the rules operators manage (`Jurisdiction.rules()`, `Site.place()`,
`Organization.receiver()`): the kernel reads no database and knows no app.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class SiteKind(StrEnum):
    WORKER = "worker"  # an owner's or a host's ordinary worker: reads rows in plaintext
    MPC_PARTY = "mpc-party"  # an MPC compute party: receives secret shares, never rows
    TEE = "tee"  # a host of attested enclaves: rows are read inside the enclave only


@dataclass(frozen=True)
class TransferRules:
    """Where data pinned to a jurisdiction may go, by jurisdiction code."""

    code: str
    raw_processing_in: frozenset[str]
    enclave_processing_in: frozenset[str]
    shares_may_go_to: frozenset[str]
    outputs_may_go_to: frozenset[str]


@dataclass(frozen=True)
class Place:
    """A site: where a data-plane step runs."""

    name: str
    kind: SiteKind
    jurisdiction: str
    active: bool = True


@dataclass(frozen=True)
class Receiver:
    """An organisation a result goes to, by its home jurisdiction."""

    ref: str  # org:<id>
    name: str
    jurisdiction: str


class StepKind(StrEnum):
    PROCESS_ROWS = "process_rows"  # plaintext rows are read at a site
    RECEIVE_SHARES = "receive_shares"  # secret shares of the data are sent to a site
    DELIVER_OUTPUT = "deliver_output"  # a differentially private result goes to an organisation


@dataclass(frozen=True)
class Decision:
    kind: StepKind
    allowed: bool
    reason: str
    data_jurisdiction: str
    destination_jurisdiction: str
    allowed_jurisdictions: tuple[str, ...]
    site: str | None = None
    receiver: str | None = None

    def as_dict(self) -> dict:
        return {
            "kind": self.kind.value,
            "allowed": self.allowed,
            "reason": self.reason,
            "data_jurisdiction": self.data_jurisdiction,
            "site_jurisdiction": self.destination_jurisdiction,
            "allowed_jurisdictions": list(self.allowed_jurisdictions),
            "site": self.site,
            "receiver": self.receiver,
        }


def decide(
    kind: StepKind,
    *,
    data: TransferRules,
    site: Place | None = None,
    receiver: Receiver | None = None,
) -> Decision:
    if kind == StepKind.DELIVER_OUTPUT:
        if receiver is None:
            raise ValueError("an output decision needs the receiving organisation")
        destination = receiver.jurisdiction
        allowed_in = tuple(sorted(data.outputs_may_go_to))
        what = f"results computed from {data.code} data to {receiver.name} ({destination})"
    else:
        if site is None:
            raise ValueError("a processing or share decision needs the site")
        destination = site.jurisdiction
        if kind == StepKind.RECEIVE_SHARES:
            if site.kind != SiteKind.MPC_PARTY:
                return _refuse(kind, data, site, (), f"{site.name} is not an MPC party")
            allowed_in = tuple(sorted(data.shares_may_go_to))
            what = f"secret shares of {data.code} data to {site.name} ({destination})"
        elif site.kind == SiteKind.TEE:
            allowed_in = tuple(sorted(data.enclave_processing_in))
            what = f"{data.code} rows in the attested enclave at {site.name} ({destination})"
        elif site.kind == SiteKind.WORKER:
            allowed_in = tuple(sorted(data.raw_processing_in))
            what = f"{data.code} rows in plaintext at {site.name} ({destination})"
        else:
            return _refuse(
                kind, data, site, (), f"{site.name} is an MPC party: it never reads rows"
            )
        if not site.active:
            return _refuse(kind, data, site, allowed_in, f"{site.name} is not active")
    allowed = destination in allowed_in
    rule = f"{data.code} rules allow {', '.join(allowed_in) or 'nowhere'}"
    return Decision(
        kind=kind,
        allowed=allowed,
        reason=f"{'Allowed' if allowed else 'Refused'}: {what} ({rule}).",
        data_jurisdiction=data.code,
        destination_jurisdiction=destination,
        allowed_jurisdictions=allowed_in,
        site=site.name if site else None,
        receiver=receiver.ref if receiver else None,
    )


def _refuse(kind, data, site, allowed_in, why: str) -> Decision:
    return Decision(
        kind=kind,
        allowed=False,
        reason=f"Refused: {why}.",
        data_jurisdiction=data.code,
        destination_jurisdiction=site.jurisdiction,
        allowed_jurisdictions=tuple(allowed_in),
        site=site.name,
    )

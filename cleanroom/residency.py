"""The residency decision: may this step, on data pinned to this jurisdiction, happen there?

One function for everyone who asks: the planner (before approval), the dispatcher, the worker
that receives a step (it knows its own site), and the key service before it unwraps a data key.
The rules are the jurisdictions' transfer rules (parties.Jurisdiction), managed by operators.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from parties.models import Jurisdiction, Organization, Site


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


def _codes(related) -> tuple[str, ...]:
    return tuple(sorted(related.values_list("code", flat=True)))


def decide(
    kind: StepKind,
    *,
    data: Jurisdiction,
    site: Site | None = None,
    receiver: Organization | None = None,
) -> Decision:
    if kind == StepKind.DELIVER_OUTPUT:
        if receiver is None:
            raise ValueError("an output decision needs the receiving organisation")
        destination = receiver.jurisdiction
        allowed_in = _codes(data.outputs_may_go_to)
        what = f"results computed from {data.code} data to {receiver.name} ({destination.code})"
    else:
        if site is None:
            raise ValueError("a processing or share decision needs the site")
        destination = site.jurisdiction
        if kind == StepKind.RECEIVE_SHARES:
            if site.kind != Site.Kind.MPC_PARTY:
                return _refuse(kind, data, site, (), f"{site.name} is not an MPC party")
            allowed_in = _codes(data.shares_may_go_to)
            what = f"secret shares of {data.code} data to {site.name} ({destination.code})"
        elif site.kind == Site.Kind.TEE:
            allowed_in = _codes(data.enclave_processing_in)
            what = f"{data.code} rows in the attested enclave at {site.name} ({destination.code})"
        elif site.kind == Site.Kind.WORKER:
            allowed_in = _codes(data.raw_processing_in)
            what = f"{data.code} rows in plaintext at {site.name} ({destination.code})"
        else:
            return _refuse(
                kind, data, site, (), f"{site.name} is an MPC party: it never reads rows"
            )
        if not site.active:
            return _refuse(kind, data, site, allowed_in, f"{site.name} is not active")
    allowed = destination.code in allowed_in
    rule = f"{data.code} rules allow {', '.join(allowed_in) or 'nowhere'}"
    return Decision(
        kind=kind,
        allowed=allowed,
        reason=f"{'Allowed' if allowed else 'Refused'}: {what} ({rule}).",
        data_jurisdiction=data.code,
        destination_jurisdiction=destination.code,
        allowed_jurisdictions=allowed_in,
        site=site.name if site else None,
        receiver=f"org:{receiver.pk}" if receiver else None,
    )


def _refuse(kind, data, site, allowed_in, why: str) -> Decision:
    return Decision(
        kind=kind,
        allowed=False,
        reason=f"Refused: {why}.",
        data_jurisdiction=data.code,
        destination_jurisdiction=site.jurisdiction.code,
        allowed_jurisdictions=tuple(allowed_in),
        site=site.name,
    )

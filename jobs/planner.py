"""The planner: from a query's text and parameters to the report every owner approves against.

It parses the SQL against the room's datasets, checks each dataset's policy and budget, chooses
the mechanism (MPC where it fits and every policy allows it, else the TEE), places every step at
a site, asks the residency function about each, and calibrates the noise of every output cell.
The report is plain JSON: shown while composing, frozen into the query at submission.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from cleanroom.residency import Decision, StepKind, TransferRules, decide
from dataplane.mpc.noise import deviation_bound
from dataplane.privacy.calibration import CONFIDENCE, Measurement, inexact_draw, measurements
from dataplane.sql.parser import parse_query
from dataplane.sql.plan import (
    AggregateKind,
    ColumnInfo,
    DatasetInfo,
    Output,
    ParsedQuery,
    QueryError,
    Shape,
    Use,
)
from jobs import synthetic
from jobs.ledger import balance, budget_check
from jobs.models import Query, Room, RoomDataset
from jobs.selectors import contributions_of
from parties.models import Organization, Site

MPC_PARTIES = 3  # Shamir sharing with an honest majority: fewer parties give no secrecy


def number(value: Decimal) -> str:
    """A decimal as people write it: 0.5, not 0.5000; 0, not 0E-12."""
    return format(Decimal(value).normalize(), "f")


@dataclass
class Check:
    name: str
    ok: bool
    message: str


@dataclass
class Plan:
    """The planner's report; `as_dict()` is what the UI, the API and the query store."""

    ok: bool = False
    error: dict[str, Any] | None = None
    parsed: ParsedQuery | None = None
    contributions: list[RoomDataset] = field(default_factory=list)
    mechanism: str | None = None
    mechanism_reason: str = ""
    datasets: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    cells: list[dict[str, Any]] = field(default_factory=list)
    groups: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    output_kind: str = Output.AGGREGATE
    # A synthetic extract's columns with their public domains or bins, method, cost, owners.
    synthetic: dict[str, Any] | None = None
    # What the canonical form's terms are made of: the datasets read as the parser saw them,
    # and the calibrated measurements of an aggregate query.
    catalog: dict[str, DatasetInfo] = field(default_factory=dict)
    measurements: dict[str, Measurement] = field(default_factory=dict)

    @property
    def required_approvers(self) -> list[Organization]:
        owners = {c.dataset.organization_id: c.dataset.organization for c in self.contributions}
        return sorted(owners.values(), key=lambda org: org.slug)

    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "error": self.error,
            "shape": self.parsed.shape.value if self.parsed else None,
            "output_kind": self.output_kind,
            "synthetic": self.synthetic,
            "mechanism": {"chosen": self.mechanism, "reason": self.mechanism_reason},
            "datasets": self.datasets,
            "required_approvers": [org.slug for org in self.required_approvers],
            "steps": self.steps,
            "groups": self.groups,
            "cells": self.cells,
            "checks": [vars(check) for check in self.checks],
        }


def room_catalog(room: Room) -> dict[str, tuple[RoomDataset, DatasetInfo]]:
    """The room's datasets as the parser sees them: columns, roles, and what policies allow."""
    catalog = {}
    for contribution in contributions_of(room).prefetch_related("version__columns"):
        policy = contribution.policy
        columns = {
            c.name: ColumnInfo(
                name=c.name,
                type=c.type,
                role=c.role,
                domain=tuple(c.domain),
                lower=c.lower,
                upper=c.upper,
            )
            for c in contribution.version.columns.all()
        }
        info = DatasetInfo(
            qualified_name=contribution.dataset.qualified_name,
            columns=columns,
            allowed={
                Use.JOIN_KEY: frozenset(policy.allowed_join_keys),
                Use.DIMENSION: frozenset(policy.allowed_dimensions),
                Use.MEASURE: frozenset(policy.allowed_measures),
                Use.FILTER: frozenset(policy.allowed_filters),
            },
            allowed_aggregates=frozenset(AggregateKind(a) for a in policy.allowed_aggregates),
        )
        catalog[info.qualified_name] = (contribution, info)
    return catalog


def plan_query(
    *,
    room: Room,
    sql: str,
    mechanism: str = Query.Mechanism.AUTO,
    epsilon: Decimal,
    delta: Decimal = Decimal(0),
    receivers: list[Organization],
    output_kind: str = Output.AGGREGATE,
    synthetic_method: str = "",
    synthetic_rows: int | None = None,
) -> Plan:
    plan = Plan(output_kind=Output(output_kind))
    epsilon, delta = Decimal(epsilon), Decimal(delta)
    catalog = room_catalog(room)
    try:
        parsed = parse_query(
            sql, {name: info for name, (_, info) in catalog.items()}, output=plan.output_kind
        )
    except QueryError as exc:
        plan.error = {"reason": exc.reason, "line": exc.line, "column": exc.column}
        plan.checks.append(Check("language", False, str(exc)))
        return plan
    plan.parsed = parsed
    plan.checks.append(Check("language", True, "The query is in the joint query language."))
    plan.contributions = [catalog[name][0] for name in parsed.datasets]
    plan.catalog = {name: catalog[name][1] for name in parsed.datasets}
    private = True
    if parsed.output is Output.SYNTHETIC:
        # The ledger is charged what the method costs, which dp_cost says is within (ε, δ).
        plan.synthetic, checks, charge = synthetic.plan_extract(
            parsed=parsed,
            catalog={name: info for name, (_, info) in catalog.items()},
            contributions=plan.contributions,
            method=synthetic_method,
            rows=synthetic_rows,
            epsilon=epsilon,
            delta=delta,
        )
        plan.checks += [Check(*check) for check in checks]
        epsilon, delta, private = charge.epsilon, charge.delta, charge.differentially_private
    _check_datasets(plan, room, epsilon, delta, mechanism, receivers, private=private)
    _choose_mechanism(plan, mechanism)
    if plan.mechanism:
        _place_steps(plan, receivers)
    if parsed.output is Output.AGGREGATE:
        _calibrate(plan, {name: info for name, (_, info) in catalog.items()}, epsilon)
    plan.ok = not plan.failed()
    return plan


def _check_datasets(plan, room, epsilon, delta, mechanism, receivers, *, private=True) -> None:
    uses: dict[str, dict[str, list[str]]] = {}
    for dataset, column, use in sorted(plan.parsed.uses):
        uses.setdefault(dataset, {}).setdefault(column, []).append(use.value)
    members = set(
        room.memberships.filter(status="active").values_list("organization_id", flat=True)
    )
    for contribution in plan.contributions:
        dataset, policy = contribution.dataset, contribution.policy
        name = dataset.qualified_name
        funds = balance(dataset)
        plan.datasets.append(
            {
                "name": name,
                "owner": {"slug": dataset.organization.slug, "name": dataset.organization.name},
                "jurisdiction": dataset.jurisdiction.code,
                "version": contribution.version.number,
                "policy_version": policy.version,
                "uses": uses.get(name, {}),
                "epsilon": number(epsilon),
                "delta": number(delta),
                "total_epsilon": number(funds.total_epsilon),
                "remaining_epsilon": number(funds.remaining_epsilon),
                "remaining_delta": number(funds.remaining_delta),
                "max_epsilon_per_query": number(policy.max_epsilon_per_query),
                "rows_per_unit": policy.max_rows_per_unit,
                "min_group_size": policy.min_group_size,
            }
        )
        ok, message = budget_check(
            name,
            funds,
            epsilon=epsilon,
            delta=delta,
            max_per_query=policy.max_epsilon_per_query,
            private=private,
        )
        plan.checks.append(Check("budget", ok, message))
        allowed = set(policy.allowed_receivers.values_list("pk", flat=True))
        for receiver in receivers:
            if receiver.pk not in allowed:
                plan.checks.append(
                    Check(
                        "receivers",
                        False,
                        f"{name}'s policy does not allow {receiver.name} to receive results.",
                    )
                )
    if not receivers:
        plan.checks.append(Check("receivers", False, "Name at least one receiver."))
    for receiver in receivers:
        if receiver.pk not in members:
            plan.checks.append(
                Check("receivers", False, f"{receiver.name} is not a member of this room.")
            )


def _mpc_fits(plan: Plan) -> str | None:
    """Why the query cannot run under MPC, or None when it can."""
    if plan.parsed.output is Output.SYNTHETIC:
        return "a synthetic extract fits a model to rows, which runs in the TEE only"
    if plan.parsed.shape == Shape.JOIN:
        return (
            "it joins datasets on a key (the vertical case), which MPC does not do yet: "
            "joins run in the TEE"
        )
    refusing = [
        c.dataset.qualified_name
        for c in plan.contributions
        if "mpc" not in c.policy.allowed_mechanisms
    ]
    if refusing:
        return f"the policy of {', '.join(refusing)} does not allow MPC"
    parties = _compute_sites(plan)
    if len(parties) < MPC_PARTIES:
        return (
            f"only {len(parties)} MPC party site{'' if len(parties) == 1 else 's'} may receive "
            f"shares of every dataset, and MPC needs {MPC_PARTIES}: with 2 parties Shamir "
            "sharing has threshold 0, so each share would be the secret itself"
        )
    return None


def _tee_fits(plan: Plan) -> str | None:
    refusing = [
        c.dataset.qualified_name
        for c in plan.contributions
        if "tee" not in c.policy.allowed_mechanisms
    ]
    if refusing:
        return f"the policy of {', '.join(refusing)} does not allow the TEE"
    if _enclave_site(plan) is None:
        return "no TEE site may process rows of every dataset under their jurisdictions' rules"
    return None


def _choose_mechanism(plan: Plan, requested: str) -> None:
    mpc_refusal, tee_refusal = _mpc_fits(plan), _tee_fits(plan)
    if requested == Query.Mechanism.MPC:
        chosen, reason = (
            ("mpc", "MPC as requested.")
            if mpc_refusal is None
            else (None, f"MPC was requested but {mpc_refusal}.")
        )
    elif requested == Query.Mechanism.TEE:
        chosen, reason = (
            ("tee", "The TEE as requested.")
            if tee_refusal is None
            else (None, f"The TEE was requested but {tee_refusal}.")
        )
    elif mpc_refusal is None:
        chosen, reason = (
            "mpc",
            (
                "MPC: every policy allows it and the query combines per-party aggregates, so no "
                "party's rows leave its site."
            ),
        )
    elif tee_refusal is None:
        chosen, reason = "tee", f"The TEE, because {mpc_refusal}."
    else:
        chosen, reason = None, f"Neither mechanism can run it: {mpc_refusal}; {tee_refusal}."
    plan.mechanism, plan.mechanism_reason = chosen, reason
    plan.checks.append(Check("mechanism", chosen is not None, reason))


def _sites(kind: str):
    return Site.objects.filter(kind=kind, active=True).select_related("jurisdiction")


def _rules(plan: Plan) -> dict[int, TransferRules]:
    """Each dataset's transfer rules, read once for every site the planner considers."""
    return {c.dataset_id: c.dataset.jurisdiction.rules() for c in plan.contributions}


def _enclave_site(plan: Plan) -> Site | None:
    home = plan.contributions[0].dataset.jurisdiction.code
    candidates = sorted(_sites(Site.Kind.TEE), key=lambda s: (s.jurisdiction.code != home, s.name))
    rules = _rules(plan)
    for site in candidates:
        if all(
            decide(StepKind.PROCESS_ROWS, data=rules[c.dataset_id], site=site.place()).allowed
            for c in plan.contributions
        ):
            return site
    return None


def _compute_sites(plan: Plan) -> list[Site]:
    rules = _rules(plan)
    eligible = [
        site
        for site in _sites(Site.Kind.MPC_PARTY)
        if all(
            decide(StepKind.RECEIVE_SHARES, data=rules[c.dataset_id], site=site.place()).allowed
            for c in plan.contributions
        )
    ]
    # One party per jurisdiction first, so no single legal system holds a majority of shares.
    chosen, seen = [], set()
    for site in sorted(eligible, key=lambda s: s.name):
        if site.jurisdiction.code not in seen:
            chosen.append(site)
            seen.add(site.jurisdiction.code)
    for site in eligible:
        if len(chosen) >= MPC_PARTIES:
            break
        if site not in chosen:
            chosen.append(site)
    return chosen[:MPC_PARTIES]


def _input_site(contribution: RoomDataset) -> Site | None:
    jurisdiction = contribution.dataset.jurisdiction
    for site in _sites(Site.Kind.WORKER).filter(jurisdiction=jurisdiction):
        return site
    return None


def _step(
    name: str, kind: str, site: Site | None, decisions: list[Decision], **extra
) -> dict[str, Any]:
    return {
        "step": name,
        "kind": kind,
        "site": site.name if site else None,
        "jurisdiction": site.jurisdiction.code if site else None,
        "decisions": [d.as_dict() for d in decisions],
        **extra,
    }


def _place_steps(plan: Plan, receivers: list[Organization]) -> None:
    data = [(c.dataset.qualified_name, c.dataset.jurisdiction.rules()) for c in plan.contributions]
    if plan.mechanism == "tee":
        site = _enclave_site(plan)
        plan.steps.append(
            _step(
                "enclave",
                "enclave",
                site,
                [decide(StepKind.PROCESS_ROWS, data=j, site=site.place()) for _, j in data],
                reads=[name for name, _ in data],
            )
        )
    else:
        for contribution in plan.contributions:
            site = _input_site(contribution)
            name, jurisdiction = (
                contribution.dataset.qualified_name,
                contribution.dataset.jurisdiction,
            )
            if site is None:
                plan.checks.append(
                    Check(
                        "residency",
                        False,
                        f"No active worker site in {jurisdiction.code} for {name}.",
                    )
                )
                continue
            plan.steps.append(
                _step(
                    f"input {name}",
                    "input",
                    site,
                    [decide(StepKind.PROCESS_ROWS, data=jurisdiction.rules(), site=site.place())],
                    reads=[name],
                )
            )
        for index, site in enumerate(_compute_sites(plan), start=1):
            plan.steps.append(
                _step(
                    f"compute party {index}",
                    "compute",
                    site,
                    [decide(StepKind.RECEIVE_SHARES, data=j, site=site.place()) for _, j in data],
                    party=index - 1,
                )
            )
    for receiver in receivers:
        plan.steps.append(
            _step(
                f"deliver to {receiver.name}",
                "deliver",
                None,
                [
                    decide(StepKind.DELIVER_OUTPUT, data=j, receiver=receiver.receiver())
                    for _, j in data
                ],
                receiver=receiver.slug,
            )
        )
    refused = [d["reason"] for step in plan.steps for d in step["decisions"] if not d["allowed"]]
    plan.checks.append(
        Check("residency", False, " ".join(refused))
        if refused
        else Check("residency", True, "Every step is allowed where it runs.")
    )


def _calibrate(plan: Plan, catalog: dict[str, DatasetInfo], epsilon: Decimal) -> None:
    parsed = plan.parsed
    dims = []
    count = 1
    for dimension in parsed.dimensions:
        column = catalog[dimension.column.dataset].columns[dimension.column.column]
        dims.append({"name": dimension.alias, "domain": list(column.domain)})
        count *= len(column.domain)
    plan.groups = {"dimensions": dims, "count": count}
    if epsilon <= 0 or not plan.contributions:
        return
    rows_per_unit = min(c.policy.max_rows_per_unit for c in plan.contributions)
    min_group = max(c.policy.min_group_size for c in plan.contributions)
    columns = {
        (name, col): info for name, ds in catalog.items() for col, info in ds.columns.items()
    }
    released = measurements(
        parsed,
        columns,
        epsilon=epsilon,
        rows_per_unit=rows_per_unit,
        mechanism="mpc" if plan.mechanism == "mpc" else "tee",
    )
    plan.measurements = released
    refusals = [refusal for m in released.values() if (refusal := inexact_draw(m))]
    plan.checks.append(
        Check("noise", False, " ".join(refusals))
        if refusals
        else Check("noise", True, "Every measurement's noise is drawn exactly.")
    )
    sampling = _mpc_sampling(released, count) if plan.mechanism == "mpc" and not refusals else {}
    for aggregate in parsed.aggregates:
        ref = aggregate.column
        total = released.get(f"sum({ref.dataset}.{ref.column})") if ref else None
        if aggregate.kind == AggregateKind.COUNT:
            cell = released["count"].as_dict()
        elif aggregate.kind == AggregateKind.SUM:
            cell = total.as_dict()
        else:
            noisy_count = released["count"]
            bound = max(
                abs(float(columns[(ref.dataset, ref.column)].lower)),
                abs(float(columns[(ref.dataset, ref.column)].upper)),
            )
            cell = {
                "name": f"{total.name} / count",
                "mechanism": f"{total.mechanism} sum over {noisy_count.mechanism} count",
                "epsilon": total.epsilon + noisy_count.epsilon,
                "scale": None,
                # A bound, not an interval: the mean's error depends on the group's size, which
                # is not released before the query runs. Shown for a group of the minimum size.
                "accuracy95": (total.accuracy + bound * noisy_count.accuracy) / min_group,
                "note": f"approximate, for a group of {min_group} rows",
            }
        if sampling:
            used = ["count"] if ref is None else [total.name]
            used += ["count"] if aggregate.kind == AggregateKind.AVG else []
            worst = max(sampling["deviation"][name] for name in used)
            cell["sampling"] = (
                f"sampled inside MPC from secret random bits, within {worst:.2g} total "
                "variation of the exact discrete Laplace per cell (from the sampler's thresholds)"
            )
        plan.cells.append({"alias": aggregate.alias, "kind": aggregate.kind.value, **cell})
    plan.groups.update(
        {
            "rows_per_unit": rows_per_unit,
            "min_group_size": min_group,
            "confidence": CONFIDENCE,
            "suppression": f"groups whose noisy count is under {min_group} are suppressed",
            **({"mpc_sampling": sampling["summary"]} if sampling else {}),
        }
    )
    for cell in plan.cells:
        cell["accuracy95"] = _round(cell["accuracy95"])


def _mpc_sampling(released: dict[str, Measurement], groups: int) -> dict[str, Any]:
    """How far noise sampled inside MPC may be from the exact discrete Laplace: per measurement
    the total variation per cell, computed from the sampler's own thresholds, and the δ that
    implies over every released cell, (1 + e^ε) · cells · deviation (stated, not charged)."""
    deviation = {name: deviation_bound(m.grid_scale) for name, m in released.items()}
    worst = max(deviation.values())
    cells = groups * len(released)
    delta = (1 + math.exp(sum(m.epsilon for m in released.values()))) * cells * worst
    return {
        "deviation": deviation,
        "summary": {
            "deviation_per_cell": worst,
            "cells": cells,
            "delta": delta,
            "statement": (
                f"Noise drawn inside MPC is within {worst:.2g} of the exact discrete Laplace per "
                f"cell in total variation (computed from the sampler's thresholds): over the "
                f"{cells} cells the release is ε-DP up to δ ≤ {delta:.2g}, stated, not charged."
            ),
        },
    }


def _round(value: float) -> float:
    if not math.isfinite(value):
        # OpenDP reports -inf for scales far below one integer step: the noise is then zero.
        return 0.0
    if value == 0:
        return value
    return round(value, max(0, 3 - math.floor(math.log10(abs(value)))))

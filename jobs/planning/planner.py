"""The planner: from a query's text and parameters to the report every owner approves against.

It parses the SQL against the room's datasets, checks each dataset's policy and budget, chooses
the mechanism (MPC where it fits and every policy allows it, else the TEE), places every step at
a site, asks the residency function about each, and calibrates the noise of every output cell.
The report is plain JSON: shown while composing, frozen into the query at submission."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings

from cleanroom.residency import StepKind, decide
from dataplane.mechanisms import Mechanism, Stage
from dataplane.privacy.calibration import CONFIDENCE, Measurement, inexact_draw, measurements
from dataplane.sql.parser import allowed_uses, parse_query
from dataplane.sql.plan import (
    AggregateKind,
    ColumnInfo,
    ColumnRole,
    DatasetInfo,
    Output,
    ParsedQuery,
    QueryError,
    Use,
)
from jobs.budget.ledger import balance, budget_check
from jobs.engines.base import PlannedStep
from jobs.engines.registry import ENGINES, engine_of
from jobs.models import Query, Room, RoomDataset
from jobs.planning.synthetic import plan_extract
from jobs.rooms.selectors import contributions_of
from parties.models import Organization


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
    steps: list[PlannedStep] = field(default_factory=list)
    cells: list[dict[str, Any]] = field(default_factory=list)
    groups: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    output_kind: Output = Output.AGGREGATE
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
            "steps": [step.as_dict() for step in self.steps],
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
                role=ColumnRole(c.role),
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


def completion_schema(room: Room) -> list[dict[str, Any]]:
    """What the composer completes: the room's datasets, each with only the columns its roles
    and policy allow a query to name, and for which uses (the parser's own rule)."""
    return [
        {
            "name": name,
            "owner": contribution.dataset.organization.name,
            "columns": [
                {"name": column, "type": info.columns[column].type, "uses": list(uses)}
                for column, uses in allowed_uses(info).items()
            ],
        }
        for name, (contribution, info) in sorted(room_catalog(room).items())
    ]


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
        plan.synthetic, checks, charge = plan_extract(
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
    _check_datasets(plan, parsed, room, epsilon, delta, receivers, private=private)
    _choose_mechanism(plan, parsed, mechanism)
    if plan.mechanism:
        _place_steps(plan, parsed, plan.mechanism, receivers)
    if parsed.output is Output.AGGREGATE:
        _calibrate(plan, parsed, {name: info for name, (_, info) in catalog.items()}, epsilon)
    plan.ok = not plan.failed()
    return plan


def _check_datasets(
    plan: Plan,
    parsed: ParsedQuery,
    room: Room,
    epsilon: Decimal,
    delta: Decimal,
    receivers: list[Organization],
    *,
    private: bool = True,
) -> None:
    uses: dict[str, dict[str, list[str]]] = {}
    for dataset_name, column, use in sorted(parsed.uses):
        uses.setdefault(dataset_name, {}).setdefault(column, []).append(use.value)
    members = set(
        room.memberships.filter(status="active").values_list("organization_id", flat=True)
    )
    withdrawn = set(
        room.memberships.filter(suspended_at__isnull=False).values_list(
            "organization_id", flat=True
        )
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
        if dataset.suspended_at:
            plan.checks.append(
                Check(
                    "suspension",
                    False,
                    f"{name} is suspended by its owner: nothing runs on it until they lift it.",
                )
            )
        if dataset.organization_id in withdrawn:
            plan.checks.append(
                Check(
                    "suspension",
                    False,
                    f"{dataset.organization.name} suspended its participation in this room: "
                    f"nothing runs on {name} here until it lifts the suspension.",
                )
            )
        ok, message = budget_check(
            name,
            funds,
            epsilon=epsilon,
            delta=delta,
            max_per_query=policy.max_epsilon_per_query,
            private=private,
        )
        plan.datasets[-1]["fits"] = ok
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
        # Where organisations run their own key services, a result is sealed only to one.
        elif settings.KEY_SERVICES and receiver.slug not in settings.KEY_SERVICES:
            plan.checks.append(
                Check(
                    "receivers",
                    False,
                    f"{receiver.name} runs no key service of its own here, and results are "
                    "sealed only to a receiver's own key service.",
                )
            )


def _choose_mechanism(plan: Plan, parsed: ParsedQuery, requested: str) -> None:
    """The requested engine if it can run the query; on automatic, the first in the registry's
    order that can."""
    refusals = {
        mechanism: kind.refusal(parsed, plan.contributions) for mechanism, kind in ENGINES.items()
    }
    if requested != Query.Mechanism.AUTO:
        mechanism = Mechanism(requested)
        refusal = refusals[mechanism]
        chosen, reason = (
            (mechanism, f"{_named(mechanism)} as requested.")
            if refusal is None
            else (None, f"{_named(mechanism)} was requested but {refusal}.")
        )
    else:
        fitting = [mechanism for mechanism, refusal in refusals.items() if refusal is None]
        chosen = fitting[0] if fitting else None
        passed_over = [r for m, r in refusals.items() if m != chosen and r]
        if chosen is None:
            reason = f"No mechanism can run it: {'; '.join(passed_over)}."
        elif chosen == next(iter(ENGINES)):
            reason = AUTOMATIC_REASONS.get(chosen, f"{_named(chosen)}.")
        else:
            reason = f"{_named(chosen)}, because {'; '.join(passed_over)}."
    plan.mechanism, plan.mechanism_reason = chosen, reason
    plan.checks.append(Check("mechanism", chosen is not None, reason))


# Why the planner's first preference is chosen when it fits.
AUTOMATIC_REASONS = {
    Mechanism.MPC: (
        "MPC: every policy allows it and the query combines per-party aggregates, so no "
        "party's rows leave its site."
    ),
}


def _named(mechanism: Mechanism) -> str:
    return {Mechanism.MPC: "MPC", Mechanism.TEE: "The TEE"}.get(mechanism, mechanism.label)


def _place_steps(
    plan: Plan, parsed: ParsedQuery, mechanism: str, receivers: list[Organization]
) -> None:
    data = [(c.dataset.qualified_name, c.dataset.jurisdiction.rules()) for c in plan.contributions]
    planned = engine_of(mechanism).place(parsed, plan.contributions)
    plan.steps.extend(planned.steps)
    plan.checks.extend(Check("residency", False, problem) for problem in planned.problems)
    for receiver in receivers:
        plan.steps.append(
            PlannedStep.at(
                f"deliver to {receiver.name}",
                Stage.DELIVER,
                None,
                [
                    decide(StepKind.DELIVER_OUTPUT, data=j, receiver=receiver.receiver())
                    for _, j in data
                ],
                receiver=receiver.slug,
            )
        )
    refused = [d.reason for step in plan.steps for d in step.decisions if not d.allowed]
    plan.checks.append(
        Check("residency", False, " ".join(refused))
        if refused
        else Check("residency", True, "Every step is allowed where it runs.")
    )


def _calibrate(
    plan: Plan, parsed: ParsedQuery, catalog: dict[str, DatasetInfo], epsilon: Decimal
) -> None:
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
        mechanism=plan.mechanism or Mechanism.TEE,
    )
    plan.measurements = released
    refusals = [refusal for m in released.values() if (refusal := inexact_draw(m))]
    plan.checks.append(
        Check("noise", False, " ".join(refusals))
        if refusals
        else Check("noise", True, "Every measurement's noise is drawn exactly.")
    )
    sampling = (
        engine_of(plan.mechanism).noise_statement(released, count)
        if plan.mechanism and not refusals
        else {}
    )
    for aggregate in parsed.aggregates:
        if aggregate.kind == AggregateKind.COUNT:
            cell = released["count"].as_dict()
            used = ["count"]
        elif aggregate.kind == AggregateKind.SUM:
            ref = aggregate.measured_column
            total = released[f"sum({ref.dataset}.{ref.column})"]
            cell = total.as_dict()
            used = [total.name]
        else:
            ref = aggregate.measured_column
            total = released[f"sum({ref.dataset}.{ref.column})"]
            noisy_count = released["count"]
            lower, upper = columns[(ref.dataset, ref.column)].bounds()
            bound = max(abs(float(lower)), abs(float(upper)))
            used = [total.name, "count"]
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


def _round(value: float) -> float:
    if not math.isfinite(value):
        # OpenDP reports -inf for scales far below one integer step: the noise is then zero.
        return 0.0
    if value == 0:
        return value
    return round(value, max(0, 3 - math.floor(math.log10(abs(value)))))

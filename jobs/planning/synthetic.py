"""The planner's part for synthetic extracts: which columns are synthesized in which public
domains or bins, what the method costs each dataset, and whether every owner allows it.

The cost comes from dataplane.synthesis.dp_cost (OpenDP's maps, zCDP converted to (ε, δ)); the
ledger is charged that (ε, δ), rounded up to its precision, on every dataset the query reads.
The SDV methods charge nothing and are labelled not differentially private."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any

from dataplane.privacy.calibration import changed_rows
from dataplane.privacy.extract import synth_columns
from dataplane.sql.plan import DatasetInfo, ParsedQuery
from jobs.models import Query, RoomDataset

Method = Query.SyntheticMethod


DEFAULT_METHOD = Method.DP_MARGINALS


# The ledger's precision (BudgetEntry): a cost is charged rounded up to it, never down.
_EPSILON_STEP = Decimal("0.0001")


_DELTA_STEP = Decimal("1e-12")


def is_differentially_private(method: str) -> bool:
    return method == Method.DP_MARGINALS


@dataclass(frozen=True)
class Charge:
    """What the ledger reserves on every dataset the extract reads."""

    epsilon: Decimal
    delta: Decimal
    differentially_private: bool


def _plain(value: Decimal) -> str:
    """As people write it: 1, not 1.0000; 0.000001, not 1E-6."""
    return format(value.normalize(), "f")


def _round_up(value: Decimal, step: Decimal) -> Decimal:
    return value.quantize(step, rounding=ROUND_CEILING)


def plan_extract(
    *,
    parsed: ParsedQuery,
    catalog: dict[str, DatasetInfo],
    contributions: list[RoomDataset],
    method: str,
    rows: int | None,
    epsilon: Decimal,
    delta: Decimal,
) -> tuple[dict[str, Any], list[tuple[str, bool, str]], Charge]:
    """The extract's part of the plan report, its checks (name, ok, message), and its charge."""
    from dataplane.synthesis import SynthesisError, dp_cost, public_bins

    checks: list[tuple[str, bool, str]] = []
    method = method or DEFAULT_METHOD
    if method not in Method.values:
        checks.append(("synthetic", False, f"Unknown synthesis method {method}."))
        method = DEFAULT_METHOD
    private = is_differentially_private(method)
    allowed_by: list[dict[str, Any]] = [
        {
            "dataset": c.dataset.qualified_name,
            "owner": c.dataset.organization.name,
            "synthetic_allowed": c.policy.synthetic_allowed,
            "non_dp_synthetic_allowed": c.policy.non_dp_synthetic_allowed,
            "max_rows": c.policy.max_synthetic_rows,
            "allows_method": c.policy.synthetic_allowed
            and (private or c.policy.non_dp_synthetic_allowed),
        }
        for c in contributions
    ]
    refusing = [f"{a['owner']} ({a['dataset']})" for a in allowed_by if not a["synthetic_allowed"]]
    if refusing:
        checks.append(
            (
                "synthetic",
                False,
                f"Synthetic extracts are not allowed by the policy of {', '.join(refusing)}.",
            )
        )
    elif not private:
        refusing = [f"{a['owner']} ({a['dataset']})" for a in allowed_by if not a["allows_method"]]
        if refusing:
            checks.append(
                (
                    "synthetic",
                    False,
                    f"{method} is not differentially private, and the policy of "
                    f"{', '.join(refusing)} does not allow non-DP synthetic extracts.",
                )
            )
    if not any(check[0] == "synthetic" for check in checks):
        checks.append(("synthetic", True, f"Every owner's policy allows {method}."))
    limit = min((a["max_rows"] for a in allowed_by), default=0)
    if not rows or rows < 1:
        checks.append(("rows", False, "Ask for at least one synthetic row."))
    elif rows > limit:
        smallest = [a["dataset"] for a in allowed_by if a["max_rows"] < rows]
        checks.append(
            (
                "rows",
                False,
                f"{rows} rows is above the largest extract the policy of "
                f"{', '.join(smallest)} allows ({limit}).",
            )
        )
    else:
        checks.append(("rows", True, f"{rows} synthetic rows (at most {limit})."))

    columns = synth_columns(
        parsed, {(name, c): info for name, ds in catalog.items() for c, info in ds.columns.items()}
    )
    rows_per_unit = min((c.policy.max_rows_per_unit for c in contributions), default=1)
    changed = changed_rows(parsed, rows_per_unit)
    try:
        bins = [None if c.categorical else public_bins(c) for c in columns]
    except SynthesisError as exc:
        checks.append(("synthetic", False, str(exc)))
        bins = [None] * len(columns)
    report: dict[str, Any] = {
        "method": method,
        "rows": rows,
        "differentially_private": private,
        "rows_per_unit": rows_per_unit,
        "changed_rows_per_unit": changed,
        "columns": [
            {
                "name": column.name,
                "type": column.type,
                "categories": None if column.categories is None else list(column.categories),
                "bins": column_bins,
            }
            for column, column_bins in zip(columns, bins, strict=True)
        ],
        "allowed_by": allowed_by,
        "cost": None,
    }
    if not private:
        report["label"] = "not differentially private"
        report["charge"] = {"epsilon": "0", "delta": "0"}
        return report, checks, Charge(Decimal(0), Decimal(0), False)
    if epsilon <= 0 or delta <= 0:
        checks.append(
            (
                "budget",
                False,
                "The DP method needs ε > 0 and δ > 0: its Gaussian noise is accounted in zCDP "
                "and converted to (ε, δ).",
            )
        )
        return report, checks, Charge(Decimal(0), Decimal(0), True)
    try:
        cost = dp_cost(columns, epsilon=float(epsilon), delta=float(delta), rows_per_unit=changed)
    except SynthesisError as exc:
        checks.append(("budget", False, str(exc)))
        return report, checks, Charge(Decimal(0), Decimal(0), True)
    report["cost"] = cost.as_dict()
    charge = Charge(
        _round_up(Decimal(report["cost"]["epsilon"]), _EPSILON_STEP),
        _round_up(Decimal(report["cost"]["delta"]), _DELTA_STEP),
        True,
    )
    report["charge"] = {"epsilon": _plain(charge.epsilon), "delta": _plain(charge.delta)}
    return report, checks, charge

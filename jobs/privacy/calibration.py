"""Noise for each released measurement, calibrated with OpenDP's own privacy maps.

The accountant (README, "Privacy accounting"): basic sequential composition of pure ε-DP. A
query's ε is split evenly over its distinct measurements (one noisy count, one noisy sum per
measure column); AVG is post-processing of a sum and the count. Every dataset the query reads is
charged the query's whole ε, since each privacy unit appears in one dataset and the query's
measurements together cost ε for each of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from functools import cache

import opendp.prelude as dp

from jobs.sql.plan import AggregateKind, ColumnInfo, ParsedQuery

dp.enable_features("contrib")
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Measurement:
    """One noisy release per output group: a count, or the sum of one measure column."""

    name: str  # "count" or "sum(<dataset>.<column>)"
    discrete: bool
    sensitivity: float
    epsilon: float
    scale: float
    accuracy: float  # half-width of the 95 % interval of the noise

    @property
    def mechanism(self) -> str:
        return "discrete Laplace" if self.discrete else "Laplace"

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "mechanism": self.mechanism,
            "sensitivity": self.sensitivity,
            "epsilon": self.epsilon,
            "scale": self.scale,
            "accuracy95": self.accuracy,
        }


@cache
def laplace_scale(sensitivity: float, epsilon: float, discrete: bool) -> float:
    """The smallest scale whose OpenDP privacy map gives at most `epsilon` at `sensitivity`."""
    kind = int if discrete else float
    domain = dp.atom_domain(T=kind) if discrete else dp.atom_domain(T=float, nan=False)

    def make(scale: float):
        return dp.m.make_laplace(domain, dp.absolute_distance(T=kind), scale=scale)

    d_in = int(sensitivity) if discrete else float(sensitivity)
    return float(dp.binary_search_param(make, d_in=d_in, d_out=epsilon))


def noise_accuracy(scale: float, discrete: bool) -> float:
    alpha = 1 - CONFIDENCE
    if discrete:
        return float(dp.discrete_laplacian_scale_to_accuracy(scale, alpha))
    return float(dp.laplacian_scale_to_accuracy(scale, alpha))


def measurements(
    parsed: ParsedQuery,
    columns: dict[tuple[str, str], ColumnInfo],
    *,
    epsilon: Decimal,
    rows_per_unit: int,
) -> dict[str, Measurement]:
    """The measurements a query releases per group, keyed by name."""
    # The count is always measured: groups whose noisy count is under the policy's minimum are
    # suppressed, also when the query releases only sums.
    needed: list[tuple[str, ColumnInfo | None]] = [("count", None)]
    for aggregate in parsed.aggregates:
        if aggregate.kind in (AggregateKind.SUM, AggregateKind.AVG):
            ref = aggregate.column
            needed.append((f"sum({ref.dataset}.{ref.column})", columns[(ref.dataset, ref.column)]))
    distinct = dict(needed)
    share = float(epsilon) / len(distinct)
    result = {}
    for name, column in distinct.items():
        if column is None:
            sensitivity, discrete = float(rows_per_unit), True
        else:
            bound = max(abs(float(column.lower)), abs(float(column.upper)))
            sensitivity, discrete = rows_per_unit * bound, column.type == "integer"
        scale = laplace_scale(sensitivity, share, discrete)
        result[name] = Measurement(
            name=name,
            discrete=discrete,
            sensitivity=sensitivity,
            epsilon=share,
            scale=scale,
            accuracy=noise_accuracy(scale, discrete),
        )
    return result

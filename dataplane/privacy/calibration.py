"""Noise for each released measurement, calibrated with OpenDP's own privacy maps.

The accountant (dataplane/privacy/README.md): basic sequential composition of pure ε-DP. A
query's ε is split evenly over its distinct measurements (one noisy count, one noisy sum per
measure column); AVG is post-processing of a sum and the count. Sensitivities are for a whole
person, who may sit in every dataset the query reads (`changed_rows`), so the query costs each
person at most ε, and every dataset it reads is charged ε.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from functools import cache

import opendp.prelude as dp

from dataplane.sql.plan import AggregateKind, ColumnInfo, ParsedQuery

dp.enable_features("contrib")
CONFIDENCE = 0.95
# A float measure x is summed as round(x·2^k), with max(|lower|, |upper|)·2^k ≤ 2^FIXED_POINT_BITS.
FIXED_POINT_BITS = 20
# The largest discrete Laplace scale drawn exactly: OpenDP adds its noise in 64-bit integers
# (the enclave) and the MPC field holds noise of 2^(K+1) beside the sums; at 2^56 the noise
# passes 2^62 with probability e^-64.
MAX_DISCRETE_SCALE = 2.0**56


@dataclass(frozen=True)
class Measurement:
    """One noisy release per output group: a count, or the sum of one measure column."""

    name: str  # "count" or "sum(<dataset>.<column>)"
    discrete: bool
    sensitivity: float
    epsilon: float
    scale: float
    accuracy: float  # half-width of the 95 % interval of the noise
    # Under MPC a float measure is summed on the grid of 2^-shift and noised there with
    # discrete Laplace; sensitivity, scale and accuracy above are in the measure's own units.
    shift: int = 0

    @property
    def mechanism(self) -> str:
        if self.shift:
            return f"discrete Laplace on a 2^-{self.shift} grid"
        return "discrete Laplace" if self.discrete else "Laplace"

    @property
    def grid_scale(self) -> float:
        """The scale on the integer grid the noise is sampled on."""
        return math.ldexp(self.scale, self.shift)

    @property
    def grid_sensitivity(self) -> int:
        return round(math.ldexp(self.sensitivity, self.shift))

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "mechanism": self.mechanism,
            "sensitivity": self.sensitivity,
            "epsilon": self.epsilon,
            "scale": self.scale,
            "accuracy95": self.accuracy,
            **({"fixed_point_bits": self.shift} if self.shift else {}),
        }


@cache
def laplace_scale(sensitivity: float, epsilon: float, discrete: bool) -> float:
    """The smallest scale whose OpenDP privacy map gives at most `epsilon` at `sensitivity`."""
    kind = "i64" if discrete else float
    domain = dp.atom_domain(T=kind) if discrete else dp.atom_domain(T=float, nan=False)

    def make(scale: float):
        return dp.m.make_laplace(domain, dp.absolute_distance(T=kind), scale=scale)

    d_in = int(sensitivity) if discrete else float(sensitivity)
    # Searched around sensitivity / ε, where pure ε-DP Laplace puts it: OpenDP's own bracketing
    # fails at the huge scales a tiny ε gives.
    guess = float(sensitivity) / epsilon
    return float(
        dp.binary_search_param(make, d_in=d_in, d_out=epsilon, bounds=(guess / 2, guess * 2))
    )


def noise_accuracy(scale: float, discrete: bool) -> float:
    alpha = 1 - CONFIDENCE
    if discrete:
        return float(dp.discrete_laplacian_scale_to_accuracy(scale, alpha))
    return float(dp.laplacian_scale_to_accuracy(scale, alpha))


def inexact_draw(measurement: Measurement) -> str | None:
    """Why a measurement's noise cannot be drawn exactly, or None: a discrete scale beyond
    MAX_DISCRETE_SCALE (an ε too small for the bounds)."""
    if measurement.discrete and not measurement.grid_scale <= MAX_DISCRETE_SCALE:
        return (
            f"{measurement.name}: a noise scale of {measurement.grid_scale:.3g} is beyond 2^56, "
            "the largest discrete Laplace scale drawn exactly (in 64-bit integers and in the "
            "MPC field); raise ε or narrow the bounds"
        )
    return None


def fixed_point_shift(lower: Decimal, upper: Decimal) -> int:
    """k such that a float measure x is summed as round(x·2^k), with max(|lower|, |upper|)·2^k
    at most 2^FIXED_POINT_BITS: a grid finer than a millionth of the bound."""
    largest = max(abs(Decimal(lower)), abs(Decimal(upper)))
    return FIXED_POINT_BITS - math.frexp(float(largest))[1] if largest else 0


def grid_bound(lower: Decimal, upper: Decimal, shift: int) -> int:
    """The largest |value| one clamped row adds to a sum on the grid of 2^-shift."""
    grid = Fraction(2) ** shift
    low, high = math.ceil(Fraction(lower) * grid), math.floor(Fraction(upper) * grid)
    return max(abs(low), abs(high))


def changed_rows(parsed: ParsedQuery, rows_per_unit: int) -> int:
    """How many rows of the table that is aggregated (or synthesized) one person can change.

    A person may sit in every dataset the query reads: patients treated in several hospitals of
    a UNION ALL, and the people a JOIN matches across its sides. In each dataset they keep at
    most L rows (`rows_per_unit`); each such row changes at most one row of a UNION ALL, and at
    most J rows of a JOIN, J being that dataset's join-key columns (with unique keys a new row
    joins once, or pushes one other row out per key column it repeats). So L times the sum, over
    the datasets read, of max(1, J)."""
    keys = parsed.join_keys()
    return rows_per_unit * sum(max(1, len(keys[name])) for name in parsed.datasets)


def measurements(
    parsed: ParsedQuery,
    columns: dict[tuple[str, str], ColumnInfo],
    *,
    epsilon: Decimal,
    rows_per_unit: int,
    mechanism: str = "tee",
) -> dict[str, Measurement]:
    """The measurements a query releases per group, keyed by name.

    Under MPC every cell is discrete Laplace on an integer grid, since the noise is sampled
    inside MPC from secret random bits: counts and integer sums as they are, float sums in
    fixed point (2^-shift, as the enclave sums them), with the sensitivity on that grid."""
    rows = changed_rows(parsed, rows_per_unit)
    # The count is always measured: groups whose noisy count is under the policy's minimum are
    # suppressed, also when the query releases only sums.
    needed: list[tuple[str, ColumnInfo | None]] = [("count", None)]
    for aggregate in parsed.aggregates:
        if aggregate.kind in (AggregateKind.SUM, AggregateKind.AVG):
            ref = aggregate.measured_column
            needed.append((f"sum({ref.dataset}.{ref.column})", columns[(ref.dataset, ref.column)]))
    distinct = dict(needed)
    share = float(epsilon) / len(distinct)
    result = {}
    for name, column in distinct.items():
        if column is None:
            sensitivity, discrete = float(rows), True
        elif mechanism == "mpc" and column.type != "integer":
            lower, upper = column.bounds()
            shift = fixed_point_shift(lower, upper)
            grid = rows * grid_bound(lower, upper, shift)
            scale = laplace_scale(float(grid), share, True)
            result[name] = Measurement(
                name=name,
                discrete=True,
                sensitivity=math.ldexp(grid, -shift),
                epsilon=share,
                scale=math.ldexp(scale, -shift),
                accuracy=math.ldexp(noise_accuracy(scale, True), -shift),
                shift=shift,
            )
            continue
        else:
            bound = max(abs(float(limit)) for limit in column.bounds())
            sensitivity, discrete = rows * bound, column.type == "integer"
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

"""The privacy cost of the DP synthesizer (after MST), calibrated with OpenDP's own maps.

A privacy unit contributes at most `rows_per_unit` (L) rows; neighbouring inputs differ by the
rows of one unit (add or remove), so:
- a marginal's count vector changes by at most L in L2 norm (all L rows in one cell is the
  worst case): each marginal is measured with OpenDP's Gaussian mechanism on the integer
  counts (discrete Gaussian) at L2 sensitivity L;
- a candidate pair's selection score (the L1 distance between its true 2-way marginal and the
  current model's) changes by at most L: each selection round is OpenDP's noisy max (Gumbel
  noise: the exponential mechanism) at L-infinity sensitivity L.

The whole run is composed in zero-concentrated DP (OpenDP's adaptive composition of every
mechanism's zCDP map) and converted to (ε, δ) by OpenDP's zCDP → approximate-DP map at the
requested δ. The total rho is the largest for which that conversion stays within the requested ε;
it is split evenly over the stages MST uses (measure 1-way, select, measure 2-way), each
stage evenly over its mechanisms; each mechanism's scale is the smallest whose OpenDP map at
sensitivity L stays within its share. The reported ε and δ are those of the composition of the
mechanisms actually run, so they never exceed the request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cache

import opendp.prelude as dp

from dataplane.synthesis.columns import SynthColumn, SynthesisError, check_columns

dp.enable_features("contrib")

# Bisection steps for the total rho: the result is within 2^-60 of the largest admissible rho.
_SEARCH_STEPS = 60
_MARGIN = 1 - 1e-9


@dataclass(frozen=True)
class Stage:
    """One stage of MST: `count` mechanisms of the same kind, each at `scale`, costing `rho`."""

    name: str
    mechanism: str
    count: int
    scale: float  # the Gaussian's standard deviation, or the Gumbel noise's scale
    rho: float  # each mechanism's zCDP cost, from its OpenDP map at sensitivity L

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "mechanism": self.mechanism,
            "count": self.count,
            "scale": self.scale,
            "rho_each": self.rho,
        }


@dataclass(frozen=True)
class DpBudget:
    """The calibration of one DP synthesis run: what it costs and how it is spent."""

    epsilon: float  # of the composed run, from OpenDP's conversion; <= requested_epsilon
    delta: float
    requested_epsilon: float
    rho: float  # the composed zCDP cost of every mechanism run
    rows_per_unit: int
    stages: tuple[Stage, ...]

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)

    def required_stage(self, name: str) -> Stage:
        """The stage `name`, which the caller cannot run without (one-way always exists;
        two-way with two columns or more; selection with three or more)."""
        stage = self.stage(name)
        if stage is None:
            raise ValueError(f"the budget has no {name} stage")
        return stage

    def as_dict(self) -> dict:
        return {
            "accountant": "zCDP (OpenDP adaptive composition), converted to (ε, δ) by OpenDP",
            "epsilon": _decimal(self.epsilon),
            "delta": _decimal(self.delta),
            "requested_epsilon": _decimal(self.requested_epsilon),
            "rho": _decimal(self.rho),
            "rows_per_unit": self.rows_per_unit,
            "stages": [s.as_dict() for s in self.stages],
        }


def _decimal(value: float) -> str:
    return str(Decimal(repr(value)))


def gaussian(scale: float) -> dp.Measurement:
    """The Gaussian mechanism on a vector of integer counts (OpenDP: discrete Gaussian)."""
    return dp.m.make_gaussian(
        dp.vector_domain(dp.atom_domain(T="i64")), dp.l2_distance(T="i64"), scale=scale
    )


def noisy_max(scale: float) -> dp.Measurement:
    """Report noisy max with Gumbel noise (the exponential mechanism), scores may move either
    way: OpenDP's map charges it for L-infinity sensitivity without the monotone discount."""
    return dp.m.make_noisy_max(
        dp.vector_domain(dp.atom_domain(T=float, nan=False)),
        dp.linf_distance(T=float),
        dp.zero_concentrated_divergence(),
        scale=scale,
    )


def composed(rhos: Sequence[float], rows_per_unit: int) -> dp.Measurement:
    """The zCDP composition of mechanisms costing `rhos` on datasets differing in L rows."""
    return dp.c.make_adaptive_composition(
        dp.vector_domain(dp.atom_domain(T=int)),
        dp.symmetric_distance(),
        dp.zero_concentrated_divergence(),
        d_in=rows_per_unit,
        d_mids=list(rhos),
    )


def epsilon_of(rhos: Sequence[float], *, delta: float, rows_per_unit: int) -> float:
    """OpenDP's ε at `delta` for the zCDP composition of `rhos`."""
    approximate = dp.c.make_fix_delta(
        dp.c.make_zCDP_to_approxDP(composed(rhos, rows_per_unit)), delta
    )
    return float(approximate.map(rows_per_unit)[0])


def _largest_rho(epsilon: float, delta: float, rows_per_unit: int) -> float:
    low, high = 0.0, 1.0
    while epsilon_of([high], delta=delta, rows_per_unit=rows_per_unit) <= epsilon:
        low, high = high, high * 2
    for _ in range(_SEARCH_STEPS):
        middle = (low + high) / 2
        if epsilon_of([middle], delta=delta, rows_per_unit=rows_per_unit) <= epsilon:
            low = middle
        else:
            high = middle
    return low


def _stage(name: str, mechanism: str, count: int, rho_share: float, rows_per_unit: int) -> Stage:
    d_in: int | float  # OpenDP reads the type: the Gaussian's i64 distance, noisy max's f64
    if mechanism == "Gaussian":
        make, d_in = gaussian, rows_per_unit
    else:
        make, d_in = noisy_max, float(rows_per_unit)
    scale = float(dp.binary_search_param(make, d_in=d_in, d_out=rho_share / count))
    return Stage(name, mechanism, count, scale, float(make(scale).map(d_in)))


def stage_counts(columns: int) -> dict[str, int]:
    """How many mechanisms each MST stage runs for `columns` columns. One column has no pairs;
    two have one pair, which needs no selection; more select the d - 1 edges of a tree."""
    counts = {"one-way": columns}
    if columns == 2:
        counts["two-way"] = 1
    elif columns > 2:
        counts |= {"selection": columns - 1, "two-way": columns - 1}
    return counts


def dp_cost(
    columns: Sequence[SynthColumn], *, epsilon: float, delta: float, rows_per_unit: int = 1
) -> DpBudget:
    """The calibration of a DP synthesis of `columns` within (`epsilon`, `delta`)."""
    check_columns(columns)
    if not 0 < epsilon < float("inf"):
        raise SynthesisError(f"ε must be positive and finite, not {epsilon}.")
    if not 0 < delta < 1:
        raise SynthesisError(f"δ must be in (0, 1), not {delta}.")
    if int(rows_per_unit) != rows_per_unit or rows_per_unit < 1:
        raise SynthesisError(f"rows_per_unit must be a positive whole number, not {rows_per_unit}.")
    return _calibrate(len(columns), float(epsilon), float(delta), int(rows_per_unit))


@cache
def _calibrate(columns: int, epsilon: float, delta: float, rows_per_unit: int) -> DpBudget:
    counts = stage_counts(columns)
    # A hair under the largest rho, so that float rounding in the sum of the shares cannot carry
    # the composition over it.
    share = _largest_rho(epsilon, delta, rows_per_unit) * _MARGIN / len(counts)
    mechanisms = {"one-way": "Gaussian", "selection": "noisy max (Gumbel)", "two-way": "Gaussian"}
    stages = tuple(
        _stage(name, mechanisms[name], count, share, rows_per_unit)
        for name, count in counts.items()
    )
    rhos = [s.rho for s in stages for _ in range(s.count)]
    spent = float(composed(rhos, rows_per_unit).map(rows_per_unit))
    achieved = epsilon_of(rhos, delta=delta, rows_per_unit=rows_per_unit)
    if achieved > epsilon:
        raise SynthesisError(f"The calibration came to ε {achieved} above the requested {epsilon}.")
    return DpBudget(
        epsilon=achieved,
        delta=delta,
        requested_epsilon=epsilon,
        rho=spent,
        rows_per_unit=rows_per_unit,
        stages=stages,
    )

"""Over many releases of fixed data, the noise of each cell has the declared distribution and
scale. OpenDP draws its noise from the operating system's randomness, which cannot be seeded, so
each goodness-of-fit test rejects only below a p-value of 1e-6: a correct mechanism fails it
with probability at most 1e-6. On the same samples the same test must reject the distribution
at 1.5 times and at 0.67 times the declared scale, so it cannot pass by accident: a test too weak
to tell those apart would fail here.

Discrete noise: Pearson's chi-square test over bins of about 5 % of the declared distribution.
Continuous noise: the Kolmogorov-Smirnov distance to the exact Laplace CDF, with the p-value
bounded by the Dvoretzky-Kiefer-Wolfowitz inequality (valid for every sample size)."""

from __future__ import annotations

import itertools
import math
from decimal import Decimal

import polars as pl
import pytest

from tests.privacy.support import (
    calibrate,
    chi_square_sf,
    discrete_laplace_cdf,
    ks_p_bound,
    ks_statistic,
    laplace_cdf,
    parse,
    release,
    stays,
)

THRESHOLD = 1e-6
WRONG_SCALES = (1.5, 0.67)
GROUPS = 500  # wards per release: each release gives 500 independent noise samples
RELEASES = 10
# Enough that a noisy count never falls below zero (and is suppressed): e^-26 at scale 3.
ROWS_PER_WARD = 80
FLOAT_SQL = "SELECT ward, SUM(cost) AS total FROM charite.stays GROUP BY ward"
FLOAT_EPSILON = Decimal(4)  # half for the count, half for the sum: a scale of 500 on the sum


def _wards() -> pl.DataFrame:
    """80 patients in each of the first 500 wards; integer stays and float costs on the
    fixed-point grid, so each exact sum is known exactly."""
    return stays(
        {"ward": ward, "stay": (ward + i) % 61, "cost": ((ward * 7 + i) % 4000) / 4}
        for ward in range(GROUPS)
        for i in range(ROWS_PER_WARD)
    )


def _noise(sql: str, alias: str, epsilon: Decimal, exact: dict[int, float]) -> list[float]:
    frame = _wards()
    samples: list[float] = []
    for _ in range(RELEASES):
        table = release(sql, {"charite.stays": frame}, epsilon=epsilon, min_group_size=0)
        for row in table.rows:
            if row["ward"] < GROUPS:
                samples.append(row[alias]["value"] - exact[row["ward"]])
    assert len(samples) == GROUPS * RELEASES
    return samples


def _scale(sql: str, epsilon: Decimal, name: str) -> float:
    return calibrate(parse(sql), epsilon, rows_per_unit=1)[name].scale


def _chi_square_p(samples: list[float], scale: float, edges: list[int]) -> float:
    """Pearson's chi-square test of integer samples against the discrete Laplace distribution at
    `scale`, binned as (-inf, e0], (e0, e1], ..., (e_last, inf)."""
    cdf = [0.0] + [discrete_laplace_cdf(edge, scale) for edge in edges] + [1.0]
    expected = [len(samples) * (b - a) for a, b in itertools.pairwise(cdf)]
    observed = [0] * len(expected)
    for value in samples:
        observed[sum(value > edge for edge in edges)] += 1
    statistic = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    return chi_square_sf(statistic, df=len(expected) - 1)


def _edges(scale: float) -> list[int]:
    """Integer bin edges at about every 5 % of the declared distribution: each bin expects a few
    hundred of the 5,000 samples."""
    edges = []
    for quantile in (q / 20 for q in range(1, 20)):
        if quantile < 0.5:
            edge = math.floor(scale * math.log(2 * quantile))
        else:
            edge = math.ceil(-scale * math.log(2 * (1 - quantile)))
        if not edges or edge > edges[-1]:
            edges.append(edge)
    return edges


def _ks_p(samples: list[float], scale: float, shift: float = 0.0) -> float:
    distance = ks_statistic(samples, lambda x: laplace_cdf(x - shift, scale))
    return ks_p_bound(distance, len(samples))


@pytest.mark.parametrize(
    ("sql", "alias", "name", "column", "epsilon", "declared"),
    [
        # Only a count: all of ε = 1/3 on sensitivity 1, a scale of 3.
        (
            "SELECT ward, COUNT(*) AS n FROM charite.stays GROUP BY ward",
            "n",
            "count",
            None,
            Decimal(1) / 3,
            3,
        ),
        # A count and a sum: ε = 1 halved on sensitivity 60, a scale of 120 (and 2 on the
        # count, so no ward of 80 patients is suppressed).
        (
            "SELECT ward, SUM(stay) AS days FROM charite.stays GROUP BY ward",
            "days",
            "sum(charite.stays.stay)",
            "stay",
            Decimal(1),
            120,
        ),
    ],
    ids=["count", "integer sum"],
)
def test_discrete_noise_follows_the_discrete_laplace_distribution_at_the_declared_scale(
    sql, alias, name, column, epsilon, declared
):
    frame = _wards()
    exact = dict(
        frame.group_by("ward").agg(pl.len() if column is None else pl.col(column).sum()).iter_rows()
    )
    scale = _scale(sql, epsilon, name)
    assert scale == pytest.approx(declared)
    samples = _noise(sql, alias, epsilon, exact)
    assert all(float(s).is_integer() for s in samples)
    edges = _edges(scale)
    assert len(edges) >= 9
    assert _chi_square_p(samples, scale, edges) >= THRESHOLD
    for wrong in WRONG_SCALES:
        assert _chi_square_p(samples, scale * wrong, edges) < THRESHOLD


@pytest.fixture(scope="module")
def float_noise() -> tuple[list[float], float]:
    frame = _wards()
    exact = dict(frame.group_by("ward").agg(pl.col("cost").sum()).iter_rows())
    scale = _scale(FLOAT_SQL, FLOAT_EPSILON, "sum(charite.stays.cost)")
    return _noise(FLOAT_SQL, "total", FLOAT_EPSILON, exact), scale


def test_float_sum_noise_follows_the_laplace_distribution_at_the_declared_scale(float_noise):
    samples, scale = float_noise
    assert scale == pytest.approx(500)
    assert _ks_p(samples, scale) >= THRESHOLD
    for wrong in WRONG_SCALES:
        assert _ks_p(samples, scale * wrong) < THRESHOLD


def test_the_noise_is_centred_on_the_exact_value(float_noise):
    # The same test rejects a Laplace shifted by half a scale either way.
    samples, scale = float_noise
    for shift in (-scale / 2, scale / 2):
        assert _ks_p(samples, scale, shift) < THRESHOLD


@pytest.mark.parametrize(
    ("statistic", "df", "tail"),
    [(18.307, 10, 0.05), (42.312, 18, 0.001), (23.928, 1, 1e-6), (3.940, 10, 0.95)],
)
def test_the_chi_square_tail_matches_tabulated_values(statistic, df, tail):
    assert chi_square_sf(statistic, df) == pytest.approx(tail, rel=1e-3)

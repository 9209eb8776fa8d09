"""Fixed catalogs and small frames for the release tests: hospitals' stays and a pharmacy's
prescriptions, parsed and calibrated as the enclave does it."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from datetime import date
from decimal import Decimal
from typing import Any

import polars as pl

from dataplane.privacy import terms
from dataplane.privacy.calibration import Measurement, measurements
from dataplane.privacy.release import ReleasedTable, release_aggregates
from dataplane.sql.parser import parse_query
from dataplane.sql.plan import AggregateKind, ColumnInfo, DatasetInfo, ParsedQuery, Use

AGE_BANDS = ("0-39", "40-64", "65+")
SEXES = ("F", "M")
WARDS = tuple(range(2000))  # a large public domain, for many noise samples per release
WEEKS = ("2025-01-06", "2025-01-13")  # a date domain as the catalog's JSON gives it
DRUGS = ("statin", "insulin", "other")
COST_BOUNDS = (Decimal(0), Decimal(1000))
STAY_BOUNDS = (Decimal(0), Decimal(60))
HUGE_EPSILON = Decimal(10**9)  # noise far below every difference a test looks at

STAYS = {
    "patient_id": ColumnInfo("patient_id", "string", "unit"),
    "person_hash": ColumnInfo("person_hash", "string", "join_key"),
    "age_band": ColumnInfo("age_band", "string", "dimension", domain=AGE_BANDS),
    "sex": ColumnInfo("sex", "string", "dimension", domain=SEXES),
    "ward": ColumnInfo("ward", "integer", "dimension", domain=WARDS),
    "week": ColumnInfo("week", "date", "dimension", domain=WEEKS),
    "admitted": ColumnInfo("admitted", "date", "other"),
    "stay": ColumnInfo("stay", "integer", "measure", lower=STAY_BOUNDS[0], upper=STAY_BOUNDS[1]),
    "cost": ColumnInfo("cost", "float", "measure", lower=COST_BOUNDS[0], upper=COST_BOUNDS[1]),
}
PRESCRIPTIONS = {
    "rx_id": ColumnInfo("rx_id", "string", "unit"),
    "person_hash": ColumnInfo("person_hash", "string", "join_key"),
    "drug": ColumnInfo("drug", "string", "dimension", domain=DRUGS),
    "price": ColumnInfo("price", "float", "measure", lower=Decimal(-50), upper=Decimal(200)),
}
# A lab joined on two different keys: to the hospital by person, to a courier by barcode.
SAMPLES = {
    "sample_id": ColumnInfo("sample_id", "string", "unit"),
    "person_hash": ColumnInfo("person_hash", "string", "join_key"),
    "barcode": ColumnInfo("barcode", "string", "join_key"),
}
DELIVERIES = {
    "courier_id": ColumnInfo("courier_id", "string", "unit"),
    "barcode": ColumnInfo("barcode", "string", "join_key"),
    "hours": ColumnInfo("hours", "integer", "measure", lower=Decimal(0), upper=Decimal(48)),
}
UNITS = {
    "charite.stays": "patient_id",
    "usz.stays": "patient_id",
    "barts.stays": "patient_id",
    "pharma.prescriptions": "rx_id",
    "lab.samples": "sample_id",
    "courier.deliveries": "courier_id",
}


def _dataset(name: str, columns: dict[str, ColumnInfo]) -> DatasetInfo:
    def having(*roles: str) -> frozenset[str]:
        return frozenset(c for c, info in columns.items() if info.role in roles)

    return DatasetInfo(
        qualified_name=name,
        columns=columns,
        allowed={
            Use.JOIN_KEY: having("join_key"),
            Use.DIMENSION: having("dimension"),
            Use.MEASURE: having("measure"),
            Use.FILTER: having("dimension", "measure", "other"),
        },
        allowed_aggregates=frozenset(AggregateKind),
    )


CATALOG = {
    "charite.stays": _dataset("charite.stays", STAYS),
    "usz.stays": _dataset("usz.stays", STAYS),
    "barts.stays": _dataset("barts.stays", STAYS),
    "pharma.prescriptions": _dataset("pharma.prescriptions", PRESCRIPTIONS),
    "lab.samples": _dataset("lab.samples", SAMPLES),
    "courier.deliveries": _dataset("courier.deliveries", DELIVERIES),
}
COLUMNS = {(name, c): info for name, ds in CATALOG.items() for c, info in ds.columns.items()}


def stays(rows: Iterable[Mapping[str, Any]]) -> pl.DataFrame:
    """Stays with defaults for the columns a row leaves out; each row its own patient unless
    it names one."""
    filled = []
    for number, row in enumerate(rows):
        filled.append(
            {
                "patient_id": f"p{number}",
                "person_hash": f"h{number}",
                "age_band": "40-64",
                "sex": "F",
                "ward": 0,
                "week": date(2025, 1, 6),
                "admitted": date(2025, 1, 1),
                "stay": 1,
                "cost": 100.0,
            }
            | dict(row)
        )
    schema = {
        "patient_id": pl.String,
        "person_hash": pl.String,
        "age_band": pl.String,
        "sex": pl.String,
        "ward": pl.Int64,
        "week": pl.Date,
        "admitted": pl.Date,
        "stay": pl.Int64,
        "cost": pl.Float64,
    }
    return pl.DataFrame(filled, schema=schema)


def prescriptions(rows: Iterable[Mapping[str, Any]]) -> pl.DataFrame:
    filled = [
        {"rx_id": f"rx{number}", "person_hash": f"h{number}", "drug": "statin", "price": 10.0}
        | dict(row)
        for number, row in enumerate(rows)
    ]
    schema = {"rx_id": pl.String, "person_hash": pl.String, "drug": pl.String, "price": pl.Float64}
    return pl.DataFrame(filled, schema=schema)


def frame(rows: Iterable[Mapping[str, Any]], columns: Mapping[str, ColumnInfo]) -> pl.DataFrame:
    """A frame of string and integer columns, every cell given."""
    types = {"string": pl.String, "integer": pl.Int64}
    return pl.DataFrame(
        list(rows), schema={name: types[info.type] for name, info in columns.items()}
    )


def parse(sql: str) -> ParsedQuery:
    return parse_query(sql, CATALOG)


def calibrate(parsed: ParsedQuery, epsilon: Decimal, rows_per_unit: int) -> dict[str, Measurement]:
    return measurements(parsed, COLUMNS, epsilon=Decimal(epsilon), rows_per_unit=rows_per_unit)


def release(
    sql: str,
    frames: Mapping[str, pl.DataFrame],
    *,
    epsilon: Decimal = HUGE_EPSILON,
    rows_per_unit: int = 1,
    min_group_size: int = 0,
) -> ReleasedTable:
    parsed = parse(sql)
    return release_aggregates(
        {name: frame.lazy() for name, frame in frames.items()},
        parsed,
        COLUMNS,
        UNITS,
        calibrate(parsed, epsilon, rows_per_unit),
        rows_per_unit=rows_per_unit,
        min_group_size=min_group_size,
    )


def cells(table: ReleasedTable, alias: str) -> dict[tuple, Any]:
    """The released values of one column, by group."""
    return {tuple(row[d] for d in table.dimensions): row[alias]["value"] for row in table.rows}


def noise_bound(table: ReleasedTable, name: str) -> float:
    """A bound the noise of a measurement exceeds with probability e^-40 per cell (Laplace
    tails: P(|N| > t) ≤ e^(-t/scale) for both kinds)."""
    scale = next(m["scale"] for m in table.measurements if m["name"] == name)
    return 40 * scale


def close(released: float | None, exact: float, tolerance: float) -> bool:
    return released is not None and math.isfinite(released) and abs(released - exact) <= tolerance


def discrete_laplace_cdf(k: float, scale: float) -> float:
    """P(N ≤ k) for N with P(N = n) ∝ exp(-|n| / scale), n an integer."""
    r = math.exp(-1 / scale)
    k = math.floor(k)
    if k < 0:
        return r ** (-k) / (1 + r)
    return 1 - r ** (k + 1) / (1 + r)


def laplace_cdf(x: float, scale: float) -> float:
    if x < 0:
        return 0.5 * math.exp(x / scale)
    return 1 - 0.5 * math.exp(-x / scale)


def chi_square_sf(statistic: float, df: int) -> float:
    """P[X ≥ statistic] for X chi-square with `df` degrees of freedom: the regularized upper
    incomplete gamma function Q(df/2, statistic/2), by its series below a + 1 and its continued
    fraction (Lentz) above."""
    a, x = df / 2, statistic / 2
    if x <= 0:
        return 1.0
    log_front = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:
        term = total = 1 / a
        n = a
        while abs(term) > abs(total) * 1e-16:
            n += 1
            term *= x / n
            total += term
        return max(0.0, 1 - total * math.exp(log_front))
    tiny = 1e-300
    b = x + 1 - a
    c, d = 1 / tiny, 1 / b
    h = d
    for i in range(1, 100_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = d if abs(d) > tiny else tiny
        c = b + an / c
        c = c if abs(c) > tiny else tiny
        d = 1 / d
        h *= d * c
        if abs(d * c - 1) < 1e-16:
            break
    return math.exp(log_front) * h


def ks_statistic(samples: Iterable[float], cdf: Callable[[float], float]) -> float:
    """The Kolmogorov-Smirnov distance between the samples' empirical distribution and `cdf`."""
    ordered = sorted(samples)
    n = len(ordered)
    return max(max(i / n - cdf(x), cdf(x) - (i - 1) / n) for i, x in enumerate(ordered, start=1))


def ks_p_bound(distance: float, n: int) -> float:
    """An upper bound on the p-value of a KS distance over n samples, by the
    Dvoretzky-Kiefer-Wolfowitz inequality with Massart's constant: P[D ≥ d] ≤ 2 exp(-2 n d²)
    for any distribution. Rejecting below 1e-6 fails a correct mechanism at most that often."""
    return min(1.0, 2 * math.exp(-2 * n * distance**2))


def recalibrated(canonical: dict) -> dict:
    """A careful host keeps its edit consistent: the accountant's figures recomputed from the
    edited terms, so that the enclave's own checks of the terms pass."""
    edited = terms.read_terms(canonical)
    parsed = parse_query(canonical["sql"], edited.datasets)
    canonical["accountant"] = terms.accountant_terms(
        parsed=parsed,
        rows_per_unit=edited.rows_per_unit,
        min_group_size=edited.min_group_size,
        released=measurements(
            parsed,
            edited.columns,
            epsilon=Decimal(canonical["epsilon"]),
            rows_per_unit=edited.rows_per_unit,
            mechanism=canonical["mechanism"],
        ),
    )
    return canonical

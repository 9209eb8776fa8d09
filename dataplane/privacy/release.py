"""The differentially private release of a query's aggregates: the data-plane work of the enclave.

This module runs inside the TEE only, on decrypted rows; the web process never calls it.

1. Per-row work happens once, in Polars. Each dataset's filters, then its contribution bound: at
   most `rows_per_unit` (L) rows per privacy unit, chosen uniformly at random (rows without a
   unit are dropped). In a JOIN, each dataset then keeps only the rows whose join key is unique
   in it (a key repeated within one dataset is left out, like a null key). With unique keys on
   both sides of every join, each row of each dataset appears in at most one joined row, so after
   the join a unit still has at most L rows, and adding or removing a unit changes at most L
   joined rows (each of its rows either joins once, or makes one other row's key repeated). A
   dataset joined on J different key columns can lose J rows to one new row, and a person may
   sit in every dataset read, so a query is calibrated for L times the sum over its datasets of
   max(1, J) (`calibration.changed_rows`); `check_release` refuses less. Truncating *after* a
   join would not give the bound L: rows of a new unit can push other units' rows out of their
   top L, so the output can change by far more than L rows.
   Join keys are read only as a seeded 128-bit hash (two seeded 64-bit hashes, secret per
   release), which the uniqueness check and the joins compare: distinct keys agree by accident
   with a probability of about 2^-128 per pair, and even then every row joins at most once.
   A UNION ALL concatenates the branches after each has been bounded; its measures are clamped
   to the first branch's bounds, which the calibration used.
   Measures are clamped to the policy bounds (integer measures to the whole numbers inside them);
   a missing or NaN measure adds nothing to a sum but its row is counted. Float measures are
   summed exactly in fixed point (a grid of 2^-k with max(|lower|, |upper|)·2^k ≤ 2^20), so a
   floating-point sum's rounding cannot stretch the sensitivity; the grid is finer than a
   millionth of the bound.
2. Groups come from the dimensions' public domains (their cartesian product, in declared order;
   rows whose value is outside the domain fall out), so which groups exist reveals nothing. Per
   group: the exact count and the sum of each measure.
3. Noise: one OpenDP vector Laplace mechanism per measurement (the count; the sum of each measure)
   over the whole vector of groups: discrete Laplace for counts and integer sums, Laplace for
   float sums, at the measurement's calibrated scale. A unit's at most L rows may fall in
   different groups; their total effect on the count vector is L and on a sum vector
   L·max(|lower|, |upper|): the measurement's sensitivity. The mechanism's own privacy map at
   that sensitivity must not exceed the measurement's ε, or nothing is released.
4. Post-processing of noisy values only: AVG is the noisy sum over the noisy count (null when that
   count is ≤ 0), clamped to the measure's bounds; groups whose noisy count is under the minimum
   group size are suppressed (values withheld, flagged). Each cell carries its mechanism, scale
   and 95 % interval: value ± the measurement's accuracy for counts and sums. For AVG the interval
   holds every ratio reachable when the sum and the count are each within their 97.5 % accuracy
   (so together within 95 %), intersected with the bounds; it is labelled approximate.

The exact aggregates never leave `release_aggregates`: they are not returned, logged or stored.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from fractions import Fraction
from itertools import product
from typing import Any

import opendp.prelude as dp
import polars as pl

from dataplane.privacy.calibration import (
    CONFIDENCE,
    Measurement,
    changed_rows,
    fixed_point_shift,
    inexact_draw,
)
from dataplane.sql.plan import AggregateKind, ColumnInfo, ColumnRef, FilterOp, ParsedQuery, Shape

dp.enable_features("contrib")

COUNT = "count"
SUPPRESSED = "suppressed"
_FLOAT_EXACT = 2**53  # a float sum must stay below this on the grid to convert exactly
_INT64 = 2**63
# Join keys are hashed as one type per catalog type, so that equal keys hash equally whatever
# width each dataset's file stores them in.
_KEY_TYPES: dict[str, pl.DataType] = {
    "integer": pl.Int64(),
    "float": pl.Float64(),
    "string": pl.String(),
    "boolean": pl.Boolean(),
    "date": pl.Date(),
}


class ReleaseError(Exception):
    """The release is refused, with the reason; no noisy value exists yet."""


@dataclass(frozen=True)
class ReleasedTable:
    """The noisy result: per group, its dimension values, one cell per aggregate, and whether
    the group is suppressed. A cell is {value, mechanism, scale, ci95_low, ci95_high,
    approximate}; a suppressed group's values and intervals are None."""

    columns: tuple[str, ...]  # dimension aliases, then aggregate aliases
    dimensions: tuple[str, ...]
    rows: list[dict[str, Any]]
    measurements: tuple[dict[str, Any], ...]
    rows_per_unit: int
    min_group_size: int
    confidence: float = CONFIDENCE

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types only (dates as ISO strings)."""
        return {
            "columns": list(self.columns),
            "dimensions": list(self.dimensions),
            "rows": [{key: _plain(value) for key, value in row.items()} for row in self.rows],
            "measurements": [dict(m) for m in self.measurements],
            "rows_per_unit": self.rows_per_unit,
            "min_group_size": self.min_group_size,
            "confidence": self.confidence,
        }


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value
    raise TypeError(f"{type(value).__name__} is not a plain JSON value")


# The plan of a release -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Measure:
    """A measure column as it is summed: clamped, and for floats on the fixed-point grid."""

    ref: ColumnRef
    name: str  # the measurement's name, "sum(<dataset>.<column>)"
    integer: bool
    lower: Decimal  # the policy bounds
    upper: Decimal
    shift: int  # k: a value x is summed as round(x·2^k); 0 for integer measures
    low: int  # the clamp bounds on the grid
    high: int

    @property
    def bound(self) -> int:
        """The largest |value| one row adds to the sum, on the grid."""
        return max(abs(self.low), abs(self.high))

    def to_float(self, grid_sum: int) -> float:
        return math.ldexp(float(grid_sum), -self.shift)


@dataclass(frozen=True)
class _Release:
    """What the checks establish before any data is read."""

    L: int
    measures: dict[ColumnRef, _Measure]
    mechanisms: dict[str, Any]  # measurement name -> OpenDP measurement over the group vector
    key_columns: dict[str, tuple[str, ...]]  # dataset -> its join-key columns
    key_types: dict[tuple[str, str], pl.DataType]  # (dataset, join key) -> the type it hashes as


def _measure(ref: ColumnRef, info: ColumnInfo) -> _Measure:
    name = f"sum({ref.dataset}.{ref.column})"
    if info.lower is None or info.upper is None:
        raise ReleaseError(f"{ref.dataset}.{ref.column} has no clamp bounds")
    lower, upper = Decimal(info.lower), Decimal(info.upper)
    if not (lower.is_finite() and upper.is_finite()) or lower > upper:
        raise ReleaseError(f"{ref.dataset}.{ref.column} has invalid bounds [{lower}, {upper}]")
    if info.type == "integer":
        shift = 0
    elif info.type == "float":
        shift = fixed_point_shift(lower, upper)
    else:
        raise ReleaseError(f"{ref.dataset}.{ref.column} is {info.type}, not a number")
    # Clamp inside the bounds (exactly, in rationals): grid values never exceed the policy's.
    grid = Fraction(2) ** shift
    low, high = math.ceil(Fraction(lower) * grid), math.floor(Fraction(upper) * grid)
    if low > high:
        raise ReleaseError(
            f"{ref.dataset}.{ref.column}: no whole number lies in [{lower}, {upper}]"
        )
    return _Measure(ref, name, info.type == "integer", lower, upper, shift, low, high)


def _mechanism(measurement: Measurement, d_in: int | float) -> Any:
    """The vector Laplace mechanism of a measurement; refused unless its privacy map at the
    sensitivity stays within the measurement's ε."""
    if measurement.discrete:
        domain = dp.vector_domain(dp.atom_domain(T="i64"))
        metric = dp.l1_distance(T="i64")
    else:
        domain = dp.vector_domain(dp.atom_domain(T=float, nan=False))
        metric = dp.l1_distance(T=float)
    mechanism = dp.m.make_laplace(domain, metric, scale=measurement.scale)
    spent = mechanism.map(d_in)
    if not spent <= measurement.epsilon:
        raise ReleaseError(
            f"{measurement.name}: at sensitivity {d_in} and scale {measurement.scale} OpenDP's "
            f"privacy map gives ε = {spent}, more than its share {measurement.epsilon}"
        )
    return mechanism


def check_release(
    parsed: ParsedQuery,
    columns: Mapping[tuple[str, str], ColumnInfo],
    units: Mapping[str, str],
    measurements: Mapping[str, Measurement],
    *,
    rows_per_unit: int,
) -> None:
    """Refuse, before any data is read and any noise drawn, a release that could not keep its
    privacy claim. The enclave calls this before it declares that noise exists."""
    _prepare(parsed, columns, units, measurements, rows_per_unit=rows_per_unit)


def _prepare(
    parsed: ParsedQuery,
    columns: Mapping[tuple[str, str], ColumnInfo],
    units: Mapping[str, str],
    measurements: Mapping[str, Measurement],
    *,
    rows_per_unit: int,
) -> _Release:
    if isinstance(rows_per_unit, bool) or not isinstance(rows_per_unit, int) or rows_per_unit < 1:
        raise ReleaseError(f"the contribution bound must be a whole number ≥ 1: {rows_per_unit}")
    for name in parsed.datasets:
        if not units.get(name):
            raise ReleaseError(f"{name} has no privacy unit column")
    outputs = [d.alias for d in parsed.dimensions] + [a.alias for a in parsed.aggregates]
    if SUPPRESSED in outputs:
        raise ReleaseError(f"the output name {SUPPRESSED} is reserved for the suppression flag")
    for dimension in parsed.dimensions:
        info = columns.get((dimension.column.dataset, dimension.column.column))
        if info is None or not info.domain:
            ref = dimension.column
            raise ReleaseError(f"{ref.dataset}.{ref.column} has no public domain of values")
    if COUNT not in measurements:
        raise ReleaseError(
            "no noisy count is measured, so groups under the minimum size cannot be suppressed"
        )

    key_columns = parsed.join_keys() if parsed.shape is Shape.JOIN else {}
    # What one person can change, in every dataset they may sit in (calibration.changed_rows).
    rows = changed_rows(parsed, rows_per_unit)

    measures: dict[ColumnRef, _Measure] = {}
    for aggregate in parsed.aggregates:
        if aggregate.kind in (AggregateKind.SUM, AggregateKind.AVG):
            ref = aggregate.measured_column
            info = columns.get((ref.dataset, ref.column))
            if info is None:
                raise ReleaseError(f"{ref.dataset}.{ref.column} is not in the catalog")
            measures[ref] = _measure(ref, info)

    mechanisms: dict[str, Any] = {}
    needed = {COUNT: None} | {m.name: m for m in measures.values()}
    for name, measure in needed.items():
        measurement = measurements.get(name)
        if measurement is None:
            raise ReleaseError(f"{name} is released but was not calibrated")
        discrete = measure is None or measure.integer
        if measurement.discrete != discrete:
            raise ReleaseError(f"{name} was calibrated for the wrong kind of noise")
        if measure is None:
            required: float = rows
        elif measure.integer:
            required = rows * measure.bound
        else:
            required = measure.to_float(rows * measure.bound)
        # Discrete mechanisms take a whole-number sensitivity; calibration uses the same one.
        declared = math.floor(measurement.sensitivity) if discrete else measurement.sensitivity
        if not required <= declared:
            raise ReleaseError(
                f"{name}: one privacy unit can change it by {required}, but it was calibrated "
                f"for {measurement.sensitivity}"
            )
        refusal = inexact_draw(measurement)
        if refusal:
            raise ReleaseError(refusal)
        mechanisms[name] = _mechanism(measurement, declared)
    key_types = {}
    for dataset, keys in key_columns.items():
        for key in keys:
            info = columns.get((dataset, key))
            if info is None or info.type not in _KEY_TYPES:
                raise ReleaseError(f"{dataset}.{key} cannot be a join key")
            key_types[(dataset, key)] = _KEY_TYPES[info.type]
    return _Release(rows_per_unit, measures, mechanisms, key_columns, key_types)


# Per-row work ----------------------------------------------------------------------------------


def _filter(column: str, op: FilterOp, values: Sequence[Any]) -> pl.Expr:
    col = pl.col(column)
    if op is FilterOp.IN:
        return col.is_in(list(values))
    if op is FilterOp.EQ:
        return col == values[0]
    if op is FilterOp.BETWEEN:
        return col.is_between(values[0], values[1], closed="both")
    raise ReleaseError(f"unknown filter {op}")


def _summand(source: str, measure: _Measure) -> pl.Expr:
    """A measure as one row adds it to the sum: clamped, on the grid, as Int64."""
    if measure.integer:
        return pl.col(source).cast(pl.Int64).clip(measure.low, measure.high)
    return (
        pl.col(source)
        .cast(pl.Float64)
        .fill_nan(None)
        .mul(math.ldexp(1.0, measure.shift))
        .round(0)
        .clip(float(measure.low), float(measure.high))
        .cast(pl.Int64)
    )


def _position_in_run(column: str) -> pl.Expr:
    """0, 1, 2, ... within each run of equal values of a sorted column."""
    index = pl.int_range(pl.len(), dtype=pl.Int64)
    starts = pl.when(pl.col(column) != pl.col(column).shift(1)).then(index)
    return index - starts.fill_null(0).cum_max()


@dataclass(frozen=True)
class _Seeds:
    """Secret per release: the random choice of rows, and the seeded hashes of join keys (the
    same for every dataset, so that equal keys hash equally)."""

    rows: int
    key: tuple[int, int]

    @classmethod
    def draw(cls) -> _Seeds:
        return cls(secrets.randbits(63), (secrets.randbits(63), secrets.randbits(63)))


_UNIT = "__unit"


def _key(index: int, column: str) -> str:
    """The internal name of a join key of dataset number `index`; its two 64-bit hashes are
    `<name>#1` and `<name>#2`."""
    return f"__key{index}_{column}"


def _repeated_rows(values: pl.Series) -> pl.Series | None:
    """Which rows hold a value that another row holds too; None when no value repeats. Found by
    sorting, which needs a fraction of the memory of hashing every row into groups."""
    if len(values) < 2:
        return None
    order = values.arg_sort()
    ordered = values.gather(order)
    same_as_next = ordered.slice(1) == ordered.slice(0, len(ordered) - 1)
    if not same_as_next.any():
        return None
    edge = pl.Series([False])
    flags = pl.concat([same_as_next, edge]) | pl.concat([edge, same_as_next])
    rows = order.filter(flags)  # row numbers, of polars' index type as arg_sort gives them
    numbers = pl.int_range(len(values), dtype=pl.get_index_type())
    return pl.select(numbers.is_in(rows.implode())).to_series()


def _bound(frame: pl.DataFrame, keys: Sequence[str], limit: int, seed: int) -> pl.DataFrame:
    """A dataset's rows after its contribution bound and, in a join, unique join keys.

    Each unit keeps at most `limit` rows, chosen uniformly at random: units seen once pass
    untouched, the others are sorted by unit and a random key, and each keeps its first `limit`
    rows. Then, on that bounded frame, each join key column is checked independently, and a row
    is kept only if each of its keys appears once: one new row can then drop at most one other
    row per key column. A key is its 128-bit hash (`<key>#1`, `<key>#2`).
    """
    unit = frame[_UNIT]
    # Integers sort as they are; other units by a 64-bit hash, whose rare collisions only send
    # rows to the exact path below.
    repeated = _repeated_rows(unit if unit.dtype.is_integer() else unit.hash(seed))
    if repeated is not None:
        many = (
            frame.filter(repeated)
            .with_columns(_random=pl.int_range(pl.len(), dtype=pl.UInt64).hash(seed ^ 0x5EED))
            .sort(_UNIT, "_random")
            .filter(_position_in_run(_UNIT) < limit)
            .drop("_random")
        )
        frame = pl.concat([frame.filter(~repeated), many])
    # A repeated first hash may hide distinct keys: those rows are checked on both hashes.
    dropped: list[pl.Series] = []
    for key in keys:
        repeated = _repeated_rows(frame[f"{key}#1"])
        if repeated is not None:
            rows = frame.select(
                pl.int_range(pl.len(), dtype=pl.Int64).alias("__row"), f"{key}#1", f"{key}#2"
            ).filter(repeated)
            dropped.append(rows.filter(pl.struct(f"{key}#1", f"{key}#2").is_duplicated())["__row"])
    if dropped:
        index = pl.int_range(pl.len(), dtype=pl.Int64)
        frame = frame.filter(~index.is_in(pl.concat(dropped).implode()))
    return frame.drop(_UNIT)


def _rows(
    frames: Mapping[str, pl.LazyFrame],
    parsed: ParsedQuery,
    units: Mapping[str, str],
    plan: _Release,
    internal: Mapping[ColumnRef, str],
    seeds: _Seeds,
    only: Sequence[str] | None = None,
) -> pl.LazyFrame:
    """The bounded, clamped rows, with the dimensions and summands under internal names; of
    the datasets `only` (an owner's own branches of a UNION ALL) when given."""
    parts: list[pl.DataFrame] = []
    for index, dataset in enumerate(parsed.datasets):
        if only is not None and dataset not in only:
            continue
        frame = frames.get(dataset)
        if frame is None:
            raise ReleaseError(f"no data for {dataset}")
        conditions = [
            _filter(f.column.column, f.op, f.values)
            for f in parsed.filters
            if f.column.dataset == dataset
        ]
        lazy = frame.lazy()
        if conditions:
            lazy = lazy.filter(*conditions)

        # In a UNION ALL each dimension and measure names the first branch's column, and every
        # branch has a column of that name; in a JOIN each comes from one dataset.
        def mine(ref: ColumnRef, dataset: str = dataset) -> bool:
            return parsed.shape is Shape.UNION or ref.dataset == dataset

        keys = {key: _key(index, key) for key in plan.key_columns.get(dataset, ())}

        def hashed(key: str, part: int, dataset: str = dataset) -> pl.Expr:
            typed = pl.col(key).cast(plan.key_types[(dataset, key)])
            return typed.hash(seeds.key[part])

        # Rows without a unit, or without a join key, never count.
        lazy = lazy.filter(
            pl.col(units[dataset]).is_not_null(), *(pl.col(k).is_not_null() for k in keys)
        )
        projections = [
            pl.col(units[dataset]).alias(_UNIT),
            *(
                pl.col(d.column.column).alias(internal[d.column])
                for d in parsed.dimensions
                if mine(d.column)
            ),
            *(
                _summand(ref.column, measure).alias(internal[ref])
                for ref, measure in plan.measures.items()
                if mine(ref)
            ),
            # A join key is only ever compared: by its seeded 128-bit hash, never held itself.
            *(hashed(key, 0).alias(f"{name}#1") for key, name in keys.items()),
            *(hashed(key, 1).alias(f"{name}#2") for key, name in keys.items()),
        ]
        rows = lazy.select(projections).collect(engine="streaming")
        parts.append(_bound(rows, list(keys.values()), plan.L, seeds.rows + index))

    if parsed.shape is Shape.UNION:
        return pl.concat([part.lazy() for part in parts], how="vertical_relaxed")
    position = {dataset: index for index, dataset in enumerate(parsed.datasets)}
    joined = parts[0].lazy()
    for join in parsed.joins:
        left, right = position[join.left.dataset], position[join.right.dataset]
        # Equal keys have equal hashes; distinct keys agree on both 64-bit hashes by accident
        # with a probability of about 2^-128 per pair of rows.
        joined = joined.join(
            parts[right].lazy(),
            left_on=f"{_key(left, join.left.column)}#1",
            right_on=f"{_key(right, join.right.column)}#1",
            how="inner",
            coalesce=False,  # a later join may compare the right side's key
        ).filter(
            pl.col(f"{_key(left, join.left.column)}#2")
            == pl.col(f"{_key(right, join.right.column)}#2")
        )
    return joined


def _groups(parsed: ParsedQuery, columns: Mapping[tuple[str, str], ColumnInfo]) -> list[tuple]:
    """The public groups: the cartesian product of the dimensions' domains, in declared order."""
    domains = [
        list(dict.fromkeys(columns[(d.column.dataset, d.column.column)].domain))
        for d in parsed.dimensions
    ]
    return list(product(*domains))


# The release -----------------------------------------------------------------------------------


def _grid_vectors(
    frames: Mapping[str, pl.LazyFrame],
    parsed: ParsedQuery,
    columns: Mapping[tuple[str, str], ColumnInfo],
    units: Mapping[str, str],
    plan: _Release,
    only: Sequence[str] | None = None,
) -> tuple[list[tuple], dict[str, list[int]]]:
    """The public groups and, per measurement, the exact vector over them on the integer
    grid: the count, and each measure's clamped sum (float measures in fixed point)."""
    seeds = _Seeds.draw()
    internal: dict[ColumnRef, str] = {}
    for number, dimension in enumerate(parsed.dimensions):
        internal[dimension.column] = f"__dim{number}"
    for number, ref in enumerate(plan.measures):
        internal[ref] = f"__sum{number}"
    dims = [internal[d.column] for d in parsed.dimensions]
    sums = {plan.measures[ref].name: internal[ref] for ref in plan.measures}

    rows = _rows(frames, parsed, units, plan, internal, seeds, only)
    aggregations = [pl.len().alias(COUNT), *(pl.col(c).sum().alias(n) for n, c in sums.items())]
    if dims:
        exact = rows.group_by(dims).agg(aggregations).collect()
    else:
        exact = rows.select(aggregations).collect()

    # Integer sums must not overflow Int64, and float sums must convert to floats exactly.
    total_rows = int(exact[COUNT].sum())
    for measure in plan.measures.values():
        limit = _INT64 if measure.integer else _FLOAT_EXACT
        if total_rows * measure.bound >= limit:
            raise ReleaseError(f"too many rows to sum {measure.name} exactly")

    groups = _groups(parsed, columns)
    if dims:
        schema = exact.schema
        try:
            grid = pl.DataFrame(
                {
                    name: pl.Series(name, [group[i] for group in groups]).cast(schema[name])
                    for i, name in enumerate(dims)
                },
                schema={name: schema[name] for name in dims},
            ).with_row_index("__group")
        except (pl.exceptions.PolarsError, TypeError, ValueError) as error:
            raise ReleaseError(
                f"a public domain does not match its column's type: {error}"
            ) from None
        exact = (
            grid.join(exact, on=dims, how="left", nulls_equal=False).sort("__group").fill_null(0)
        )
    vectors: dict[str, list] = {COUNT: [int(v) for v in exact[COUNT].to_list()]}
    for measure in plan.measures.values():
        vectors[measure.name] = [int(v) for v in exact[measure.name].to_list()]
    return groups, vectors


def input_vectors(
    frames: Mapping[str, pl.LazyFrame],
    parsed: ParsedQuery,
    columns: Mapping[tuple[str, str], ColumnInfo],
    units: Mapping[str, str],
    *,
    rows_per_unit: int,
) -> dict[str, list[int]]:
    """An MPC input step's exact vectors, on the integer grid, over the public groups: the
    owner's datasets in `frames` (one dataset, or its branches of a UNION ALL) with the same
    filters, contribution bound and clamping as the enclave applies. They are secret-shared
    at once and never stored or logged; the noise is added inside MPC."""
    if parsed.shape is Shape.JOIN:
        raise ReleaseError("a join cannot be pre-aggregated by each owner")
    for name in frames:
        if not units.get(name):
            raise ReleaseError(f"{name} has no privacy unit column")
    plan = _Release(rows_per_unit, _measures(parsed, columns), {}, {}, {})
    return _grid_vectors(frames, parsed, columns, units, plan, only=list(frames))[1]


def noisy_table(
    parsed: ParsedQuery,
    columns: Mapping[tuple[str, str], ColumnInfo],
    measurements: Mapping[str, Measurement],
    noisy: Mapping[str, list],
    *,
    rows_per_unit: int,
    min_group_size: int,
) -> ReleasedTable:
    """The released table from noisy vectors computed elsewhere (the MPC engine's, opened from
    the compute parties' output shares), post-processed exactly as the enclave's: AVG,
    intervals, and suppression of groups under the minimum noisy count."""
    plan = _Release(rows_per_unit, _measures(parsed, columns), {}, {}, {})
    groups = _groups(parsed, columns)
    return _table(parsed, plan, measurements, groups, noisy, rows_per_unit, min_group_size)


def _measures(
    parsed: ParsedQuery, columns: Mapping[tuple[str, str], ColumnInfo]
) -> dict[ColumnRef, _Measure]:
    measures: dict[ColumnRef, _Measure] = {}
    for aggregate in parsed.aggregates:
        if aggregate.kind in (AggregateKind.SUM, AggregateKind.AVG):
            ref = aggregate.measured_column
            info = columns.get((ref.dataset, ref.column))
            if info is None:
                raise ReleaseError(f"{ref.dataset}.{ref.column} is not in the catalog")
            measures[ref] = _measure(ref, info)
    return measures


def release_aggregates(
    frames: Mapping[str, pl.LazyFrame],
    parsed: ParsedQuery,
    columns: Mapping[tuple[str, str], ColumnInfo],
    units: Mapping[str, str],
    measurements: Mapping[str, Measurement],
    *,
    rows_per_unit: int,
    min_group_size: int,
) -> ReleasedTable:
    """The differentially private table of `parsed` over the decrypted `frames`."""
    plan = _prepare(parsed, columns, units, measurements, rows_per_unit=rows_per_unit)
    groups, grid = _grid_vectors(frames, parsed, columns, units, plan)
    # Float measures leave the fixed-point grid: their noise is added to floats.
    vectors: dict[str, list[int] | list[float]] = dict(grid)
    for measure in plan.measures.values():
        if not measure.integer:
            vectors[measure.name] = [measure.to_float(v) for v in grid[measure.name]]
    del grid
    noisy = {name: plan.mechanisms[name](vector) for name, vector in vectors.items()}
    del vectors
    return _table(parsed, plan, measurements, groups, noisy, rows_per_unit, min_group_size)


def _table(
    parsed: ParsedQuery,
    plan: _Release,
    measurements: Mapping[str, Measurement],
    groups: list[tuple],
    noisy: Mapping[str, list],
    rows_per_unit: int,
    min_group_size: int,
) -> ReleasedTable:
    """Post-processing of the noisy vectors only."""
    count = measurements[COUNT]
    alpha = (1 - CONFIDENCE) / 2  # each half of an AVG's interval: the union bound gives 95 %
    rows: list[dict[str, Any]] = []
    for g, group in enumerate(groups):
        noisy_count = noisy[COUNT][g]
        suppressed = noisy_count < min_group_size
        row: dict[str, Any] = {
            dimension.alias: value
            for dimension, value in zip(parsed.dimensions, group, strict=True)
        }
        for aggregate in parsed.aggregates:
            if aggregate.kind is AggregateKind.COUNT:
                cell = _cell(noisy_count, count)
            else:
                measure = plan.measures[aggregate.measured_column]
                total = measurements[measure.name]
                if aggregate.kind is AggregateKind.SUM:
                    cell = _cell(noisy[measure.name][g], total)
                else:
                    cell = _average(
                        noisy[measure.name][g], noisy_count, total, count, measure, alpha
                    )
            if suppressed:
                cell.update(value=None, ci95_low=None, ci95_high=None)
            row[aggregate.alias] = cell
        row[SUPPRESSED] = suppressed
        rows.append(row)
    used = [COUNT, *(m.name for m in plan.measures.values())]
    return ReleasedTable(
        columns=tuple(d.alias for d in parsed.dimensions)
        + tuple(a.alias for a in parsed.aggregates),
        dimensions=tuple(d.alias for d in parsed.dimensions),
        rows=rows,
        measurements=tuple(measurements[name].as_dict() for name in used),
        rows_per_unit=rows_per_unit,
        min_group_size=min_group_size,
    )


def _half_width(accuracy: float) -> float:
    # OpenDP's discrete accuracy is -inf for scales far below 1: the noise is then 0.
    return accuracy if accuracy > 0 else 0.0


def _cell(value: int | float, measurement: Measurement) -> dict[str, Any]:
    accuracy = _half_width(measurement.accuracy)
    return {
        "value": value,
        "mechanism": measurement.mechanism,
        "scale": measurement.scale,
        "ci95_low": value - accuracy,
        "ci95_high": value + accuracy,
        "approximate": False,
    }


def _accuracy(measurement: Measurement, alpha: float) -> float:
    scale = float(measurement.scale)
    if measurement.discrete:
        # On a fixed-point grid (MPC float sums) the noise is discrete on the grid's units.
        grid = float(dp.discrete_laplacian_scale_to_accuracy(measurement.grid_scale, alpha))
        return _half_width(math.ldexp(grid, -measurement.shift))
    return _half_width(float(dp.laplacian_scale_to_accuracy(scale, alpha)))


def _average(
    total: int | float,
    count: int,
    sum_measurement: Measurement,
    count_measurement: Measurement,
    measure: _Measure,
    alpha: float,
) -> dict[str, Any]:
    lower, upper = float(measure.lower), float(measure.upper)
    cell: dict[str, Any] = {
        "value": None,
        "mechanism": f"{sum_measurement.mechanism} sum / {count_measurement.mechanism} count",
        "scale": None,
        "ci95_low": None,
        "ci95_high": None,
        "approximate": True,
    }
    if count <= 0:
        return cell
    value = min(max(total / count, lower), upper)
    sum_error = _accuracy(sum_measurement, alpha)
    count_error = _accuracy(count_measurement, alpha)
    if count - count_error <= 0:
        low, high = lower, upper
    else:
        corners = [
            (total + s) / (count + c)
            for s in (-sum_error, sum_error)
            for c in (-count_error, count_error)
        ]
        low, high = max(min(corners), lower), min(max(corners), upper)
    cell.update(value=value, ci95_low=min(low, value), ci95_high=max(high, value))
    return cell

"""The output columns of a synthetic extract, and their public encoding as discrete codes.

Everything here is derived from the policy (types, public domains, clamp bounds), never from the
rows, so the bins, the categories and hence the shape of every marginal are public.

Bin rule (`public_bins`): a numeric column is cut into at most `MAX_BINS` (16) contiguous bins
between its clamp bounds.
- integer: the whole numbers lower..upper (bounds rounded inwards), split into min(16, count)
  runs of equal length (lengths differ by at most one); the edges are whole numbers and bin k
  holds edges[k] <= x < edges[k + 1] (the last edge is upper + 1);
- float: 16 equal-width bins, edges[k] <= x < edges[k + 1], upper itself in the last bin.
A categorical column (string, boolean, date, or any column given public `categories`) has one
code per category, in the declared order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from itertools import pairwise

import numpy as np
import polars as pl

MAX_BINS = 16
INTEGER, FLOAT, STRING, BOOLEAN, DATE = "integer", "float", "string", "boolean", "date"
TYPES = (INTEGER, FLOAT, STRING, BOOLEAN, DATE)
_DTYPES: dict[str, pl.DataType] = {
    INTEGER: pl.Int64(),
    FLOAT: pl.Float64(),
    STRING: pl.String(),
    BOOLEAN: pl.Boolean(),
    DATE: pl.Date(),
}


class SynthesisError(ValueError):
    """A request the synthesizer refuses, with the reason."""


@dataclass(frozen=True)
class SynthColumn:
    """One output column: its catalog type and the public facts from the policy."""

    name: str
    type: str  # one of TYPES, as in the dataset schema
    categories: tuple | None = None  # the public domain of a dimension-like column
    lower: float | None = None  # the clamp bounds of a numeric column
    upper: float | None = None

    @property
    def categorical(self) -> bool:
        return self.categories is not None or self.type in (STRING, BOOLEAN, DATE)

    @property
    def dtype(self) -> pl.DataType:
        return _DTYPES[self.type]

    def domain(self) -> tuple:
        """The public categories of a categorical column (booleans default to false, true)."""
        if self.categories is not None:
            return tuple(self.categories)
        if self.type == BOOLEAN:
            return (False, True)
        raise SynthesisError(f"Column {self.name!r} has no public domain of categories.")

    def size(self) -> int:
        """How many codes the column has: its categories, or its bins."""
        return len(self.domain()) if self.categorical else len(public_bins(self)) - 1


def public_bins(column: SynthColumn) -> list:
    """The public bin edges of a numeric column (see the module docstring for the rule)."""
    if column.categorical:
        raise SynthesisError(f"Column {column.name!r} is categorical: it has categories, not bins.")
    if column.lower is None or column.upper is None:
        raise SynthesisError(
            f"Column {column.name!r} needs public lower and upper bounds from the policy."
        )
    lower, upper = float(column.lower), float(column.upper)
    if not (math.isfinite(lower) and math.isfinite(upper)) or lower > upper:
        raise SynthesisError(f"Column {column.name!r} has invalid bounds [{lower}, {upper}].")
    if column.type == INTEGER:
        low, high = math.ceil(lower), math.floor(upper)
        if low > high:
            raise SynthesisError(f"Column {column.name!r} has no whole number in its bounds.")
        count = high - low + 1
        bins = min(MAX_BINS, count)
        return [low + (k * count) // bins for k in range(bins + 1)]
    if lower == upper:
        return [lower, upper]
    return [lower + (upper - lower) * k / MAX_BINS for k in range(MAX_BINS + 1)]


def code_labels(column: SynthColumn) -> list[str]:
    """A label per code: the category, or the bin's range (integers: "lo-hi", floats:
    "[lo, hi)", the last bin closed)."""
    if column.categorical:
        return [str(c) for c in column.domain()]
    edges = public_bins(column)
    if column.type == INTEGER:
        return [
            str(low) if high - 1 == low else f"{low}-{high - 1}" for low, high in pairwise(edges)
        ]
    last = len(edges) - 2
    return [
        f"[{low:g}, {high:g}{']' if k == last else ')'}"
        for k, (low, high) in enumerate(pairwise(edges))
    ]


def check_columns(columns: Sequence[SynthColumn]) -> None:
    """Refuse columns the synthesizer cannot encode from public facts alone."""
    if not columns:
        raise SynthesisError("A synthetic extract needs at least one column.")
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise SynthesisError(f"Column names must be unique: {names}.")
    for column in columns:
        if column.type not in TYPES:
            raise SynthesisError(f"Column {column.name!r} has unknown type {column.type!r}.")
        if column.categorical:
            if column.categories is None and column.type != BOOLEAN:
                raise SynthesisError(
                    f"Column {column.name!r} ({column.type}) needs its public domain of "
                    "categories from the policy."
                )
            domain = column.domain()
            if not domain or len(set(domain)) != len(domain):
                raise SynthesisError(
                    f"Column {column.name!r} needs a non-empty domain of distinct categories."
                )
        else:
            public_bins(column)


def _category_values(column: SynthColumn) -> pl.Series:
    values = list(column.domain())
    if column.type == BOOLEAN:
        values = [v if isinstance(v, bool) else str(v).strip().lower() == "true" for v in values]
    elif column.type == DATE:
        values = [v if isinstance(v, date) else date.fromisoformat(str(v)) for v in values]
    return pl.Series(column.name, values, dtype=column.dtype, strict=False)


def clamp(frame: pl.DataFrame, columns: Sequence[SynthColumn]) -> pl.DataFrame:
    """The rows the synthesizers learn from: the output columns only, numeric values clamped to
    their bounds (integers to the whole numbers inside them), and rows with a missing value or a
    category outside its public domain left out. Each step is per row, so a privacy unit still
    contributes at most as many rows as before."""
    missing = [c.name for c in columns if c.name not in frame.columns]
    if missing:
        raise SynthesisError(f"The input rows lack the columns {missing}.")
    expressions, keep = [], []
    for column in columns:
        value = pl.col(column.name)
        if column.categorical:
            categories = _category_values(column)
            value = value.cast(column.dtype, strict=False)
            keep.append(value.is_in(categories.implode()))
        else:
            edges = public_bins(column)
            low, high = edges[0], (edges[-1] - 1 if column.type == INTEGER else edges[-1])
            value = value.cast(pl.Float64, strict=False)
            keep.append(value.is_not_null() & value.is_not_nan())
            if column.type == INTEGER:
                value = value.round(0)
            value = value.clip(low, high).cast(column.dtype)
        expressions.append(value.alias(column.name))
    return frame.select(expressions).filter(pl.all_horizontal(keep) if keep else pl.lit(True))


def encode(frame: pl.DataFrame, columns: Sequence[SynthColumn]) -> dict[str, np.ndarray]:
    """Each column's codes (category index, or bin index) for rows already `clamp`ed."""
    codes = {}
    for column in columns:
        if column.categorical:
            categories = _category_values(column)
            index = pl.Series(range(len(categories)), dtype=pl.Int32)
            code = frame.get_column(column.name).replace_strict(categories, index)
            codes[column.name] = code.to_numpy().astype(np.int32)
        else:
            edges = np.asarray(public_bins(column), dtype=np.float64)
            values = frame.get_column(column.name).cast(pl.Float64).to_numpy()
            bins = np.searchsorted(edges, values, side="right") - 1
            codes[column.name] = np.clip(bins, 0, len(edges) - 2).astype(np.int32)
    return codes


def decode(
    codes: dict[str, np.ndarray], columns: Sequence[SynthColumn], rng: np.random.Generator
) -> pl.DataFrame:
    """Rows from codes: categories as declared; numeric values drawn uniformly within their bin
    (whole numbers for integer columns)."""
    series = []
    for column in columns:
        code = np.asarray(codes[column.name], dtype=np.int64)
        if column.categorical:
            series.append(_category_values(column).gather(code).alias(column.name))
            continue
        edges = np.asarray(public_bins(column), dtype=np.float64)
        low, high = edges[code], edges[code + 1]
        if column.type == INTEGER:
            values = rng.integers(low.astype(np.int64), np.maximum(high, low + 1).astype(np.int64))
        else:
            values = np.minimum(low + rng.random(code.size) * (high - low), edges[-1])
        series.append(pl.Series(column.name, values).cast(column.dtype))
    return pl.DataFrame(series)

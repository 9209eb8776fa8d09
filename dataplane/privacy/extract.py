"""The input rows of a synthetic extract: the data-plane work the enclave does before it hands
the rows to dataplane.synthesis. It runs inside the TEE only, on decrypted rows.

The rows go through exactly the per-row work of an aggregate release (dataplane.privacy.release):
each dataset's filters, its contribution bound (at most L rows per privacy unit, chosen at
random), in a JOIN unique join keys compared only as seeded 128-bit hashes, then the join or the
UNION ALL. So one person changes at most `calibration.changed_rows` of the rows handed to the
synthesizer (L per dataset they may sit in, times its join-key columns), which is the
sensitivity the DP method is calibrated for. Then only the projected columns are kept, under
their output names: measures clamped to their policy bounds (integers to whole numbers), and
rows with a missing value, or a dimension value outside its public domain, left out (a per-row
rule, so the bound holds). Neither the unit column nor any join key is ever among them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import polars as pl

from dataplane.privacy.release import (
    _KEY_TYPES,
    ReleaseError,
    _Release,
    _rows,
    _Seeds,
)
from dataplane.sql.plan import ColumnInfo, Dimension, Output, ParsedQuery, Shape


def synth_columns(parsed: ParsedQuery, columns: Mapping[tuple[str, str], ColumnInfo]) -> list:
    """The extract's columns as dataplane.synthesis describes them: a dimension with its public
    domain, a measure with its public clamp bounds. A UNION's column takes the first branch's
    domain and bounds (the parser checked that every branch allows the column)."""
    from dataplane.synthesis import SynthColumn

    synthesized = []
    for projected in parsed.projected:
        info = columns[(projected.column.dataset, projected.column.column)]
        if info.role == "dimension":
            column = SynthColumn(projected.alias, info.type, categories=tuple(info.domain))
        else:
            lower, upper = info.bounds()
            column = SynthColumn(projected.alias, info.type, lower=float(lower), upper=float(upper))
        synthesized.append(column)
    return synthesized


def extract_rows(
    frames: Mapping[str, pl.LazyFrame],
    parsed: ParsedQuery,
    columns: Mapping[tuple[str, str], ColumnInfo],
    units: Mapping[str, str],
    *,
    rows_per_unit: int,
) -> pl.DataFrame:
    """The bounded, joined or unioned, projected and clamped rows the synthesizer learns from."""
    if parsed.output is not Output.SYNTHETIC or not parsed.projected:
        raise ReleaseError("only a synthetic extract's projection is prepared here")
    if isinstance(rows_per_unit, bool) or not isinstance(rows_per_unit, int) or rows_per_unit < 1:
        raise ReleaseError(f"the contribution bound must be a whole number ≥ 1: {rows_per_unit}")
    for name in parsed.datasets:
        if not units.get(name):
            raise ReleaseError(f"{name} has no privacy unit column")
    key_columns = parsed.join_keys() if parsed.shape is Shape.JOIN else {}
    key_types = {}
    for dataset, keys in key_columns.items():
        for key in keys:
            info = columns.get((dataset, key))
            if info is None or info.type not in _KEY_TYPES:
                raise ReleaseError(f"{dataset}.{key} cannot be a join key")
            key_types[(dataset, key)] = _KEY_TYPES[info.type]
    # The release's row pipeline projects dimensions as they are: the projected columns are
    # handed to it as such, and clamped here afterwards.
    as_dimensions = replace(
        parsed, dimensions=tuple(Dimension(p.column, p.alias) for p in parsed.projected)
    )
    internal = {p.column: f"__out{number}" for number, p in enumerate(parsed.projected)}
    plan = _Release(rows_per_unit, {}, {}, key_columns, key_types)
    rows = _rows(frames, as_dimensions, units, plan, internal, _Seeds.draw())
    kept = []
    for projected in parsed.projected:
        info = columns[(projected.column.dataset, projected.column.column)]
        value = pl.col(internal[projected.column])
        if info.role == "dimension":
            kept.append(value.alias(projected.alias))
            continue
        lower, upper = info.bounds()
        if info.type == "integer":
            value = value.cast(pl.Int64).clip(int(-(-lower // 1)), int(upper // 1))
        else:
            value = value.cast(pl.Float64).fill_nan(None).clip(float(lower), float(upper))
        kept.append(value.alias(projected.alias))
    frame = rows.select(kept).drop_nulls().collect()
    for projected in parsed.projected:
        info = columns[(projected.column.dataset, projected.column.column)]
        if info.role == "dimension":
            frame = frame.filter(pl.col(projected.alias).is_in(list(info.domain)))
    return frame

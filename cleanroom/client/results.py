"""A released result as a DataFrame: one row per group, its dimensions, whether it is
suppressed, and for each aggregate its value, 95 % interval, mechanism and noise scale (the
columns of the result's CSV download, `<alias>`, `<alias>_ci95_low`, `<alias>_ci95_high`,
`<alias>_mechanism`, `<alias>_scale`). A synthetic extract is its rows plus its reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

CELL_PARTS = (("", "value"), ("_ci95_low", "ci95_low"), ("_ci95_high", "ci95_high"),
              ("_mechanism", "mechanism"), ("_scale", "scale"))  # fmt: skip


def table_frame(table: dict[str, Any]) -> pl.DataFrame:
    dimensions = table["dimensions"]
    aggregates = table["columns"][len(dimensions) :]
    records = []
    for row in table["rows"]:
        record = {dimension: row[dimension] for dimension in dimensions}
        record["suppressed"] = row["suppressed"]
        for alias in aggregates:
            for suffix, key in CELL_PARTS:
                record[alias + suffix] = row[alias][key]
        records.append(record)
    columns = [*dimensions, "suppressed"] + [a + s for a in aggregates for s, _ in CELL_PARTS]
    schema_overrides = {
        **{
            f"{a}{s}": pl.Float64 for a in aggregates for s in ("_ci95_low", "_ci95_high", "_scale")
        },
        **{f"{a}_mechanism": pl.String for a in aggregates},
    }
    if not records:
        return pl.DataFrame(schema={name: schema_overrides.get(name) for name in columns})
    return pl.DataFrame(
        records, schema_overrides=schema_overrides, infer_schema_length=None
    ).select(columns)


@dataclass(frozen=True)
class Extract:
    """A synthetic extract: its rows, its quality and privacy reports, and what it is (method,
    ε, δ, whether it is differentially private: `label` says so where it is not)."""

    data: pl.DataFrame
    quality: dict[str, Any]
    privacy: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)
    differentially_private: bool = True
    label: str | None = None

    def to_pandas(self):
        return self.data.to_pandas()

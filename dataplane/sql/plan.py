"""The typed form of a joint query, produced by the parser and read by the planner and engines."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any


class QueryError(Exception):
    """A query outside the language, with where it is (1-based line and column) and why."""

    def __init__(self, reason: str, *, line: int = 1, column: int = 1):
        super().__init__(f"line {line}, column {column}: {reason}")
        self.reason = reason
        self.line = line
        self.column = column


class Shape(StrEnum):
    SINGLE = "single"  # one dataset
    JOIN = "join"  # datasets joined on join keys (the vertical case)
    UNION = "union"  # UNION ALL of datasets with the same columns (the horizontal case)


class Output(StrEnum):
    AGGREGATE = "aggregate"  # noisy aggregates per public group
    SYNTHETIC = "synthetic"  # a projection of rows, released only as a synthetic extract


class AggregateKind(StrEnum):
    """The aggregates of the language; a policy allows them by these values."""

    COUNT = "count"
    SUM = "sum"
    AVG = "avg"

    @property
    def label(self) -> str:
        return self.value.upper()


class ColumnRole(StrEnum):
    """What a column of a dataset is for, declared by its owner at upload."""

    UNIT = "unit"
    JOIN_KEY = "join_key"
    DIMENSION = "dimension"
    MEASURE = "measure"
    OTHER = "other"

    @property
    def label(self) -> str:
        return _ROLE_LABELS[self]


_ROLE_LABELS = {
    ColumnRole.UNIT: "Privacy unit id",
    ColumnRole.JOIN_KEY: "Join key",
    ColumnRole.DIMENSION: "Dimension",
    ColumnRole.MEASURE: "Measure",
    ColumnRole.OTHER: "Other",
}


class FilterOp(StrEnum):
    IN = "in"
    EQ = "eq"
    BETWEEN = "between"


class Use(StrEnum):
    """How a query uses a column; each use must be allowed by the dataset's policy."""

    JOIN_KEY = "join_key"
    DIMENSION = "dimension"
    MEASURE = "measure"
    FILTER = "filter"


@dataclass(frozen=True)
class ColumnRef:
    dataset: str  # qualified dataset name, `org_slug.dataset_slug`
    column: str


@dataclass(frozen=True)
class Join:
    left: ColumnRef  # a dataset joined earlier
    right: ColumnRef  # the dataset this JOIN brings in, however the ON clause is written


@dataclass(frozen=True)
class Filter:
    column: ColumnRef
    op: FilterOp
    # IN: the set; EQ: one value; BETWEEN: (low, high). Each an int, float, str, bool, or a
    # datetime.date (written 'YYYY-MM-DD').
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Aggregate:
    kind: AggregateKind
    column: ColumnRef | None  # None for COUNT(*)
    alias: str

    @property
    def measured_column(self) -> ColumnRef:
        """The column a SUM or AVG adds up."""
        if self.column is None:
            raise ValueError(f"{self.alias} ({self.kind.value.upper()}) aggregates no column")
        return self.column


@dataclass(frozen=True)
class Dimension:
    column: ColumnRef
    alias: str


@dataclass(frozen=True)
class Projected:
    """A column of a synthetic extract: a dimension or a measure, never a unit or join key."""

    column: ColumnRef
    alias: str


@dataclass(frozen=True)
class ParsedQuery:
    """A query the language accepts. For a UNION, each dimension, aggregate and projected
    column names the first dataset's column; each filter names the dataset it applies to (a
    filter on the UNION ALL appears once per branch); `union_columns` holds the projected
    column names shared by all."""

    shape: Shape
    datasets: tuple[str, ...]  # qualified names, in the order they appear
    dimensions: tuple[Dimension, ...]
    aggregates: tuple[Aggregate, ...]
    filters: tuple[Filter, ...] = ()
    joins: tuple[Join, ...] = ()
    union_columns: tuple[str, ...] = ()
    # Every (dataset, column, use) the query touches, UNION branches included.
    uses: frozenset[tuple[str, str, Use]] = field(default_factory=frozenset)
    output: Output = Output.AGGREGATE
    # A synthetic extract's columns, in the order selected (no dimensions or aggregates then).
    projected: tuple[Projected, ...] = ()

    def join_keys(self) -> dict[str, tuple[str, ...]]:
        """Each dataset's join-key columns, in the order the joins name them (none outside a
        JOIN)."""
        keys: dict[str, list[str]] = {name: [] for name in self.datasets}
        for join in self.joins:
            for ref in (join.left, join.right):
                if ref.column not in keys[ref.dataset]:
                    keys[ref.dataset].append(ref.column)
        return {name: tuple(columns) for name, columns in keys.items()}


@dataclass(frozen=True)
class ColumnInfo:
    """What the parser needs to know of a column: its type, role, and policy allowances."""

    name: str
    type: str  # integer | float | string | boolean | date
    role: ColumnRole
    domain: tuple[Any, ...] = ()
    lower: Decimal | None = None
    upper: Decimal | None = None

    def bounds(self) -> tuple[Decimal, Decimal]:
        """The public clamp bounds of a measure: what one row can add to a sum."""
        if self.lower is None or self.upper is None:
            raise ValueError(f"{self.name} has no public clamp bounds, so no sensitivity")
        return self.lower, self.upper


@dataclass(frozen=True)
class DatasetInfo:
    qualified_name: str
    columns: dict[str, ColumnInfo]
    allowed: dict[Use, frozenset[str]]  # column names allowed for each use
    allowed_aggregates: frozenset[AggregateKind]

"""The approved terms of a query: every parameter that sets its sensitivity, noise and
suppression, as every owner signs them in the query's canonical form.

Per dataset read: the privacy-unit column, each column the query uses with its role, type,
public domain and clamp bounds, the contribution bound L (rows per unit), the minimum group size
and the aggregates the policy allows; for the query: the accountant's inputs (its composition
rule, the rows one person can change, and each measurement's sensitivity, ε share and scale).

Nothing that runs a query takes these from a host: the enclave and every MPC step rebuild the
catalog they parse and calibrate with from the terms alone (`read_terms`), in a canonical form
whose digest they verified, and refuse to release under measurements other than the signed ones
(`approved_measurements`). A host that changes any value changes the digest: no keys, no
shares. This module runs inside the enclave: no Django.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from dataplane.privacy.calibration import Measurement, changed_rows, measurements
from dataplane.sql.plan import AggregateKind, ColumnInfo, DatasetInfo, ParsedQuery, Use

FORMAT = "cleanroom-query/v2"
COMPOSITION = "basic sequential composition of pure ε-DP, ε split evenly over the measurements"


class TermsError(Exception):
    """The terms are malformed, or what they imply differs from what was signed."""


def _encode(value: Any, type: str) -> Any:
    # Canonical JSON has no floats: a float column's domain values are decimal strings.
    return repr(float(value)) if type == "float" else value


def _decode(value: Any, type: str) -> Any:
    return float(value) if type == "float" else value


def _bound(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def dataset_terms(
    info: DatasetInfo,
    *,
    used: Mapping[str, Sequence[str]],
    rows_per_unit: int,
    min_group_size: int,
) -> dict[str, Any]:
    """One dataset's terms: `used` maps each column the query touches to its uses."""
    units = [column.name for column in info.columns.values() if column.role == "unit"]
    if len(units) != 1:
        raise TermsError(f"{info.qualified_name} must have exactly one privacy unit column")
    names = sorted({*used, units[0]})
    return {
        "unit": units[0],
        "rows_per_unit": rows_per_unit,
        "min_group_size": min_group_size,
        "allowed_aggregates": sorted(kind.value for kind in info.allowed_aggregates),
        "columns": [
            {
                "name": name,
                "type": info.columns[name].type,
                "role": info.columns[name].role,
                "domain": [_encode(v, info.columns[name].type) for v in info.columns[name].domain],
                "lower": _bound(info.columns[name].lower),
                "upper": _bound(info.columns[name].upper),
                "uses": sorted(used.get(name, ())),
            }
            for name in names
        ],
    }


def uses_by_dataset(parsed: ParsedQuery) -> dict[str, dict[str, list[str]]]:
    uses: dict[str, dict[str, list[str]]] = {name: {} for name in parsed.datasets}
    for dataset, column, use in sorted(parsed.uses):
        uses[dataset].setdefault(column, []).append(use.value)
    return uses


def _measurement_terms(measurement: Measurement) -> dict[str, Any]:
    return {
        "name": measurement.name,
        "mechanism": measurement.mechanism,
        "sensitivity": repr(measurement.sensitivity),
        "epsilon": repr(measurement.epsilon),
        "scale": repr(measurement.scale),
        "fixed_point_bits": measurement.shift,
    }


def accountant_terms(
    *,
    parsed: ParsedQuery,
    rows_per_unit: int,
    min_group_size: int,
    released: Mapping[str, Measurement],
) -> dict[str, Any]:
    """The accountant's inputs; `released` is empty for a synthetic extract, whose method's
    cost is in the canonical form's `synthetic.charge`."""
    return {
        "composition": COMPOSITION,
        "rows_per_unit": rows_per_unit,
        "changed_rows_per_person": changed_rows(parsed, rows_per_unit),
        "min_group_size": min_group_size,
        "measurements": [_measurement_terms(m) for m in released.values()],
    }


@dataclass(frozen=True)
class Terms:
    """The catalog a query runs under, rebuilt from its signed terms."""

    datasets: dict[str, DatasetInfo]
    units: dict[str, str]
    rows_per_unit: int  # the smallest L of the datasets read, applied to each of them
    min_group_size: int  # the largest minimum of the datasets read

    @property
    def columns(self) -> dict[tuple[str, str], ColumnInfo]:
        return {
            (name, column): info
            for name, dataset in self.datasets.items()
            for column, info in dataset.columns.items()
        }


def _whole(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TermsError(f"{what} must be a whole number ≥ 1, not {value!r}")
    return value


def read_terms(canonical: Mapping[str, Any]) -> Terms:
    """The catalog of the datasets a canonical form reads, from its terms alone."""
    if canonical.get("format") != FORMAT:
        raise TermsError(f"the canonical form is not {FORMAT}")
    datasets, units, bounds, minimums = {}, {}, [], []
    for item in canonical["datasets"]:
        name = item["name"]
        columns = {
            c["name"]: ColumnInfo(
                name=c["name"],
                type=c["type"],
                role=c["role"],
                domain=tuple(_decode(v, c["type"]) for v in c["domain"]),
                lower=None if c["lower"] is None else Decimal(c["lower"]),
                upper=None if c["upper"] is None else Decimal(c["upper"]),
            )
            for c in item["columns"]
        }
        unit = columns.get(item["unit"])
        if unit is None or unit.role != "unit":
            raise TermsError(f"{name}: {item['unit']!r} is not its privacy unit column")
        datasets[name] = DatasetInfo(
            qualified_name=name,
            columns=columns,
            allowed={
                use: frozenset(c["name"] for c in item["columns"] if use.value in c["uses"])
                for use in Use
            },
            allowed_aggregates=frozenset(AggregateKind(a) for a in item["allowed_aggregates"]),
        )
        units[name] = unit.name
        bounds.append(_whole(item["rows_per_unit"], f"{name}'s rows per unit"))
        minimums.append(_whole(item["min_group_size"], f"{name}'s minimum group size"))
    if not datasets:
        raise TermsError("the canonical form reads no dataset")
    terms = Terms(datasets, units, min(bounds), max(minimums))
    accountant = canonical["accountant"]
    if (accountant["rows_per_unit"], accountant["min_group_size"]) != (
        terms.rows_per_unit,
        terms.min_group_size,
    ):
        raise TermsError("the accountant's bounds differ from the datasets' terms")
    return terms


def approved_measurements(
    canonical: Mapping[str, Any], parsed: ParsedQuery, terms: Terms
) -> dict[str, Measurement]:
    """The measurements to release, recalibrated here from the terms; refused unless they are
    exactly the ones every owner signed (sensitivity, ε share and scale of each)."""
    accountant = canonical["accountant"]
    if accountant["changed_rows_per_person"] != changed_rows(parsed, terms.rows_per_unit):
        raise TermsError("the rows one person can change differ from the signed terms")
    released = measurements(
        parsed,
        terms.columns,
        epsilon=Decimal(canonical["epsilon"]),
        rows_per_unit=terms.rows_per_unit,
        mechanism=canonical["mechanism"],
    )
    if [_measurement_terms(m) for m in released.values()] != accountant["measurements"]:
        raise TermsError("the calibrated noise differs from the signed measurements")
    return released

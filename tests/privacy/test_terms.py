"""The terms an approval binds are enough to run the query, and the enclave prepares exactly
the calibration that was signed: the planner's side (`dataset_terms`, `accountant_terms`) and
the enclave's (`read_terms`, `approved_measurements`, `enclave.prepare`) agree, joins on several
keys included."""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest

from cleanroom.audit.verifier.canonical import canonical_json
from dataplane.enclave import prepare
from dataplane.privacy import terms
from dataplane.privacy.release import release_aggregates
from tests.privacy.support import (
    CATALOG,
    DELIVERIES,
    SAMPLES,
    calibrate,
    cells,
    frame,
    parse,
    stays,
)

CHAIN_SQL = (
    "SELECT s.age_band, COUNT(*) AS n, SUM(c.hours) AS hours FROM charite.stays AS s "
    "JOIN lab.samples AS l ON s.person_hash = l.person_hash "
    "JOIN courier.deliveries AS c ON l.barcode = c.barcode GROUP BY s.age_band"
)


def signed(sql: str, *, epsilon: str = "1", rows_per_unit: int = 1, min_group: int = 5) -> dict:
    """The terms part of a canonical form, as the planner writes it at submission."""
    parsed = parse(sql)
    uses = terms.uses_by_dataset(parsed)
    canonical = {
        "format": terms.FORMAT,
        "sql": sql,
        "mechanism": "tee",
        "output_kind": "aggregate",
        "epsilon": epsilon,
        "delta": "0",
        "datasets": [
            {
                "name": name,
                **terms.dataset_terms(
                    CATALOG[name],
                    used=uses[name],
                    rows_per_unit=rows_per_unit,
                    min_group_size=min_group,
                ),
            }
            for name in parsed.datasets
        ],
        "accountant": terms.accountant_terms(
            parsed=parsed,
            rows_per_unit=rows_per_unit,
            min_group_size=min_group,
            released=calibrate(parsed, Decimal(epsilon), rows_per_unit),
        ),
    }
    canonical_json(canonical)  # no floats: it can be hashed and signed
    return canonical


def test_a_join_on_several_keys_is_prepared_in_the_enclave_as_it_was_signed():
    canonical = signed(CHAIN_SQL, epsilon="1000000")  # noise far below one: exact counts
    release = prepare(canonical)
    # L times (1 + 2 + 1): the lab is joined by person and by barcode.
    assert canonical["accountant"]["changed_rows_per_person"] == 4
    assert release.measurements["count"].sensitivity == 4
    hospital = stays({"person_hash": f"h{i}", "age_band": "65+"} for i in range(10))
    samples = frame(
        ({"sample_id": f"s{i}", "person_hash": f"h{i}", "barcode": f"b{i}"} for i in range(10)),
        SAMPLES,
    )
    deliveries = frame(
        ({"courier_id": f"c{i}", "barcode": f"b{i}", "hours": 2} for i in range(10)), DELIVERIES
    )
    table = release_aggregates(
        {
            "charite.stays": hospital.lazy(),
            "lab.samples": samples.lazy(),
            "courier.deliveries": deliveries.lazy(),
        },
        release.parsed,
        release.columns,
        release.terms.units,
        release.measurements,
        rows_per_unit=release.terms.rows_per_unit,
        min_group_size=0,
    )
    assert cells(table, "n")[("65+",)] == 10 and cells(table, "hours")[("65+",)] == 20


def test_the_terms_carry_only_the_columns_used_and_the_unit():
    canonical = signed("SELECT sex, SUM(cost) AS c FROM charite.stays GROUP BY sex")
    [dataset] = canonical["datasets"]
    assert dataset["unit"] == "patient_id"
    assert {c["name"]: c["uses"] for c in dataset["columns"]} == {
        "cost": ["measure"],
        "patient_id": [],
        "sex": ["dimension"],
    }
    cost = next(c for c in dataset["columns"] if c["name"] == "cost")
    assert (cost["lower"], cost["upper"], cost["type"]) == ("0", "1000", "float")


def test_terms_that_no_longer_give_the_signed_measurements_are_refused():
    canonical = signed("SELECT sex, COUNT(*) AS n FROM charite.stays GROUP BY sex")
    tampered = copy.deepcopy(canonical)
    tampered["accountant"]["measurements"][0]["scale"] = "0.5"
    with pytest.raises(terms.TermsError, match="differs from the signed measurements"):
        prepare(tampered)
    tampered = copy.deepcopy(canonical)
    tampered["datasets"][0]["rows_per_unit"] = 3
    with pytest.raises(terms.TermsError, match="accountant's bounds differ"):
        prepare(tampered)


def test_a_unit_that_is_not_a_unit_column_is_refused():
    canonical = signed("SELECT sex, COUNT(*) AS n FROM charite.stays GROUP BY sex")
    canonical["datasets"][0]["unit"] = "sex"
    with pytest.raises(terms.TermsError, match="not its privacy unit column"):
        terms.read_terms(canonical)

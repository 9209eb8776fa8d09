"""A person treated in every hospital of a UNION ALL, and the people a JOIN matches across its
sides: the release is calibrated for everything one person can change in every dataset a query
reads, so the query costs that person no more than the ε each dataset is charged.

The statistical check is the one of test_neighbouring_datasets.py: with N samples per dataset
and m estimated probabilities, each is within τ = sqrt(ln(2m / β) / (2N)) with probability
1 - β/m, β = 1e-6; an ε-DP release then satisfies p̂ ≤ e^ε q̂ + (1 + e^ε) τ for every event of
the family, and fails the assertion with probability at most 1e-6.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from dataplane.privacy.calibration import changed_rows
from tests.privacy.support import calibrate, cells, parse, release, stays
from tests.privacy.test_neighbouring_datasets import EPSILON, WARDS, _violations

HOSPITALS = ("charite.stays", "usz.stays", "barts.stays")
UNION_SQL = """SELECT u.ward, COUNT(*) AS n, SUM(u.stay) AS days
FROM (SELECT ward, stay FROM charite.stays UNION ALL SELECT ward, stay FROM usz.stays
      UNION ALL SELECT ward, stay FROM barts.stays) AS u
GROUP BY u.ward"""
COUNT_SQL = """SELECT u.ward, COUNT(*) AS n
FROM (SELECT ward FROM charite.stays UNION ALL SELECT ward FROM usz.stays
      UNION ALL SELECT ward FROM barts.stays) AS u
GROUP BY u.ward"""
JOIN_SQL = """SELECT s.age_band, COUNT(*) AS n
FROM charite.stays AS s JOIN usz.stays AS z ON s.person_hash = z.person_hash
GROUP BY s.age_band"""
PATIENTS = 7  # per ward and hospital: a ward of the union holds 21 stays, as in that module
RELEASES = 25


def _hospital(name: str, *, with_the_person: bool) -> list[dict]:
    """Each hospital names its patients its own way: the same person has another id in each."""
    rows = [
        {"patient_id": f"{name}-w{ward}-p{i}", "ward": ward, "stay": 5}
        for ward in range(WARDS)
        for i in range(PATIENTS)
    ]
    if with_the_person:
        rows += [
            {"patient_id": f"{name}-w{ward}-x", "ward": ward, "stay": 60} for ward in range(WARDS)
        ]
    return rows


def _frames(with_the_person: bool) -> dict:
    return {name: stays(_hospital(name, with_the_person=with_the_person)) for name in HOSPITALS}


def test_a_union_of_three_hospitals_is_calibrated_for_a_person_in_all_three():
    parsed = parse(UNION_SQL)
    assert changed_rows(parsed, rows_per_unit=2) == 6
    measured = calibrate(parsed, Decimal(1), rows_per_unit=2)
    assert measured["count"].sensitivity == 6
    assert measured["sum(charite.stays.stay)"].sensitivity == 6 * 60


def test_a_join_is_calibrated_for_a_person_on_both_sides():
    measured = calibrate(parse(JOIN_SQL), Decimal(1), rows_per_unit=1)
    assert measured["count"].sensitivity == 2


def test_a_person_in_every_hospital_moves_the_output_by_no_more_than_the_calibration_allows():
    without = release(UNION_SQL, _frames(False))
    with_them = release(UNION_SQL, _frames(True))
    # The noise at this ε is far below one: the released values are the exact ones.
    moved = {
        alias: max(
            abs(cells(with_them, alias)[g] - cells(without, alias)[g])
            for g in cells(without, alias)
        )
        for alias in ("n", "days")
    }
    sensitivity = {m["name"]: m["sensitivity"] for m in with_them.measurements}
    assert moved["n"] == 3 <= sensitivity["count"]
    assert moved["days"] == 3 * 60 <= sensitivity["sum(charite.stays.stay)"]


def _samples(frames: dict) -> list[int]:
    values = []
    for _ in range(RELEASES):
        table = release(COUNT_SQL, frames, epsilon=Decimal(EPSILON), rows_per_unit=1)
        # A group suppressed for a noisy count under the minimum (0) counts as below it.
        values += [-1 if row["suppressed"] else row["n"]["value"] for row in table.rows]
    assert len(values) == WARDS * RELEASES
    return values


@pytest.mark.slow
def test_a_person_in_every_hospital_loses_no_more_than_epsilon():
    """Each ward's count in the union is 21 without the person and 24 with them; released at ε
    calibrated for three stays, the two are as close as ε allows, and no closer than 0.8 ε
    (the test is sharp: calibrated for one stay, as if a person sat in one hospital, the same
    check fails)."""
    without, with_them = _samples(_frames(False)), _samples(_frames(True))
    assert _violations(without, with_them, EPSILON) == []
    assert _violations(without, with_them, 0.8 * EPSILON) != []

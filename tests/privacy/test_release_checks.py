"""A release whose privacy claim would not hold is refused before any data is read and any
noise is drawn, with the reason."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import polars as pl
import pytest

from dataplane.privacy.calibration import measurements
from dataplane.privacy.release import ReleaseError, _bound, check_release, release_aggregates
from tests.privacy.support import (
    COLUMNS,
    DELIVERIES,
    HUGE_EPSILON,
    SAMPLES,
    UNITS,
    calibrate,
    cells,
    frame,
    parse,
    prescriptions,
    release,
    stays,
)

COUNT_SQL = (
    "SELECT age_band, COUNT(*) AS n, SUM(cost) AS total FROM charite.stays GROUP BY age_band"
)
CHAIN_SQL = (
    "SELECT s.age_band, COUNT(*) AS n, SUM(c.hours) AS hours FROM charite.stays AS s "
    "JOIN lab.samples AS l ON s.person_hash = l.person_hash "
    "JOIN courier.deliveries AS c ON l.barcode = c.barcode GROUP BY s.age_band"
)


def _check(sql: str, measurements: dict, rows_per_unit: int = 1) -> None:
    check_release(parse(sql), COLUMNS, UNITS, measurements, rows_per_unit=rows_per_unit)


def test_a_calibration_for_fewer_rows_per_unit_than_the_release_bound_is_refused():
    measured = calibrate(parse(COUNT_SQL), Decimal(1), rows_per_unit=1)
    with pytest.raises(ReleaseError, match="one privacy unit can change it by 2"):
        _check(COUNT_SQL, measured, rows_per_unit=2)


def test_a_scale_under_what_opendp_allows_for_the_share_of_epsilon_is_refused():
    measured = calibrate(parse(COUNT_SQL), Decimal(1), rows_per_unit=1)
    measured["count"] = dataclasses.replace(measured["count"], scale=measured["count"].scale / 2)
    with pytest.raises(ReleaseError, match="privacy map gives"):
        _check(COUNT_SQL, measured)


def test_a_float_sum_calibrated_for_a_smaller_bound_is_refused():
    measured = calibrate(parse(COUNT_SQL), Decimal(1), rows_per_unit=1)
    name = "sum(charite.stays.cost)"
    measured[name] = dataclasses.replace(measured[name], sensitivity=500.0)
    with pytest.raises(ReleaseError, match="calibrated for 500"):
        _check(COUNT_SQL, measured)


@pytest.mark.parametrize("mechanism", ["tee", "mpc"])
def test_a_sum_over_a_measure_without_clamp_bounds_is_not_calibrated(mechanism):
    # A catalog entry that lost its bounds: one row could add anything to the sum.
    unbounded = dict(COLUMNS)
    unbounded[("charite.stays", "cost")] = dataclasses.replace(
        COLUMNS[("charite.stays", "cost")], lower=None, upper=None
    )
    with pytest.raises(ValueError, match="cost has no public clamp bounds"):
        measurements(
            parse(COUNT_SQL), unbounded, epsilon=Decimal(1), rows_per_unit=1, mechanism=mechanism
        )


def test_a_release_without_a_noisy_count_is_refused_as_it_could_not_suppress_small_groups():
    measured = calibrate(parse(COUNT_SQL), Decimal(1), rows_per_unit=1)
    del measured["count"]
    with pytest.raises(ReleaseError, match="cannot be suppressed"):
        _check(COUNT_SQL, measured)


def test_an_output_named_like_the_suppression_flag_is_refused():
    sql = "SELECT age_band, COUNT(*) AS suppressed FROM charite.stays GROUP BY age_band"
    with pytest.raises(ReleaseError, match="reserved"):
        _check(sql, calibrate(parse(sql), Decimal(1), rows_per_unit=1))


def test_the_checks_run_before_any_data_is_read():
    parsed = parse(COUNT_SQL)
    measured = calibrate(parsed, Decimal(1), rows_per_unit=1)
    with pytest.raises(ReleaseError, match="one privacy unit"):
        release_aggregates({}, parsed, COLUMNS, UNITS, measured, rows_per_unit=3, min_group_size=1)


def test_a_chain_of_joins_is_calibrated_for_every_key_of_every_dataset_a_person_sits_in():
    # One new lab sample can collide with one sample by person and another by barcode (two
    # joined rows), and the same person may also have a stay and a delivery: 1 + 2 + 1 rows.
    measured = calibrate(parse(CHAIN_SQL), Decimal(1), rows_per_unit=1)
    assert measured["count"].sensitivity == 4
    _check(CHAIN_SQL, measured)
    measured["count"] = dataclasses.replace(measured["count"], sensitivity=2.0)
    with pytest.raises(ReleaseError, match="one privacy unit can change it by 4"):
        _check(CHAIN_SQL, measured)


def test_a_chain_of_joins_matches_each_key_exactly_once():
    hospital = stays(
        {"person_hash": f"h{i}", "age_band": ("0-39", "65+")[i % 2]} for i in range(10)
    )
    samples = frame(
        ({"sample_id": f"s{i}", "person_hash": f"h{i}", "barcode": f"b{i}"} for i in range(2, 14)),
        SAMPLES,
    )
    deliveries = frame(
        ({"courier_id": f"c{i}", "barcode": f"b{i}", "hours": i} for i in range(0, 8)),
        DELIVERIES,
    )
    parsed = parse(CHAIN_SQL)
    table = release_aggregates(
        {
            "charite.stays": hospital.lazy(),
            "lab.samples": samples.lazy(),
            "courier.deliveries": deliveries.lazy(),
        },
        parsed,
        COLUMNS,
        UNITS,
        calibrate(parsed, HUGE_EPSILON, rows_per_unit=2),
        rows_per_unit=1,
        min_group_size=0,
    )
    # People 2..7 are in all three: even ones are 0-39, odd ones 65+.
    assert cells(table, "n") == {("0-39",): 3, ("40-64",): 0, ("65+",): 3}
    assert cells(table, "hours") == {("0-39",): 2 + 4 + 6, ("40-64",): 0, ("65+",): 3 + 5 + 7}


def test_a_new_unit_reusing_other_units_keys_removes_at_most_its_bound_of_joined_rows():
    hospital = stays({"person_hash": f"h{i}"} for i in range(40))
    pharmacy_rows = [{"rx_id": f"rx{i}", "person_hash": f"h{i}"} for i in range(40)]
    sql = (
        "SELECT s.age_band, COUNT(*) AS n FROM charite.stays AS s "
        "JOIN pharma.prescriptions AS p ON s.person_hash = p.person_hash GROUP BY s.age_band"
    )
    before = cells(
        release(
            sql,
            {"charite.stays": hospital, "pharma.prescriptions": prescriptions(pharmacy_rows)},
            rows_per_unit=2,
        ),
        "n",
    )
    # A pharmacy customer whose 30 prescriptions repeat 30 existing keys: after the bound of 2
    # rows, at most two keys become repeated and leave the join.
    intruder = [{"rx_id": "intruder", "person_hash": f"h{i}"} for i in range(30)]
    after = cells(
        release(
            sql,
            {
                "charite.stays": hospital,
                "pharma.prescriptions": prescriptions(pharmacy_rows + intruder),
            },
            rows_per_unit=2,
        ),
        "n",
    )
    assert before[("40-64",)] == 40
    assert after[("40-64",)] == 38


def test_a_later_join_can_compare_the_key_of_a_dataset_joined_before():
    hospital = stays({"person_hash": f"h{i}", "age_band": "65+"} for i in range(10))
    pharmacy = prescriptions({"person_hash": f"h{i}"} for i in range(3, 13))
    samples = frame(
        ({"sample_id": f"s{i}", "person_hash": f"h{i}", "barcode": f"b{i}"} for i in range(6, 20)),
        SAMPLES,
    )
    table = release(
        "SELECT s.age_band, COUNT(*) AS n FROM charite.stays AS s "
        "JOIN pharma.prescriptions AS p ON s.person_hash = p.person_hash "
        "JOIN lab.samples AS l ON p.person_hash = l.person_hash GROUP BY s.age_band",
        {"charite.stays": hospital, "pharma.prescriptions": pharmacy, "lab.samples": samples},
    )
    assert cells(table, "n")[("65+",)] == 4  # h6 to h9


def test_keys_sharing_only_their_first_hash_are_told_apart_by_the_second():
    hashes = pl.UInt64
    rows = pl.DataFrame(
        {"__unit": ["a", "b", "c", "d"], "k#1": [7, 7, 8, 8], "k#2": [1, 2, 3, 3]},
        schema={"__unit": pl.String, "k#1": hashes, "k#2": hashes},
    )
    kept = _bound(rows, ["k"], limit=1, seed=0)
    assert kept["k#2"].to_list() == [1, 2]  # the two rows with key (8, 3) are left out


def test_integer_units_are_bounded_like_any_other():
    rows = pl.DataFrame({"__unit": [5] * 10 + [6, 7], "value": list(range(12))})
    kept = _bound(rows, [], limit=3, seed=1)
    assert sorted(kept["value"].to_list())[-2:] == [10, 11]
    assert kept.height == 5


def test_equal_keys_join_however_each_file_stores_them():
    hospital = stays({"person_hash": f"h{i}"} for i in range(10))
    pharmacy = prescriptions({"person_hash": f"h{i}"} for i in range(5, 15))
    table = release(
        "SELECT s.age_band, COUNT(*) AS n FROM charite.stays AS s "
        "JOIN pharma.prescriptions AS p ON s.person_hash = p.person_hash GROUP BY s.age_band",
        {
            "charite.stays": hospital.with_columns(pl.col("person_hash").cast(pl.Categorical)),
            "pharma.prescriptions": pharmacy,
        },
    )
    assert cells(table, "n")[("40-64",)] == 5

"""With ε so large that the noise is far below 1, the release equals plain Polars on the same
rows after the policy's bounds: filters, joins, UNION ALL, clamping and contribution bounds."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import date
from decimal import Decimal

import polars as pl
import pytest

from dataplane.privacy.release import release_aggregates
from dataplane.sql.parser import parse_query
from dataplane.sql.plan import Use
from tests.privacy.support import (
    AGE_BANDS,
    CATALOG,
    COLUMNS,
    HUGE_EPSILON,
    SEXES,
    UNITS,
    calibrate,
    cells,
    close,
    noise_bound,
    prescriptions,
    release,
    stays,
)

COST = "sum(charite.stays.cost)"
PRICE = "sum(pharma.prescriptions.price)"


def _random_stays(count: int, seed: int) -> pl.DataFrame:
    rng = random.Random(seed)
    return stays(
        {
            "age_band": rng.choice((*AGE_BANDS, "65+")),
            "sex": rng.choice(SEXES),
            "stay": rng.randint(0, 60),
            "cost": rng.randint(0, 4000) / 4,  # on the fixed-point grid: sums are exact
            "admitted": date(2025, 1, 1 + rng.randint(0, 30)),
        }
        for _ in range(count)
    )


def test_released_counts_sums_and_averages_equal_plain_polars_within_the_noise():
    frame = _random_stays(400, seed=1)
    table = release(
        "SELECT age_band, sex, COUNT(*) AS n, SUM(cost) AS total, AVG(cost) AS mean, "
        "SUM(stay) AS days FROM charite.stays GROUP BY age_band, sex",
        {"charite.stays": frame},
    )
    exact = frame.group_by("age_band", "sex").agg(
        n=pl.len(),
        total=pl.col("cost").sum(),
        mean=pl.col("cost").mean(),
        days=pl.col("stay").sum(),
    )
    assert exact.height == len(AGE_BANDS) * len(SEXES)
    count_bound, cost_bound = noise_bound(table, "count"), noise_bound(table, COST)
    for row in exact.iter_rows(named=True):
        group = (row["age_band"], row["sex"])
        assert cells(table, "n")[group] == row["n"]  # discrete noise of scale 1e-9 is 0
        assert cells(table, "days")[group] == row["days"]
        assert close(cells(table, "total")[group], row["total"], cost_bound)
        assert close(cells(table, "mean")[group], row["mean"], cost_bound / row["n"])
    for row in table.rows:
        for alias in ("n", "total", "mean", "days"):
            cell = row[alias]
            assert cell["ci95_low"] <= cell["value"] <= cell["ci95_high"]
        assert row["n"]["mechanism"] == "discrete Laplace"
        assert row["total"]["mechanism"] == "Laplace"
        assert row["mean"]["approximate"] is True and row["n"]["approximate"] is False
    assert count_bound < 1


def test_groups_without_rows_are_released_with_a_count_of_zero_and_no_average():
    frame = stays([{"age_band": "0-39", "sex": "F"}, {"age_band": "0-39", "sex": "F"}])
    table = release(
        "SELECT age_band, sex, COUNT(*) AS n, SUM(cost) AS total, AVG(cost) AS mean "
        "FROM charite.stays GROUP BY age_band, sex",
        {"charite.stays": frame},
    )
    assert [(row["age_band"], row["sex"]) for row in table.rows] == [
        (band, sex) for band in AGE_BANDS for sex in SEXES
    ]
    for row in table.rows:
        full = (row["age_band"], row["sex"]) == ("0-39", "F")
        assert row["n"]["value"] == (2 if full else 0)
        assert close(row["total"]["value"], 200.0 if full else 0.0, noise_bound(table, COST))
        assert (row["mean"]["value"] is None) is not full


def test_filters_in_equals_and_between_keep_only_the_rows_they_name():
    frame = _random_stays(400, seed=2)
    table = release(
        "SELECT sex, COUNT(*) AS n, SUM(stay) AS days FROM charite.stays "
        "WHERE age_band IN ('0-39', '65+') AND sex = 'M' "
        "AND admitted BETWEEN '2025-01-05' AND '2025-01-20' GROUP BY sex",
        {"charite.stays": frame},
    )
    kept = frame.filter(
        pl.col("age_band").is_in(["0-39", "65+"]),
        pl.col("sex") == "M",
        pl.col("admitted").is_between(date(2025, 1, 5), date(2025, 1, 20)),
    )
    assert 0 < kept.height < frame.height / 2
    assert cells(table, "n") == {("F",): 0, ("M",): kept.height}
    assert cells(table, "days") == {("F",): 0, ("M",): kept["stay"].sum()}


def test_a_join_counts_each_matching_pair_of_rows_once():
    rng = random.Random(3)
    hospital = stays(
        {"person_hash": f"h{i}", "age_band": rng.choice(AGE_BANDS)} for i in range(300)
    )
    pharmacy = prescriptions(
        {"person_hash": f"h{i}", "drug": rng.choice(["statin", "insulin"]), "price": i % 200}
        for i in range(150, 450)
    )
    table = release(
        "SELECT s.age_band, p.drug, COUNT(*) AS n, SUM(p.price) AS spent, AVG(p.price) AS mean "
        "FROM charite.stays AS s JOIN pharma.prescriptions AS p ON s.person_hash = p.person_hash "
        "GROUP BY s.age_band, p.drug",
        {"charite.stays": hospital, "pharma.prescriptions": pharmacy},
    )
    exact = (
        hospital.join(pharmacy, on="person_hash")
        .group_by("age_band", "drug")
        .agg(n=pl.len(), spent=pl.col("price").sum(), mean=pl.col("price").mean())
    )
    assert exact["n"].sum() == 150
    assert len(table.rows) == 9  # three drugs in the domain, "other" without rows
    for row in exact.iter_rows(named=True):
        group = (row["age_band"], row["drug"])
        assert cells(table, "n")[group] == row["n"]
        assert close(cells(table, "spent")[group], row["spent"], noise_bound(table, PRICE))
        assert close(cells(table, "mean")[group], row["mean"], noise_bound(table, PRICE) / row["n"])
    assert {g: v for g, v in cells(table, "n").items() if g[1] == "other"} == {
        (band, "other"): 0 for band in AGE_BANDS
    }


def test_a_join_leaves_out_keys_repeated_within_one_dataset_so_each_row_joins_at_most_once():
    hospital = stays(
        [
            {"person_hash": "shared", "age_band": "0-39"},
            {"person_hash": "shared", "age_band": "0-39"},  # another patient, the same key
            {"person_hash": "alone", "age_band": "0-39"},
        ]
    )
    pharmacy = prescriptions({"person_hash": key} for key in ("shared", "alone", "alone", "single"))
    hospital = pl.concat([hospital, stays([{"person_hash": "single", "patient_id": "q"}])])
    table = release(
        "SELECT s.age_band, COUNT(*) AS n FROM charite.stays AS s "
        "JOIN pharma.prescriptions AS p ON s.person_hash = p.person_hash GROUP BY s.age_band",
        {"charite.stays": hospital, "pharma.prescriptions": pharmacy},
    )
    # Plain SQL would count 2 + 2 + 1; only "single" is unique on both sides.
    assert cells(table, "n") == {("0-39",): 0, ("40-64",): 1, ("65+",): 0}


def test_union_all_adds_up_the_branches_each_after_its_own_filters():
    charite = _random_stays(200, seed=4)
    usz = _random_stays(150, seed=5).with_columns(
        patient_id=pl.format("usz-{}", pl.col("patient_id"))
    )
    table = release(
        "SELECT age_band, COUNT(*) AS n, SUM(cost) AS total, SUM(stay) AS days FROM ("
        "SELECT age_band, cost, stay FROM charite.stays WHERE sex = 'F' "
        "UNION ALL SELECT age_band, cost, stay FROM usz.stays WHERE sex = 'F') AS u "
        "GROUP BY age_band",
        {"charite.stays": charite, "usz.stays": usz},
    )
    both = pl.concat([charite, usz]).filter(pl.col("sex") == "F")
    exact = both.group_by("age_band").agg(
        n=pl.len(), total=pl.col("cost").sum(), days=pl.col("stay").sum()
    )
    for row in exact.iter_rows(named=True):
        group = (row["age_band"],)
        assert cells(table, "n")[group] == row["n"]
        assert cells(table, "days")[group] == row["days"]
        assert close(cells(table, "total")[group], row["total"], noise_bound(table, COST))


def test_values_outside_the_bounds_are_clamped_so_a_cost_of_a_billion_counts_as_the_upper_bound():
    frame = stays(
        [
            {"cost": 1e9, "stay": 10**6},
            {"cost": -5e6, "stay": -3},
            {"cost": float("inf"), "stay": 60},
            {"cost": float("nan"), "stay": 0},  # a missing value adds nothing, but is counted
            {"cost": None, "stay": None},
            {"cost": 250.5, "stay": 7},
        ]
    )
    table = release(
        "SELECT age_band, COUNT(*) AS n, SUM(cost) AS total, SUM(stay) AS days, "
        "AVG(cost) AS mean FROM charite.stays GROUP BY age_band",
        {"charite.stays": frame},
    )
    group = ("40-64",)
    assert cells(table, "n")[group] == 6
    assert close(cells(table, "total")[group], 1000 + 0 + 1000 + 250.5, noise_bound(table, COST))
    assert cells(table, "days")[group] == 60 + 0 + 60 + 0 + 7
    assert close(cells(table, "mean")[group], 2250.5 / 6, noise_bound(table, COST) / 6)


def test_averages_stay_within_the_bounds_of_their_measure():
    # A wide noise on the sum would push a plain ratio far outside [0, 1000].
    frame = stays([{"cost": 1000.0, "age_band": "0-39"}] * 20)
    table = release(
        "SELECT age_band, AVG(cost) AS mean FROM charite.stays GROUP BY age_band",
        {"charite.stays": frame},
        epsilon=Decimal("0.01"),
    )
    for row in table.rows:
        mean = row["mean"]
        if mean["value"] is not None:
            assert 0 <= mean["ci95_low"] <= mean["value"] <= mean["ci95_high"] <= 1000


@pytest.mark.parametrize("limit", [1, 2, 5])
def test_a_unit_with_fifty_rows_contributes_at_most_its_bound_of_rows(limit):
    heavy = [{"patient_id": "heavy", "cost": 1000.0, "stay": 60}] * 50
    others = [{"patient_id": f"o{i}", "cost": 10.0, "stay": 1} for i in range(30)]
    table = release(
        "SELECT age_band, COUNT(*) AS n, SUM(cost) AS total, SUM(stay) AS days "
        "FROM charite.stays GROUP BY age_band",
        {"charite.stays": stays(heavy + others)},
        rows_per_unit=limit,
    )
    group = ("40-64",)
    assert cells(table, "n")[group] == 30 + limit
    assert cells(table, "days")[group] == 30 + 60 * limit
    assert close(cells(table, "total")[group], 300 + 1000 * limit, noise_bound(table, COST))


def test_a_unit_spread_over_many_joined_rows_still_contributes_at_most_its_bound():
    # One patient with 50 stays, each under its own key, each matching one prescription.
    hospital = stays(
        [{"patient_id": "heavy", "person_hash": f"k{i}", "age_band": "65+"} for i in range(50)]
        + [{"person_hash": f"o{i}", "age_band": "0-39"} for i in range(10)]
    )
    pharmacy = prescriptions(
        [{"person_hash": f"k{i}"} for i in range(50)]
        + [{"person_hash": f"o{i}"} for i in range(10)]
    )
    table = release(
        "SELECT s.age_band, COUNT(*) AS n FROM charite.stays AS s "
        "JOIN pharma.prescriptions AS p ON s.person_hash = p.person_hash GROUP BY s.age_band",
        {"charite.stays": hospital, "pharma.prescriptions": pharmacy},
        rows_per_unit=3,
    )
    assert cells(table, "n") == {("0-39",): 10, ("40-64",): 0, ("65+",): 3}


def test_each_union_branch_bounds_its_own_units():
    heavy = stays([{"patient_id": "same-id", "age_band": "65+"}] * 50)
    table = release(
        "SELECT age_band, COUNT(*) AS n FROM (SELECT age_band FROM charite.stays "
        "UNION ALL SELECT age_band FROM usz.stays) AS u GROUP BY age_band",
        {"charite.stays": heavy, "usz.stays": heavy},
        rows_per_unit=2,
    )
    # The two hospitals' patients are different units, even under the same identifier.
    assert cells(table, "n")[("65+",)] == 4


def test_the_rows_a_unit_keeps_are_chosen_at_random():
    # One patient, one stay in each of two age bands, at most one row: each release keeps one.
    frame = stays([{"patient_id": "p", "age_band": "0-39"}, {"patient_id": "p", "age_band": "65+"}])
    young = 0
    for _ in range(100):
        counts = cells(
            release(
                "SELECT age_band, COUNT(*) AS n FROM charite.stays GROUP BY age_band",
                {"charite.stays": frame},
            ),
            "n",
        )
        assert counts[("0-39",)] + counts[("65+",)] == 1
        young += counts[("0-39",)]
    # Binomial(100, 1/2): outside [20, 80] with probability below 1e-9.
    assert 20 <= young <= 80


def test_without_group_by_one_total_is_released():
    frame = _random_stays(100, seed=6)
    table = release(
        "SELECT COUNT(*) AS n, SUM(stay) AS days FROM charite.stays", {"charite.stays": frame}
    )
    assert table.columns == ("n", "days")
    assert len(table.rows) == 1
    assert table.rows[0]["n"]["value"] == 100
    assert table.rows[0]["days"]["value"] == frame["stay"].sum()


def test_with_a_real_epsilon_the_released_counts_are_noisy():
    frame = _random_stays(400, seed=7)
    table = release(
        "SELECT ward, COUNT(*) AS n FROM charite.stays GROUP BY ward",
        {"charite.stays": frame.with_columns(ward=pl.int_range(pl.len()) % 200)},
        epsilon=Decimal(1),
    )
    # Each of 200 cells is exact with probability tanh(1/2) < 0.47.
    assert sum(row["n"]["value"] != 2 for row in table.rows if row["ward"] < 200) > 50


def test_the_table_is_plain_json():
    frame = _random_stays(50, seed=8)
    table = release(
        "SELECT age_band, COUNT(*) AS n, AVG(cost) AS mean FROM charite.stays GROUP BY age_band",
        {"charite.stays": frame},
        epsilon=Decimal(1),
        min_group_size=10,
    )
    encoded = table.to_json()
    assert json.loads(json.dumps(encoded, allow_nan=False)) == encoded
    assert encoded["columns"] == ["age_band", "n", "mean"]
    assert [m["name"] for m in encoded["measurements"]] == ["count", COST]
    assert set(encoded["rows"][0]) == {"age_band", "n", "mean", "suppressed"}
    assert set(encoded["rows"][0]["n"]) == {
        "value",
        "mechanism",
        "scale",
        "ci95_low",
        "ci95_high",
        "approximate",
    }


def test_a_join_on_the_privacy_unit_counts_each_person_once_and_never_beyond_the_bound():
    """Where both policies allow the unit as a join key: a person with one stay in each hospital
    joins once; a person with more stays than appear once leaves the join (their id repeats),
    so no unit contributes more than L joined rows."""
    catalog = {
        name: replace(
            CATALOG[name],
            allowed={**CATALOG[name].allowed, Use.JOIN_KEY: frozenset({"patient_id"})},
        )
        for name in ("charite.stays", "usz.stays")
    }
    berlin = stays(
        [{"patient_id": f"p{i}", "age_band": "65+"} for i in range(20)]
        + [{"patient_id": "frequent", "age_band": "0-39"}] * 5
    )
    zurich = stays(
        [{"patient_id": f"p{i}"} for i in range(10, 30)] + [{"patient_id": "frequent"}] * 2
    )
    parsed = parse_query(
        "SELECT b.age_band, COUNT(*) AS n FROM charite.stays AS b "
        "JOIN usz.stays AS z ON b.patient_id = z.patient_id GROUP BY b.age_band",
        catalog,
    )
    table = release_aggregates(
        {"charite.stays": berlin.lazy(), "usz.stays": zurich.lazy()},
        parsed,
        COLUMNS,
        UNITS,
        calibrate(parsed, HUGE_EPSILON, 3),
        rows_per_unit=3,
        min_group_size=0,
    )
    assert cells(table, "n") == {("0-39",): 0, ("40-64",): 0, ("65+",): 10}
    assert "patient_id" not in json.dumps(table.rows)

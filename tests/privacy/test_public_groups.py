"""The released groups are the cartesian product of the dimensions' public domains, whatever the
data holds; groups whose noisy count is under the minimum size are withheld and flagged."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from itertools import product

import pytest

from tests.privacy.support import AGE_BANDS, SEXES, WEEKS, cells, release, stays

SQL = (
    "SELECT age_band, sex, COUNT(*) AS n, SUM(cost) AS total, AVG(stay) AS mean "
    "FROM charite.stays GROUP BY age_band, sex"
)

DATASETS = {
    "no rows": [],
    "one group only": [{"age_band": "65+", "sex": "M"}] * 30,
    "values outside the domain": [{"age_band": "unknown", "sex": "X"}] * 30
    + [{"age_band": None, "sex": None}] * 5,
    "every group": [{"age_band": a, "sex": s} for a in AGE_BANDS for s in SEXES] * 5,
}


@pytest.mark.parametrize("rows", DATASETS.values(), ids=DATASETS.keys())
def test_the_released_groups_are_the_product_of_the_domains_whatever_the_data(rows):
    table = release(SQL, {"charite.stays": stays(rows)}, min_group_size=10)
    assert table.columns == ("age_band", "sex", "n", "total", "mean")
    assert [(row["age_band"], row["sex"]) for row in table.rows] == list(product(AGE_BANDS, SEXES))


def test_rows_outside_the_domain_fall_out_of_every_group():
    rows = DATASETS["values outside the domain"] + [{"age_band": "0-39", "sex": "F"}]
    counts = cells(release(SQL, {"charite.stays": stays(rows)}), "n")
    assert counts == {group: int(group == ("0-39", "F")) for group in product(AGE_BANDS, SEXES)}


def test_groups_under_the_minimum_size_are_withheld_and_flagged():
    rows = [{"age_band": "0-39", "sex": "F"}] * 12 + [{"age_band": "65+", "sex": "M"}] * 9
    table = release(SQL, {"charite.stays": stays(rows)}, min_group_size=10)
    by_group = {(row["age_band"], row["sex"]): row for row in table.rows}
    shown = by_group[("0-39", "F")]
    assert shown["suppressed"] is False
    assert shown["n"]["value"] == 12
    assert shown["mean"]["value"] == pytest.approx(1)
    for group, row in by_group.items():
        if group == ("0-39", "F"):
            continue
        assert row["suppressed"] is True
        for alias in ("n", "total", "mean"):
            cell = row[alias]
            assert (cell["value"], cell["ci95_low"], cell["ci95_high"]) == (None, None, None)
            assert cell["mechanism"]  # how it would have been measured is still said


def test_a_query_of_sums_only_is_suppressed_on_a_noisy_count():
    rows = [{"age_band": "0-39"}] * 12 + [{"age_band": "65+"}] * 3
    table = release(
        "SELECT age_band, SUM(stay) AS days FROM charite.stays GROUP BY age_band",
        {"charite.stays": stays(rows)},
        min_group_size=10,
    )
    assert [m["name"] for m in table.measurements] == ["count", "sum(charite.stays.stay)"]
    assert {row["age_band"]: row["suppressed"] for row in table.rows} == {
        "0-39": False,
        "40-64": True,
        "65+": True,
    }


def test_suppression_is_decided_on_the_noisy_count_not_the_exact_one():
    # 10 patients in each of 2,000 wards, a minimum of 10 and a noise of scale 1: a ward falls
    # under it by noise alone with probability 0.27, so Binomial(2000, 0.27) wards, about 540.
    rows = [{"ward": ward} for ward in range(2000) for _ in range(10)]
    table = release(
        "SELECT ward, COUNT(*) AS n FROM charite.stays GROUP BY ward",
        {"charite.stays": stays(rows)},
        epsilon=Decimal(1),
        min_group_size=10,
    )
    suppressed = sum(row["suppressed"] for row in table.rows)
    assert 200 < suppressed < 1800
    for row in table.rows:
        assert row["suppressed"] is (row["n"]["value"] is None)


def test_a_date_dimension_takes_its_domain_from_iso_strings():
    rows = [{"week": date(2025, 1, 13)}] * 4 + [{"week": date(2025, 1, 20)}]
    table = release(
        "SELECT week, COUNT(*) AS n FROM charite.stays GROUP BY week",
        {"charite.stays": stays(rows)},
    )
    assert cells(table, "n") == {(WEEKS[0],): 0, (WEEKS[1],): 4}
    assert table.to_json()["rows"][1]["week"] == "2025-01-13"

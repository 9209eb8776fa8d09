"""The public encoding: bins from the policy bounds, codes, and values drawn back within them."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataplane.synthesis import SynthColumn, SynthesisError, public_bins
from dataplane.synthesis.columns import check_columns, clamp, code_labels, decode, encode


def test_an_integer_range_of_at_most_16_values_gets_one_bin_per_value():
    assert public_bins(SynthColumn("children", "integer", lower=0, upper=5)) == [
        0,
        1,
        2,
        3,
        4,
        5,
        6,
    ]


def test_a_wide_integer_range_gets_16_bins_on_whole_numbers():
    edges = public_bins(SynthColumn("stay", "integer", lower=0, upper=60))

    assert len(edges) == 17
    assert edges[0] == 0 and edges[-1] == 61
    assert all(isinstance(e, int) for e in edges)
    widths = np.diff(edges)
    assert widths.max() - widths.min() <= 1
    assert code_labels(SynthColumn("stay", "integer", lower=0, upper=60))[:2] == ["0-2", "3-6"]


def test_integer_bounds_are_rounded_inwards():
    assert public_bins(SynthColumn("n", "integer", lower=0.5, upper=3.5)) == [1, 2, 3, 4]


def test_a_float_range_gets_16_equal_bins_with_the_upper_bound_in_the_last():
    column = SynthColumn("cost", "float", lower=0, upper=160)

    assert public_bins(column) == [10.0 * k for k in range(17)]
    assert code_labels(column)[-1] == "[150, 160]"
    frame = clamp(pl.DataFrame({"cost": [160.0, 0.0, 9.99, 10.0]}), [column])
    assert encode(frame, [column])["cost"].tolist() == [15, 0, 0, 1]


@pytest.mark.parametrize(
    ("column", "message"),
    [
        (SynthColumn("cost", "float"), "needs public lower and upper bounds"),
        (SynthColumn("cost", "float", lower=5, upper=1), "invalid bounds"),
        (SynthColumn("ward", "string"), "needs its public domain"),
        (SynthColumn("ward", "string", categories=()), "non-empty domain"),
        (SynthColumn("when", "date"), "needs its public domain"),
        (SynthColumn("blob", "bytes"), "unknown type"),
    ],
)
def test_a_column_the_policy_does_not_describe_is_refused(column, message):
    with pytest.raises(SynthesisError, match=message):
        check_columns([column])


def test_clamping_bounds_numbers_and_leaves_out_rows_outside_a_domain():
    columns = [
        SynthColumn("ward", "string", categories=("a", "b")),
        SynthColumn("stay", "integer", lower=0, upper=10),
        SynthColumn("cost", "float", lower=0, upper=1),
        SynthColumn("flag", "boolean"),
    ]
    frame = pl.DataFrame(
        {
            "ward": ["a", "b", "z", None, "a"],
            "stay": [-3, 99, 1, 1, None],
            "cost": [2.5, -1.0, 0.5, 0.5, 0.5],
            "flag": [True, False, True, True, True],
            "extra": [1, 2, 3, 4, 5],
        }
    )

    clamped = clamp(frame, columns)

    assert clamped.to_dicts() == [
        {"ward": "a", "stay": 0, "cost": 1.0, "flag": True},
        {"ward": "b", "stay": 10, "cost": 0.0, "flag": False},
    ]


@given(
    st.lists(st.integers(min_value=-5, max_value=70), min_size=1, max_size=50),
    st.lists(st.floats(min_value=-10, max_value=1e6, allow_nan=False), min_size=1, max_size=50),
    st.integers(min_value=0, max_value=2**32 - 1),
)
def test_values_drawn_back_lie_in_the_bin_they_came_from(stays, costs, seed):
    size = min(len(stays), len(costs))
    columns = [
        SynthColumn("stay", "integer", lower=0, upper=60),
        SynthColumn("cost", "float", lower=0, upper=200000),
    ]
    frame = clamp(pl.DataFrame({"stay": stays[:size], "cost": costs[:size]}), columns)
    codes = encode(frame, columns)

    drawn = decode(codes, columns, np.random.default_rng(seed))

    assert drawn.schema == pl.Schema({"stay": pl.Int64, "cost": pl.Float64})
    again = encode(clamp(drawn, columns), columns)
    assert np.array_equal(again["stay"], codes["stay"])
    assert np.array_equal(again["cost"], codes["cost"])
    assert drawn["stay"].is_between(0, 60).all() and drawn["cost"].is_between(0, 200000).all()

"""The DP method's calibration: what dp_cost reports is what OpenDP's maps give, and never more
than was asked for."""

from __future__ import annotations

import json
import math

import opendp.prelude as dp
import pytest

from dataplane.synthesis import SynthColumn, SynthesisError, dp_cost
from dataplane.synthesis.accounting import gaussian, noisy_max

dp.enable_features("contrib")


def categorical(count: int) -> list[SynthColumn]:
    return [SynthColumn(f"c{i}", "string", categories=("a", "b", "c")) for i in range(count)]


@pytest.mark.parametrize("columns", [1, 2, 3, 10])
@pytest.mark.parametrize(
    ("epsilon", "delta", "rows_per_unit"), [(1.0, 1e-6, 1), (0.1, 1e-9, 1), (3.0, 1e-5, 4)]
)
def test_the_reported_epsilon_and_delta_never_exceed_the_request(
    columns, epsilon, delta, rows_per_unit
):
    budget = dp_cost(
        categorical(columns), epsilon=epsilon, delta=delta, rows_per_unit=rows_per_unit
    )

    assert budget.epsilon <= epsilon
    assert budget.delta == delta
    # and the budget is used, not thrown away
    assert budget.epsilon > epsilon * (1 - 1e-6)


def test_the_cost_is_opendps_own_composition_of_the_mechanisms_that_run():
    rows_per_unit = 2
    budget = dp_cost(categorical(5), epsilon=1.0, delta=1e-6, rows_per_unit=rows_per_unit)
    one_way, selection, two_way = (budget.stage(s) for s in ("one-way", "selection", "two-way"))
    assert (one_way.count, selection.count, two_way.count) == (5, 4, 4)
    for stage in (one_way, two_way):
        assert stage.rho == gaussian(stage.scale).map(rows_per_unit)
    assert selection.rho == noisy_max(selection.scale).map(float(rows_per_unit))

    # An independent route through OpenDP: its non-adaptive composition of Gaussians on one
    # space, the noisy max standing in as the Gaussian of equal zCDP cost.
    assert math.isclose(selection.rho, gaussian(selection.scale).map(rows_per_unit), rel_tol=1e-12)
    mechanisms = [gaussian(s.scale) for s in budget.stages for _ in range(s.count)]
    composition = dp.c.make_composition(mechanisms)
    assert math.isclose(composition.map(rows_per_unit), budget.rho, rel_tol=1e-12)
    converted = dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(composition), 1e-6)
    epsilon, delta = converted.map(rows_per_unit)
    assert math.isclose(epsilon, budget.epsilon, rel_tol=1e-9)
    assert delta == budget.delta


def test_the_noise_scales_with_the_rows_each_unit_contributes():
    one = dp_cost(categorical(4), epsilon=1.0, delta=1e-6, rows_per_unit=1)
    three = dp_cost(categorical(4), epsilon=1.0, delta=1e-6, rows_per_unit=3)

    for a, b in zip(one.stages, three.stages, strict=True):
        assert math.isclose(b.scale, 3 * a.scale, rel_tol=1e-6)
    assert math.isclose(one.rho, three.rho, rel_tol=1e-9)


def test_two_columns_need_no_selection_and_one_column_no_pairs():
    assert [s.name for s in dp_cost(categorical(2), epsilon=1, delta=1e-6).stages] == [
        "one-way",
        "two-way",
    ]
    assert [s.name for s in dp_cost(categorical(1), epsilon=1, delta=1e-6).stages] == ["one-way"]


def test_the_budget_is_json_with_epsilon_and_delta_as_decimal_strings():
    document = json.loads(json.dumps(dp_cost(categorical(3), epsilon=0.5, delta=1e-7).as_dict()))

    assert float(document["epsilon"]) <= 0.5
    assert document["delta"] == "1E-7"
    assert [s["name"] for s in document["stages"]] == ["one-way", "selection", "two-way"]
    assert all(isinstance(s["scale"], float) for s in document["stages"])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"epsilon": 0.0, "delta": 1e-6}, "ε must be positive"),
        ({"epsilon": -1.0, "delta": 1e-6}, "ε must be positive"),
        ({"epsilon": 1.0, "delta": 0.0}, "δ must be in"),
        ({"epsilon": 1.0, "delta": 1.0}, "δ must be in"),
        ({"epsilon": 1.0, "delta": 1e-6, "rows_per_unit": 0}, "rows_per_unit"),
    ],
)
def test_a_bad_budget_is_refused_with_the_reason(arguments, message):
    with pytest.raises(SynthesisError, match=message):
        dp_cost(categorical(2), **arguments)


def test_a_numeric_column_without_bounds_is_refused():
    with pytest.raises(SynthesisError, match="needs public lower and upper bounds"):
        dp_cost([SynthColumn("cost", "float", lower=0.0)], epsilon=1.0, delta=1e-6)

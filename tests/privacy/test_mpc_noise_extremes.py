"""Noise drawn inside MPC is the discrete Laplace at every scale the planner can produce, and
the planner refuses the scales nothing could draw exactly.

Played as an analyst would: a tiny ε and sums with wide bounds drive the planner to a scale of
about 10^14, where the sampler with a fixed number of compared bits rounded P(noise ≠ 0) up to 1,
read that threshold as 0, and released the exact sums under a plan promising ±2.4·10^14.
"""

from __future__ import annotations

import math
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from django.utils import timezone

from dataplane.mpc import noise, sharing
from dataplane.privacy.calibration import MAX_DISCRETE_SCALE
from jobs.engines.mpc.parties import PartyOutput
from jobs.models import Room
from jobs.queries.services import plan_for, save_draft
from jobs.rooms.services import (
    contribute_dataset,
    create_room,
    invite_organization,
    respond_to_invitation,
)
from parties import services
from tests.engines.test_mpc_parties import credentials, run_all, specs  # noqa: F401

WIDE = 2 * 10**9  # L · bound of each sum: 2·10^9, as in the report
LEDGER_SQL = (
    "SELECT region, COUNT(*) AS n, SUM(a) AS a, SUM(b) AS b, SUM(c) AS c "
    "FROM charite.ledger GROUP BY region"
)


def _ledger_room(world, tmp_path: Path) -> Room:
    """Pharma's room with one EU dataset of three integer measures bounded by 2·10^9."""
    room = create_room(
        organization=world.pharma, slug="ledger", name="Ledger", purpose="Audit", by=world.bob
    )
    membership = invite_organization(
        room=room, organization=world.charite, acting_for=world.pharma, by=world.bob
    )
    respond_to_invitation(membership=membership, accept=True, by=world.alice)
    path = tmp_path / "ledger.csv"
    path.write_text(
        "account,region,a,b,c\n"
        + "".join(f"{i},{('north', 'south')[i % 2]},{i},{2 * i},{3 * i}\n" for i in range(50))
    )
    version = services.register_dataset(
        organization=world.charite,
        slug="ledger",
        name="Ledger",
        jurisdiction="EU",
        upload=path,
        filename=path.name,
        schema=[
            {"name": "account", "type": "integer", "role": "unit"},
            {"name": "region", "type": "string", "role": "dimension", "domain": ["north", "south"]},
            *(
                {"name": name, "type": "integer", "role": "measure", "lower": 0, "upper": WIDE}
                for name in "abc"
            ),
        ],
        by=world.alice,
    )
    services.update_policy(
        dataset=version.dataset,
        by=world.alice,
        allowed_dimensions=["region"],
        allowed_measures=["a", "b", "c"],
        allowed_aggregates=["count", "sum"],
        allowed_mechanisms=["mpc"],
        allowed_receivers=[world.pharma],
        max_epsilon_per_query=Decimal("1"),
        total_epsilon=Decimal("3"),
    )
    contribute_dataset(room=room, dataset=version.dataset, by=world.alice)
    return room


def _plan(world, room: Room, epsilon: str):
    draft = save_draft(
        room=room,
        acting_for=world.pharma,
        by=world.bob,
        receivers=[world.pharma],
        title="Ledger totals",
        purpose="Audit",
        sql=LEDGER_SQL,
        epsilon=Decimal(epsilon),
        requested_mechanism="mpc",
        expires_at=timezone.now() + timedelta(days=1),
    )
    return plan_for(draft)


@pytest.mark.django_db
def test_a_tiny_epsilon_on_wide_sums_plans_a_scale_the_sampler_draws_exactly(world, tmp_path):
    plan = _plan(world, _ledger_room(world, tmp_path), "0.0001")
    assert plan.ok, [c.message for c in plan.failed()]
    scale = plan.measurements["sum(charite.ledger.a)"].grid_scale
    assert scale == pytest.approx(8e13)
    cells = {c["alias"]: c for c in plan.as_dict()["cells"]}
    assert cells["a"]["accuracy95"] == pytest.approx(2.4e14, rel=0.01)
    assert noise.deviation_bound(scale) <= 2**-40
    assert "within" in cells["a"]["sampling"] and "total variation" in cells["a"]["sampling"]


@pytest.mark.django_db
def test_the_planner_refuses_a_scale_nothing_draws_exactly_and_says_why(world, tmp_path):
    plan = _plan(world, _ledger_room(world, tmp_path), "0.00000001")
    assert not plan.ok
    [check] = [c for c in plan.failed() if c.name == "noise"]
    assert "beyond 2^56" in check.message and "raise ε" in check.message
    assert plan.measurements["sum(charite.ledger.a)"].grid_scale > MAX_DISCRETE_SCALE


@pytest.mark.parametrize("scale", [1e14, 1e16, MAX_DISCRETE_SCALE])
def test_every_threshold_stays_inside_the_compared_bits(scale):
    bits = noise.geometric_bits(scale)
    precision = noise.precision_bits(scale, bits)
    thresholds = noise.thresholds(scale, bits, precision)
    assert all(0 < t < 2**precision for t in thresholds)
    # The fixed precision used before would have read P(noise ≠ 0) as 2^L: as 0.
    fixed = noise._PART_LOG2 - 1 + math.ceil(math.log2(bits + 1))
    assert noise.thresholds(scale, bits, fixed)[0] == 2**fixed


@pytest.mark.slow
def test_noise_drawn_by_the_parties_at_huge_scales_is_nonzero_and_of_its_scale(credentials):  # noqa: F811
    """Three real party processes draw 40 cells at each scale, on sums of zero: what they
    release is the noise. For |X| / s, nearly Exp(1) at these scales: every cell is above
    10^-6 (a false failure has probability 120 · 10^-6) and below 40 (e^-40 each), and each
    scale's mean lies in [0.3, 3] (Gamma(40, 1) outside it: below 10^-9)."""
    scales = [1e14, 1e16, MAX_DISCRETE_SCALE]
    cells = 40
    layout = {"groups": cells, "measures": [f"sum{i}" for i in range(len(scales))]}
    owners = [[0] * (cells * len(scales)) for _ in range(3)]

    outputs = run_all(specs(owners, layout, scales), timeout=240)

    assert all(isinstance(o, PartyOutput) for o in outputs), outputs
    released = np.array(
        sharing.recombine({i: o.output for i, o in enumerate(outputs)}), dtype=float
    )
    for position, scale in enumerate(scales):
        ratio = np.abs(released[position * cells : (position + 1) * cells]) / scale
        assert (ratio > 1e-6).all() and (ratio < 40).all(), (scale, ratio)
        assert 0.3 <= ratio.mean() <= 3, (scale, ratio.mean())

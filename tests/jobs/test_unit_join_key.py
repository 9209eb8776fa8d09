"""An owner whose data has one id column joins on it: the policy may list the privacy unit as a
join key, the planner accepts a join on it, and it still never reaches an output or a filter."""

from __future__ import annotations

from decimal import Decimal

import pytest

from dataplane.sql.plan import Output
from jobs.planning.planner import plan_query
from jobs.rooms.services import contribute_dataset
from parties import services
from parties.forms import PolicyForm
from parties.services import PolicyError

pytestmark = pytest.mark.django_db

ON_UNIT = "FROM charite.patients AS d JOIN usz.patients AS v ON d.patient_id = v.patient_id"


def allow_joining_on_the_unit(world, room, orgs):
    for org, owner in orgs:
        dataset = org.datasets.get(slug="patients")
        services.update_policy(dataset=dataset, by=owner, allowed_join_keys=["patient_id"])
        contribute_dataset(room=room, dataset=dataset, by=owner)


def plan(world, room, sql):
    return plan_query(
        room=room,
        sql=sql,
        epsilon=Decimal("1"),
        delta=Decimal(0),
        receivers=[world.pharma],
        output_kind=Output.AGGREGATE,
    )


def messages(result) -> str:
    return " ".join(check.message for check in result.failed())


def test_the_policy_page_offers_the_unit_as_a_join_key_and_never_as_anything_else(world, tmp_path):
    world.study(tmp_path)
    version = world.charite.datasets.get(slug="patients").versions.get()
    form = PolicyForm(columns=version.columns.all())
    assert [name for name, _ in form.fields["allowed_join_keys"].choices] == [
        "patient_id",
        "person_hash",
    ]
    for other in ("allowed_dimensions", "allowed_measures", "allowed_filters"):
        assert "patient_id" not in dict(form.fields[other].choices)
        with pytest.raises(PolicyError, match="'patient_id' is a unit column"):
            services.update_policy(
                dataset=version.dataset, by=world.alice, **{other: ["patient_id"]}
            )


def test_a_join_on_the_unit_plans_once_both_owners_allow_it(world, tmp_path):
    room = world.study(tmp_path)
    sql = f"SELECT d.age_band, COUNT(*) AS n {ON_UNIT} GROUP BY d.age_band"
    allow_joining_on_the_unit(world, room, [(world.charite, world.alice)])
    refused = plan(world, room, sql)
    assert not refused.ok
    assert "usz.patients's policy does not allow patient_id as a join key" in messages(refused)

    allow_joining_on_the_unit(world, room, [(world.zurich, world.carol)])
    accepted = plan(world, room, sql)
    assert accepted.ok, messages(accepted)


@pytest.mark.parametrize(
    "sql",
    [
        f"SELECT d.patient_id, COUNT(*) AS n {ON_UNIT} GROUP BY d.patient_id",
        f"SELECT d.age_band, COUNT(*) AS n {ON_UNIT} WHERE v.patient_id = '17' GROUP BY d.age_band",
        f"SELECT d.age_band, COUNT(*) AS n {ON_UNIT} GROUP BY d.age_band, v.patient_id",
    ],
)
def test_an_analyst_cannot_read_or_pick_out_the_unit_through_the_join(world, tmp_path, sql):
    room = world.study(tmp_path)
    allow_joining_on_the_unit(
        world, room, [(world.charite, world.alice), (world.zurich, world.carol)]
    )
    result = plan(world, room, sql)
    assert not result.ok
    assert "patient_id is the privacy unit of" in messages(result)
